"""A float64 reference of the `moe` dialect's semantics, independent of the
compiler (numpy only; run it with Debian's /usr/bin/python3).

    route(logits, routing, selection_bias=None, token_groups=None, residual=None)
        -> (ids [T,k] int64, weights [T,k])
    kept_assignments(ids, num_experts, capacity_factor, capacity) -> kept mask [T,k]
    expert_ffn(x, expert, gate, up, down, gate_bias, up_bias, down_bias) -> [N,H]
    layer(x, router, routing, expert, weights...) -> [T,H]
    dequantize(packed, scales, bits) -> [..., N, K] float64

`routing` is a dict with the #moe.routing parameters (k, scoring, renormalize,
temperature, scale, n_group, topk_group, capacity_factor, threshold,
selection, capacity, expert_groups) and
`expert` one with the #moe.expert parameters (kind, activation, limit, alpha,
beta); missing keys take the dialect's defaults. Everything is computed in
float64 whatever the input dtype.
"""

import math

import numpy as np

ROUTING_DEFAULTS = dict(scoring="softmax", renormalize=False, temperature=1.0,
                        scale=1.0, n_group=0, topk_group=0,
                        capacity_factor=0.0, threshold=0.0,
                        selection="token_choice", capacity=0, expert_groups=())
EXPERT_DEFAULTS = dict(limit=0.0, alpha=1.0, beta=0.0)


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _topk_indices(values, k, eligible=None):
    """Indices of the k largest values (ties: lower index first)."""
    order = sorted(range(len(values)), key=lambda e: (-values[e], e))
    if eligible is not None:
        order = [e for e in order if eligible[e]]
    return order[:k]


def route_expert_choice(logits, routing, selection_bias=None):
    """Expert choice (Zhou et al. 2022): expert e takes the C tokens with the
    best selection scores in its column; slot e of a token is e or -1."""
    r = dict(ROUTING_DEFAULTS, **routing)
    z = np.asarray(logits, dtype=np.float64)
    T, E = z.shape
    if r["scoring"] == "softmax":
        scores = _softmax(z / r["temperature"])
    elif r["scoring"] == "sigmoid":
        scores = _sigmoid(z)
    else:
        raise ValueError(r["scoring"])
    choice = scores
    if selection_bias is not None:
        choice = scores + np.asarray(selection_bias, np.float64)
    if r["capacity"] > 0:
        capacity = r["capacity"]
    else:
        capacity = math.ceil(r["capacity_factor"] * T / E)
    capacity = min(capacity, T)
    ids = np.full((T, E), -1, dtype=np.int64)
    weights = np.zeros((T, E))
    for e in range(E):
        for t in _topk_indices(choice[:, e], capacity):
            ids[t, e] = e
            weights[t, e] = scores[t, e] * r["scale"]
    return ids, weights


