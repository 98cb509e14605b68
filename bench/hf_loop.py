"""The PyTorch eager peer of the benchmarks: transformers' MixtralSparseMoeBlock.forward
(router, softmax, top-k, renormalize, one_hot mask, per-expert torch.where, index_add_),
plus a DeepSeek-style shared MLP. Used by bench/moe_bench.py (CPU) and bench/gpu/bench.py."""


def mixtral_block(torch, router, w1, w3, w2, k, shared=None):
    """The layer as a function of hidden_states [T, H]. Weights in nn.Linear layout
    ([out, in]), as a HuggingFace checkpoint holds them: router [E, H], w1 (gate) and w3 (up)
    lists of [F, H], w2 (down) a list of [H, F]; shared: (gate, up, down) or None."""
    Fn = torch.nn.functional
    E = len(w1)

    def layer(hidden_states):
        router_logits = Fn.linear(hidden_states, router)
        routing_weights = Fn.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected_experts = torch.topk(routing_weights, k, dim=-1)
        routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(hidden_states.dtype)
        final = torch.zeros_like(hidden_states)
        expert_mask = Fn.one_hot(selected_experts, num_classes=E).permute(2, 1, 0)
        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_idx in expert_hit:
            e = int(expert_idx)
            idx, top_x = torch.where(expert_mask[e])
            current = hidden_states[top_x]
            h = Fn.silu(Fn.linear(current, w1[e])) * Fn.linear(current, w3[e])
            out = Fn.linear(h, w2[e]) * routing_weights[top_x, idx, None]
            final.index_add_(0, top_x, out)
        if shared is not None:
            g, u, d = shared
            final = final + Fn.linear(Fn.silu(Fn.linear(hidden_states, g))
                                      * Fn.linear(hidden_states, u), d)
        return final
    return layer
