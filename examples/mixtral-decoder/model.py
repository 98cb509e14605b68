"""A small Mixtral-style decoder in PyTorch, written the way Hugging Face
transformers writes Mixtral (modeling_mixtral.py), with small dimensions.

    token embedding
    2 x [ x + attention(RMSNorm(x)),  x + MoE(RMSNorm(x)) ]
    RMSNorm, LM head -> logits [batch, seq, vocab]

attention: causal self-attention with rotary position embeddings (RoPE: cos/sin
tables gathered at the position ids, rotate_half) and grouped-query attention
(fewer key/value heads than query heads, repeat_kv).
MoE: MixtralSparseMoeBlock: router Linear, softmax, top-2 of 8, renormalized,
one_hot expert mask, a Python loop over the experts with torch.where and
index_add_; each expert is a SwiGLU MLP w2(silu(w1(x)) * w3(x)).
"""

import torch
import torch.nn.functional as F
from torch import nn

CONFIG = dict(vocab=128, hidden=64, heads=4, kv_heads=2, ffn=96, experts=8,
              top_k=2, layers=2, max_positions=64, rope_theta=10000.0)


class RMSNorm(nn.Module):
    """MixtralRMSNorm."""

    def __init__(self, hidden, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for positions 0..max_positions-1 (as MixtralRotaryEmbedding
    caches them), gathered at the position ids."""

    def __init__(self, head_dim, max_positions, theta):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).double()
                                    / head_dim))
        t = torch.arange(max_positions).double()
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos().float(), persistent=False)
        self.register_buffer("sin_cached", emb.sin().float(), persistent=False)

    def forward(self, position_ids):
        # [batch, seq, head_dim], broadcast over the heads.
        cos = self.cos_cached[position_ids].unsqueeze(1)
        sin = self.sin_cached[position_ids].unsqueeze(1)
        return cos, sin


def rotate_half(x, head_dim):
    # transformers slices at x.shape[-1] // 2; traced, that end is a shape
    # computation (Shape, Gather, Div), and the importer's Slice wants
    # constant ends. The head size is known, so slice at head_dim // 2.
    x1 = x[..., : head_dim // 2]
    x2 = x[..., head_dim // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, head_dim):
    return (q * cos + rotate_half(q, head_dim) * sin,
            k * cos + rotate_half(k, head_dim) * sin)


def repeat_kv(hidden_states, kv_index):
    """[b, kv_heads, s, d] -> [b, heads, s, d]: query head h reads key/value
    head kv_index[h] = h // n_rep. transformers writes this as an expand of
    [b, kv_heads, 1, s, d] to n_rep and a reshape; traced, the expand's shape
    goes through Where/Equal/ConstantOfShape, which the importer does not
    follow, so the heads are gathered with a constant index instead: the same
    values."""
    return hidden_states.index_select(1, kv_index)


class Attention(nn.Module):
    """MixtralAttention (eager), without the KV cache and dropout."""

    def __init__(self, hidden, heads, kv_heads, max_positions, theta):
        super().__init__()
        self.heads = heads
        self.kv_heads = kv_heads
        self.head_dim = hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        self.rotary_emb = RotaryEmbedding(self.head_dim, max_positions, theta)
        self.register_buffer(
            "kv_index", torch.arange(heads) // (heads // kv_heads),
            persistent=False)

    def forward(self, x, position_ids):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads,
                                self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads,
                                self.head_dim).transpose(1, 2)
        cos, sin = self.rotary_emb(position_ids)
        q, k = apply_rotary_pos_emb(q, k, cos, sin, self.head_dim)
        k = repeat_kv(k, self.kv_index)
        v = repeat_kv(v, self.kv_index)
        scores = q @ k.transpose(2, 3) / (self.head_dim ** 0.5)
        causal = torch.ones(s, s, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        probs = F.softmax(scores, dim=-1).to(q.dtype)
        out = (probs @ v).transpose(1, 2).reshape(b, s, -1)
        return self.o_proj(out)


class MixtralBlockSparseTop2MLP(nn.Module):
    """One SwiGLU expert."""

    def __init__(self, hidden, ffn):
        super().__init__()
        self.w1 = nn.Linear(hidden, ffn, bias=False)
        self.w2 = nn.Linear(ffn, hidden, bias=False)
        self.w3 = nn.Linear(hidden, ffn, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, hidden_states):
        current = self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states)
        return self.w2(current)


class MixtralSparseMoeBlock(nn.Module):
    """transformers' MixtralSparseMoeBlock.forward (inference: no jitter noise;
    the router logits are not returned)."""

    def __init__(self, hidden, ffn, num_experts, top_k):
        super().__init__()
        self.hidden_dim = hidden
        self.num_experts = num_experts
        self.top_k = top_k
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleList(
            [MixtralBlockSparseTop2MLP(hidden, ffn)
             for _ in range(num_experts)])

    def forward(self, hidden_states):
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        hidden_states = hidden_states.view(-1, hidden_dim)
        router_logits = self.gate(hidden_states)
        # transformers passes dtype=torch.float here and in the attention's
        # softmax, an upcast for half-precision models: a no-op for this
        # float32 model, but it would run the float64 copy (the reference)
        # partly in float32, so it is left out.
        routing_weights = F.softmax(router_logits, dim=1)
        routing_weights, selected_experts = torch.topk(
            routing_weights, self.top_k, dim=-1)
        routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(hidden_states.dtype)
        final_hidden_states = torch.zeros(
            (batch_size * sequence_length, hidden_dim),
            dtype=hidden_states.dtype, device=hidden_states.device)
        expert_mask = F.one_hot(
            selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        for expert_idx in range(self.num_experts):
            expert_layer = self.experts[expert_idx]
            idx, top_x = torch.where(expert_mask[expert_idx])
            current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)
            current_hidden_states = (expert_layer(current_state)
                                     * routing_weights[top_x, idx, None])
            final_hidden_states.index_add_(
                0, top_x, current_hidden_states.to(hidden_states.dtype))
        return final_hidden_states.reshape(batch_size, sequence_length,
                                           hidden_dim)


class MixtralDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden"])
        self.self_attn = Attention(c["hidden"], c["heads"], c["kv_heads"],
                                   c["max_positions"], c["rope_theta"])
        self.post_attention_layernorm = RMSNorm(c["hidden"])
        self.block_sparse_moe = MixtralSparseMoeBlock(
            c["hidden"], c["ffn"], c["experts"], c["top_k"])

    def forward(self, x, position_ids):
        x = x + self.self_attn(self.input_layernorm(x), position_ids)
        return x + self.block_sparse_moe(self.post_attention_layernorm(x))


class MixtralDecoder(nn.Module):
    """Token ids and their positions, both int64 [batch, seq] -> logits
    [batch, seq, vocab]. The positions are an input, as in transformers'
    MixtralModel.forward(input_ids, position_ids=...)."""

    def __init__(self, c=CONFIG):
        super().__init__()
        self.config = dict(c)
        self.embed_tokens = nn.Embedding(c["vocab"], c["hidden"])
        self.layers = nn.ModuleList(
            [MixtralDecoderLayer(c) for _ in range(c["layers"])])
        self.norm = RMSNorm(c["hidden"])
        self.lm_head = nn.Linear(c["hidden"], c["vocab"], bias=False)

    def forward(self, input_ids, position_ids):
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, position_ids)
        return self.lm_head(self.norm(x))


def randomize(model, generator):
    """Draws every parameter: N(0, 1/fan_in) for the linear layers, N(0, 1)
    for the embedding, 1 + N(0, 0.1) for the RMSNorm weights (so they are not
    all ones)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            elif name == "embed_tokens.weight":
                p.copy_(torch.randn(p.shape, generator=generator))
            else:
                p.copy_(torch.randn(p.shape, generator=generator)
                        / p.shape[-1] ** 0.5)