def route(logits, routing, selection_bias=None, token_groups=None, residual=None):
    """Token-choice routing (or expert choice, see route_expert_choice).
    `residual` [T,E] is a gating residual added to the logits; with
    `expert_groups`, `token_groups` [T] restricts each token's choice to the
    experts of its group (a group id out of range: no expert)."""
    r = dict(ROUTING_DEFAULTS, **routing)
    if residual is not None:
        logits = np.asarray(logits, np.float64) + np.asarray(residual, np.float64)
    if r["selection"] == "expert_choice":
        return route_expert_choice(logits, routing, selection_bias)
    z = np.asarray(logits, dtype=np.float64)
    T, E = z.shape
    k = r["k"]
    bias = np.zeros(E) if selection_bias is None else np.asarray(selection_bias, np.float64)
    if r["scoring"] == "softmax":
        scores = _softmax(z / r["temperature"])
    elif r["scoring"] == "sigmoid":
        scores = _sigmoid(z)
    elif r["scoring"] == "topk_softmax":
        scores = z / r["temperature"]
    else:
        raise ValueError(r["scoring"])
    choice = scores + bias

    ids = np.full((T, k), -1, dtype=np.int64)
    weights = np.zeros((T, k))
    for t in range(T):
        eligible = None
        if r["n_group"] > 0:
            size = E // r["n_group"]
            group_scores = []
            for g in range(r["n_group"]):
                best = sorted(choice[t, g * size:(g + 1) * size], reverse=True)
                group_scores.append(sum(best[:min(2, size)]))
            kept = _topk_indices(group_scores, r["topk_group"])
            eligible = [(e // size) in kept for e in range(E)]
        if r["expert_groups"]:
            g = int(token_groups[t])
            starts = np.concatenate([[0], np.cumsum(r["expert_groups"])])
            if not 0 <= g < len(r["expert_groups"]):
                continue  # routed nowhere: ids -1, weights 0
            eligible = [starts[g] <= e < starts[g + 1] for e in range(E)]
        chosen = _topk_indices(choice[t], k, eligible)
        if r["threshold"] > 0.0:
            taken, total = [], 0.0
            for e in chosen:
                taken.append(e)
                total += scores[t, e]
                if total >= r["threshold"]:
                    break
            chosen = taken
        w = scores[t, chosen]
        if r["scoring"] == "topk_softmax":
            w = _softmax(w)
        if r["renormalize"]:
            w = w / w.sum()
        w = w * r["scale"]
        ids[t, :len(chosen)] = chosen
        weights[t, :len(chosen)] = w
    return ids, weights


def kept_assignments(ids, num_experts, capacity_factor, capacity=0):
    """Which assignments survive the expert capacity (first in token order):
    a fixed `capacity`, else ceil(capacity_factor * T * k / E)."""
    T, k = ids.shape
    kept = ids >= 0
    if capacity <= 0 and capacity_factor <= 0.0:
        return kept
    if capacity <= 0:
        capacity = math.ceil(capacity_factor * T * k / num_experts)
    used = [0] * num_experts
    for t in range(T):
        for i in range(k):
            e = ids[t, i]
            if e < 0:
                continue
            if used[e] < capacity:
                used[e] += 1
            else:
                kept[t, i] = False
    return kept


def _activation(a, name, alpha=1.0):
    if name == "silu":
        return a * _sigmoid(alpha * a)
    if name == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * a * (1.0 + erf(a / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a ** 3)))
    if name == "relu":
        return np.maximum(a, 0.0)
    if name == "identity":
        return a
    raise ValueError(name)


def expert_ffn(x, expert, gate, up, down, gate_bias=None, up_bias=None, down_bias=None):
    """One FFN expert on rows x [N,H] with weights [H,F] / [F,H]."""
    ex = dict(EXPERT_DEFAULTS, **expert)
    f64 = lambda a: None if a is None else np.asarray(a, np.float64)
    x, gate, up, down = f64(x), f64(gate), f64(up), f64(down)
    gate_bias, up_bias, down_bias = f64(gate_bias), f64(up_bias), f64(down_bias)
    u = x @ up + (0.0 if up_bias is None else up_bias)
    if ex["kind"] == "gated":
        g = x @ gate + (0.0 if gate_bias is None else gate_bias)
        if ex["limit"] > 0.0:
            g = np.minimum(g, ex["limit"])
            u = np.clip(u, -ex["limit"], ex["limit"])
        h = _activation(g, ex["activation"], ex["alpha"]) * (u + ex["beta"])
    else:
        h = _activation(u, ex["activation"])
    return h @ down + (0.0 if down_bias is None else down_bias)


def layer(x, router, routing, expert, gate, up, down, gate_bias=None, up_bias=None,
          down_bias=None, selection_bias=None, shared_gate=None, shared_up=None,
          shared_down=None, shared_scale=None):
    """moe.layer: route, run each token's chosen experts, mix, add shared."""
    x = np.asarray(x, np.float64)
    E = router.shape[1]
    ids, weights = route(x @ np.asarray(router, np.float64), routing, selection_bias)
    r = dict(ROUTING_DEFAULTS, **routing)
    # Expert choice keeps C tokens per expert in the routing itself.
    token_choice = r["selection"] != "expert_choice"
    kept = kept_assignments(ids, E, r["capacity_factor"] if token_choice else 0.0,
                            r["capacity"] if token_choice else 0)
    out = np.zeros_like(x)
    pick = lambda a, e: None if a is None else a[e]
    for e in range(E):
        rows = [(t, i) for t in range(x.shape[0]) for i in range(ids.shape[1])
                if ids[t, i] == e and kept[t, i]]
        if not rows:
            continue
        tokens = [t for t, _ in rows]
        y = expert_ffn(x[tokens], expert, pick(gate, e), up[e], down[e],
                       pick(gate_bias, e), pick(up_bias, e), pick(down_bias, e))
        for (t, i), row in zip(rows, y):
            out[t] += weights[t, i] * row
    if shared_up is not None:
        s = expert_ffn(x, expert, shared_gate, shared_up, shared_down)
        if shared_scale is not None:
            s = s * _sigmoid(x @ np.asarray(shared_scale, np.float64))[:, None]
        out += s
    return out


def dequantize(packed, scales, bits, zero_points=None):
    """Quantized weights in ONNX Runtime's QMoE layout to float64: `packed`
    [..., N, K * bits / 8] bytes of unsigned codes (4-bit codes two per byte,
    low nibble first), `scales` [..., N, K / B] one per block of B reduction
    values, zero points `zero_points` (unpacked, like the scales) or the
    symmetric 2^(bits - 1): W = scale * (code - zp)."""
    packed = np.asarray(packed).view(np.uint8).astype(np.int64)
    if bits == 8:
        codes = packed
    elif bits == 4:
        codes = np.stack([packed & 0xF, packed >> 4], axis=-1)
        codes = codes.reshape(packed.shape[:-1] + (2 * packed.shape[-1],))
    else:
        raise ValueError(bits)
    scales = np.asarray(scales, np.float64)
    block = codes.shape[-1] // scales.shape[-1]
    zp = (1 << (bits - 1)) if zero_points is None else np.repeat(
        np.asarray(zero_points, np.float64), block, axis=-1)
    return np.repeat(scales, block, axis=-1) * (codes - zp)


def check_case_output(directory, label=None, tol=1e-5):
    """Compares DIR/out.npy with the float64 DIR/expected.npy of a generated
    case (DIR/case.json: seed, tokens and, unless `label` is given, case),
    prints one line with the relative L2 error and returns the exit status."""
    import json
    import os
    with open(os.path.join(directory, "case.json")) as f:
        info = json.load(f)
    y = np.load(os.path.join(directory, "out.npy")).astype(np.float64)
    ref = np.load(os.path.join(directory, "expected.npy"))
    ok = y.shape == ref.shape
    err = np.linalg.norm(y - ref) / np.linalg.norm(ref) if ok else float("inf")
    ok = ok and err <= tol
    print("%s (seed %d, T=%d): relative L2 error %.3e %s %g"
          % (label or info["case"], info["seed"], info["tokens"], err,
             "<=" if ok else ">", tol))
    return 0 if ok else 1
