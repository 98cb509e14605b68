"""Placed moe.experts (an expert cache's slot buffers, docs/ExpertCache.md)
through convert-moe-to-gpu's host code and kernels on the interpreter of
test/lib/kernel_interp.py, against the float64 reference of ffn_interp.py.

    placement_interp.py MOE_OPT

The runtime hooks are a small cache written here: slots are handed out from
the last one down (so a slot is never the expert's own index), copying the
expert's matrices into the slot buffers, and `acquire` returns -1 once every
slot is held, so the host code must run the layer in batches. The checks:
every row right (the weights came from the right slot), the batches the
slot count implies, each acquired expert released, nothing acquired twice
in a batch and no slot reused while held. Prints one line per case and
exits non-zero if any fails.
"""

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ffn_interp as fi  # noqa: E402
import kernel_interp as ki  # noqa: E402

LAYER = 5


class Cache:
    """The runtime side of one placed layer."""

    def __init__(self, full, slot_buffers, slots):
        self.full = full  # matrix name -> [E, ...] (rounded values)
        self.buffers = slot_buffers  # matrix name -> Memref [S, ...]
        self.slots = slots
        self.slot_of, self.users = {}, [0] * slots
        self.expert_in = [-1] * slots
        self.prefetched, self.batches, self.errors = [], 0, []
        self.held = set()

    def prefetch(self, layer, e):
        self.prefetched.append(int(e))

    def acquire(self, layer, e):
        e = int(e)
        if layer != LAYER:
            self.errors.append("acquire of layer %d" % layer)
        if not self.held:
            self.batches += 1
        if e in self.held:
            self.errors.append("expert %d acquired twice" % e)
        s = self.slot_of.get(e)
        if s is None:
            free = [s for s in range(self.slots - 1, -1, -1) if self.users[s] == 0]
            if not free:
                return -1
            s = free[0]
            if self.expert_in[s] >= 0:
                del self.slot_of[self.expert_in[s]]
            self.expert_in[s], self.slot_of[e] = e, s
            for name, full in self.full.items():
                self.buffers[name].array[s] = full[e]
        self.users[s] += 1
        self.held.add(e)
        return s

    def release(self, layer, e):
        e = int(e)
        if e not in self.held:
            self.errors.append("expert %d released, not held" % e)
            return
        self.held.discard(e)
        self.users[self.slot_of[e]] -= 1

    def hooks(self):
        return {"moe_rt_expert_prefetch": self.prefetch,
                "moe_rt_expert_acquire": self.acquire,
                "moe_rt_expert_release": self.release}


def placed(dtype, H, F, counts, slots, expert, biases=False, seed=0, want=None):
    """moe.experts over len(counts) experts with counts[e] rows each, its
    matrices in `slots` slots; `want` names a kernel the host must launch."""
    rng = np.random.default_rng(seed)
    rnd = fi.rounder(dtype)
    E = len(counts)
    offsets = np.zeros(E + 1, np.int32)
    offsets[1:] = np.cumsum(counts)
    R = int(offsets[-1])
    T = max(1, R // 2 + 1)
    tokens = rng.integers(0, T, R).astype(np.int32)
    tokens[rng.random(R) < 0.2] = -1
    gated = expert["kind"] == "gated"
    x = rnd(rng.standard_normal((T, H)))
    full = {"up": rnd(rng.standard_normal((E, H, F)) / math.sqrt(H)),
            "down": rnd(rng.standard_normal((E, F, H)) / math.sqrt(F))}
    if gated:
        full["gate"] = rnd(rng.standard_normal((E, H, F)) / math.sqrt(H))
    db = rnd(rng.standard_normal((E, H))) if biases else None

    t = lambda *shape: "tensor<%sx%s>" % ("x".join(map(str, shape)), dtype)
    act = "tensor<?x%dx%s>" % (H, dtype)
    operands = ["gate(%%wg : %s)" % t("?", H, F)] if gated else []
    operands += ["up(%%wu : %s)" % t("?", H, F), "down(%%wd : %s)" % t("?", F, H)]
    if biases:
        operands.append("down_bias(%%bd : %s)" % t(E, H))
    mlir = """func.func @f(%%x: %(act)s, %%tok: tensor<?xi32>, %%off: tensor<%(n)dxi32>, %%dest: %(act)s,
    %%wg: %(w)s, %%wu: %(w)s, %%wd: %(d)s, %%bd: %(bd)s) -> %(act)s {
  %%y = moe.experts %%x, %%tok, %%off into %%dest %(ops)s
      {expert = #moe.expert<%(ex)s>,
       placement = #moe.placement<layer = %(layer)d, experts = %(E)d, slots = %(S)d>}
      : (%(act)s, tensor<?xi32>, tensor<%(n)dxi32>, %(act)s) -> %(act)s
  return %%y : %(act)s
}
""" % dict(act=act, n=E + 1, w=t("?", H, F), d=t("?", F, H), bd=t(E, H),
           ops=" ".join(operands), ex=fi.attr(expert), layer=LAYER, E=E, S=slots)
    module = ki.parse_module(fi.lower(mlir, module=True))
    # Slot buffers start as NaN: a read of a slot never filled shows.
    buffers = {name: fi.fresh((slots,) + a.shape[1:], dtype, np.nan) for name, a in full.items()}
    cache = Cache(full, buffers, slots)
    sentinel = 1234.0
    inputs = fi.host_inputs(dtype, [x, tokens, offsets, np.full((R, H), sentinel)])
    inputs += [buffers.get("gate", fi.fresh((slots, H, F), dtype, np.nan)), buffers["up"],
               buffers["down"], db if biases else np.zeros((E, H))]
    inputs[-1] = inputs[-1].astype(fi.NPDT[dtype]) if dtype != "bf16" else inputs[-1]
    log = []
    y = ki.run_host(module, inputs, func_name="f", log=log, hooks=cache.hooks())[0].astype(np.float64)
    with_rows = [e for e in range(E) if counts[e]]
    batches = -(-len(with_rows) // slots)
    if cache.errors:
        return False, "; ".join(cache.errors)
    if cache.held:
        return False, "experts %s never released" % sorted(cache.held)
    if cache.prefetched != with_rows:
        return False, "prefetched %s, not %s" % (cache.prefetched, with_rows)
    if cache.batches != batches:
        return False, "%d batches, not %d" % (cache.batches, batches)
    if want and not fi.launched(log, want):
        return False, "the host did not launch %s" % want
    mma = dtype in ("f16", "bf16")
    ok, text = fi.compare(y, dtype, x, tokens, offsets, 0, E, E, full.get("gate"), full["up"],
                          full["down"], None, None, db, expert, float(rnd(sentinel)), mma)
    return ok, "%d batches, %s" % (cache.batches, text)


SWIGLU = dict(kind="gated", activation="silu")
CASES = [
    # Decode sizes: the skinny GEMMs (and their reduction) in batches.
    ("f32 skinny, 8 experts in 3 slots", lambda: placed(
        "f32", 32, 48, [2, 1, 0, 3, 1, 0, 2, 1], 3, SWIGLU, biases=True, seed=1,
        want="moe_experts_up_skinny")),
    ("f32 skinny, every expert in its slot", lambda: placed(
        "f32", 32, 48, [2, 1, 0, 3, 1, 0, 2, 1], 8, SWIGLU, seed=2,
        want="moe_experts_down_reduce")),
    ("bf16 skinny FFN experts, 1 slot", lambda: placed(
        "bf16", 24, 40, [1, 2, 1, 0], 1, dict(kind="ffn", activation="gelu"), seed=3,
        want="moe_experts_up_skinny")),
    # Prefill sizes: the tiled GEMMs (SIMT; tensor cores for f16).
    ("f32 tiled, 4 experts in 3 slots", lambda: placed(
        "f32", 16, 24, [40, 0, 50, 30, 45], 3, SWIGLU, seed=4, want="moe_experts_up")),
    ("f16 tiled on tensor cores, 4 experts in 2 slots", lambda: placed(
        "f16", 16, 24, [30, 20, 40, 25], 2, SWIGLU, biases=True, seed=5,
        want="moe_experts_down")),
]


if __name__ == "__main__":
    fi.run_cases(CASES, "placement_interp")
