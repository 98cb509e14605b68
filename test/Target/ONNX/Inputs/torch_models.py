"""Small PyTorch MoE models exported with torch.onnx.export (opset 17), their
random inputs and PyTorch's own outputs (float32, and float64 from a float64
copy of the same module).

Usage: torch_models.py gen MODEL DIR [SHAPE] [--bf16 | --f16-reference]
                                       writes DIR/model.onnx, DIR/in<i>.npy
                                       (one per input: x, and ids for hash
                                       and moma),
                                       DIR/ref<i>.npy (PyTorch float32) and
                                       DIR/ref64_<i>.npy (PyTorch float64);
                                       the inputs are SHAPE (e.g. 1x1x16)
                                       if given; with --bf16 the module is
                                       exported in bfloat16 (its float
                                       inputs are bf16 bits as uint16, the
                                       .npy form moe-run reads; ref0 is
                                       PyTorch's bf16 output in float32,
                                       ref64 the float64 module of the same
                                       bf16 weights); with --f16-reference
                                       the export is f32 but ref64 is the
                                       float64 module of its weights and
                                       inputs rounded to f16 (the reference
                                       of Inputs/onnx_to_f16.py's rewrite)
       torch_models.py check DIR [TOL] compares DIR/out<i>.npy with both
                                       references (relative L2 <= TOL,
                                       default 1e-5; a uint16 output is
                                       bf16 bits)
       torch_models.py list            prints the model names

Models:
  mixtral        HF Mixtral's MixtralSparseMoeBlock (router Linear, softmax,
                 topk, renormalize, one_hot mask, loop over experts with
                 torch.where and index_add_), SwiGLU experts
  mixtral_3d     the same on [B, S, H] with a dynamic token axis
  mixtral_hit    the same block with transformers 4.52+'s loop over the
                 experts hit (expert_hit = nonzero of the mask's sums)
  mixtral_relu   Mixtral's block with ReLU FFN experts with biases
                 (wo(relu(wi(x))))
  mixtral_gelu   the same with GELU (erf) FFN experts with biases
  mixtral_gelu_tanh  the same with tanh-approximated GELU
  gptoss_router_loop  GPT-OSS's router (Linear with a bias, top-k of the
                 logits, softmax over the chosen) in Mixtral's loop, SwiGLU
                 experts with biases
  gptoss         transformers' GptOssMLP: that router, and GptOssExperts'
                 batched branch (x repeated E times, bmm with the fused
                 interleaved gate_up_proj and biases, clamped SwiGLU with
                 alpha 1.702 and up + 1, bmm down_proj, weighted by the
                 scattered [T, E] scores, summed over the experts) on
                 [B, S, H]; limit 0.6
  mixtral_v5     transformers 5's MixtralSparseMoeBlock (router and
                 MixtralExperts: stacked gate_up_proj/down_proj, a loop over
                 the experts hit, F.linear at the id, chunk) on [B, S, H]
  gptoss_cpu     GptOssMLP with GptOssExperts' CPU branch (transformers
                 4.57): a loop over the experts hit, each expert's weights
                 indexed by its id, weights from the [T, E] scores
  gptoss_cpu_partial  the same traced on one token (2 of 4 experts hit)
  gptoss_clamp_near_miss  the same with the up projection clamped to
                 [-0.6, 1.2] (not raised)
  capacity_einsum  top-1 with a capacity in GShard's einsum form (fairseq's
                 top1gating, experts as batched einsums), 10 tokens, capacity
                 2 per expert; static token count
  capacity_einsum_dynamic  the same with a dynamic token axis
  mixtral_temperature  Mixtral's block with a softmax temperature of 0.5,
                 not renormalized
  mixtral_sigmoid  Mixtral's block with sigmoid router scores (top-k of
                 sigmoid(logits), renormalized)
  deepseek_v3    DeepSeek-V3's routing without the group limit: top-k of
                 sigmoid scores + a selection bias, weights gathered from
                 the scores, renormalized, times 2.5; Mixtral's expert loop
  qwen_norenorm  Mixtral's block without renormalization (OLMoE/Qwen)
  dense          every expert on every token, masked by the top-k weights
                 scattered into a [T, E] matrix
  moe_plus_plus  Mixtral's loop over MoE++'s experts: 4 SwiGLU, then a zero,
                 a copy and a constant expert (a1 x + a2 v, (a1, a2) =
                 softmax(Wc x))
  gating_residual  two Mixtral layers, the second's router logits plus a
                 learned map of the first's (MoE++'s gating residual)
  top_p          top-p routing (p = 0.6): TopK over all experts, an expert
                 kept while the probability before it sums to less than p
                 (CumSum), the dense form's mixing matrix
  top_p_renorm   the same with the kept probabilities renormalized
  dense_shared   dense plus a shared expert scaled by sigmoid(x·ws) (Qwen-MoE)
  expert_choice  expert-choice routing: TopK of the transposed router softmax
                 (each expert's best `capacity` tokens), experts on the
                 gathered rows scaled by their probabilities, index_add
  expert_choice_factor  the same with the capacity min(ceil(T * 2 / E), T)
  expert_choice_factor_offset  capacity min(ceil(T / E) + 1, T) (not raised)
  expert_choice_unweighted  the same without the scaling (not raised)
  hash           hash layers: each token's expert is hash_table[input_ids]
                 (a constant table), weight 1, Mixtral's expert loop on
                 torch.where(selected == e); inputs x and ids
  hash_offset    the same with table entries 1..E (entry E: no expert)
  hash_scaled    the expert outputs scaled by 0.5 (not raised)
  moma           modality-aware routing (MoMa) with one router: logits
                 masked to -inf outside the token's group of experts
                 ([3, 2]), softmax, top-2 renormalized, Mixtral's loop;
                 inputs x and the modality ids
  moma_norenorm  the same without renormalization (not raised)
  moma_routers   MoMa with one router per modality: each modality's tokens
                 (torch.where) through their own Mixtral block, written back
                 with index_copy
  switch         Switch top-1: max of the router softmax, argmax, experts by
                 one-hot einsum, ReLU FFN experts
  switch_hf      transformers' SwitchTransformersSparseMLP (top-1 router, a
                 capacity of 3 per sequence, tokens past it passed through
                 scaled by their probability, experts by boolean-mask
                 indexing in a loop over the experts hit) on [1, S, H]
  switch_hf_batch  the same on [B, S, H] (a capacity per sequence: not
                 raised)
  decoder        a tiny decoder LM: embedding, RMSNorm, causal attention,
                 two Mixtral MoE layers, LM head
  near_miss      looks like Mixtral's block but routes on softmax(logits) * 2
                 (not raised; compiled through the generic path)
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17


# --- Expert MLPs ----------------------------------------------------------------


class SwiGLUExpert(nn.Module):
    """HF MixtralBlockSparseTop2MLP (with biases: `bias=True`)."""

    def __init__(self, hidden, ffn, bias=False):
        super().__init__()
        self.w1 = nn.Linear(hidden, ffn, bias=bias)
        self.w2 = nn.Linear(ffn, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, ffn, bias=bias)
        self.act_fn = nn.SiLU()

    def forward(self, hidden_states):
        current = self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states)
        return self.w2(current)


class ReluExpert(nn.Module):
    """Switch Transformer's FFN (wi, ReLU, wo) with biases."""

    def __init__(self, hidden, ffn):
        super().__init__()
        self.wi = nn.Linear(hidden, ffn)
        self.wo = nn.Linear(ffn, hidden)

    def forward(self, x):
        return self.wo(F.relu(self.wi(x)))


class GeluExpert(nn.Module):
    """A GELU FFN with biases (fc1, exact GELU, fc2)."""

    approximate = "none"

    def __init__(self, hidden, ffn):
        super().__init__()
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class GeluTanhExpert(GeluExpert):
    """The same with the tanh approximation of GELU (GPT-2's)."""

    approximate = "tanh"


class ZeroExpert(nn.Module):
    """MoE++'s zero expert: contributes nothing."""

    def __init__(self, hidden, ffn):
        super().__init__()

    def forward(self, x):
        return torch.zeros_like(x)


class CopyExpert(nn.Module):
    """MoE++'s copy expert: the token itself."""

    def __init__(self, hidden, ffn):
        super().__init__()

    def forward(self, x):
        return x


class ConstantExpert(nn.Module):
    """MoE++'s constant expert: a1 * x + a2 * v, (a1, a2) = softmax(Wc x)."""

    def __init__(self, hidden, ffn):
        super().__init__()
        self.wc = nn.Linear(hidden, 2, bias=False)
        self.v = nn.Parameter(torch.randn(hidden))

    def forward(self, x):
        a = F.softmax(self.wc(x), dim=-1)
        return a[:, 0:1] * x + a[:, 1:2] * self.v


def moe_plus_plus_expert(index, hidden, ffn):
    """MoE++'s layer: 4 SwiGLU experts, then a zero, a copy and a constant
    expert."""
    kinds = [SwiGLUExpert] * 4 + [ZeroExpert, CopyExpert, ConstantExpert]
    return kinds[index](hidden, ffn)


# --- (a) Mixtral's sparse block -------------------------------------------------


class MixtralSparseMoeBlock(nn.Module):
    """transformers' MixtralSparseMoeBlock.forward, verbatim apart from the
    jitter noise (training only) and the router logits output."""

    def __init__(self, hidden, ffn, num_experts, top_k, renormalize=True,
                 score_scale=None, scoring="softmax", expert=None,
                 router_bias=False, temperature=None, expert_by_index=None,
                 hit_loop=False):
        super().__init__()
        self.hit_loop = hit_loop
        self.temperature = temperature
        self.hidden_dim = hidden
        self.num_experts = num_experts
        self.top_k = top_k
        self.renormalize = renormalize
        self.score_scale = score_scale
        self.scoring = scoring
        self.gate = nn.Linear(hidden, num_experts, bias=router_bias)
        if expert_by_index:
            self.experts = nn.ModuleList(
                [expert_by_index(i, hidden, ffn) for i in range(num_experts)])
        else:
            self.experts = nn.ModuleList([(expert or SwiGLUExpert)(hidden, ffn)
                                          for _ in range(num_experts)])

    def route(self, router_logits):
        if self.scoring == "topk_softmax":
            # GPT-OSS's GptOssTopKRouter: top-k of the logits, softmax over
            # the chosen ones.
            top_value, selected_experts = torch.topk(
                router_logits, self.top_k, dim=-1)
            return F.softmax(top_value, dim=1,
                             dtype=top_value.dtype), selected_experts
        if self.temperature is not None:
            # A softmax temperature (dense-to-sparse gates anneal it).
            router_logits = router_logits / self.temperature
        if self.scoring == "sigmoid":
            routing_weights = torch.sigmoid(router_logits)
        else:
            routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        if self.score_scale is not None:
            routing_weights = routing_weights * self.score_scale
        routing_weights, selected_experts = torch.topk(
            routing_weights, self.top_k, dim=-1)
        if self.renormalize:
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        return routing_weights, selected_experts

    def forward(self, hidden_states):
        shape = hidden_states.shape
        hidden_dim = shape[-1]
        hidden_states = hidden_states.view(-1, hidden_dim)
        router_logits = self.gate(hidden_states)
        return self.mix(hidden_states, router_logits).reshape(shape)

    def mix(self, hidden_states, router_logits):
        """The rest of transformers' forward: routing and the expert loop."""
        hidden_dim = hidden_states.shape[-1]
        routing_weights, selected_experts = self.route(router_logits)
        routing_weights = routing_weights.to(hidden_states.dtype)
        final_hidden_states = torch.zeros(
            (hidden_states.shape[0], hidden_dim), dtype=hidden_states.dtype,
            device=hidden_states.device)
        expert_mask = F.one_hot(
            selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        if self.hit_loop:
            return self.mix_hit(hidden_states, routing_weights, expert_mask,
                                final_hidden_states)
        for expert_idx in range(self.num_experts):
            expert_layer = self.experts[expert_idx]
            idx, top_x = torch.where(expert_mask[expert_idx])
            current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)
            current_hidden_states = (expert_layer(current_state)
                                     * routing_weights[top_x, idx, None])
            final_hidden_states.index_add_(
                0, top_x, current_hidden_states.to(hidden_states.dtype))
        return final_hidden_states

    def mix_hit(self, hidden_states, routing_weights, expert_mask,
                final_hidden_states):
        """transformers 4.52-4.57's loop: over the experts hit only
        (`expert_hit`), which tracing unrolls into as many iterations as the
        example input hits, each indexing the mask with the hit expert's id
        at run time."""
        hidden_dim = hidden_states.shape[-1]
        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_idx in expert_hit:
            expert_layer = self.experts[expert_idx]
            idx, top_x = torch.where(expert_mask[expert_idx].squeeze(0))
            current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)
            current_hidden_states = (expert_layer(current_state)
                                     * routing_weights[top_x, idx, None])
            final_hidden_states.index_add_(
                0, top_x, current_hidden_states.to(hidden_states.dtype))
        return final_hidden_states


class MixtralTopKRouterV5(nn.Module):
    """transformers 5's MixtralTopKRouter."""

    def __init__(self, hidden, num_experts, top_k):
        super().__init__()
        self.top_k = top_k
        self.num_experts = num_experts
        self.hidden_dim = hidden
        self.weight = nn.Parameter(torch.randn(num_experts, hidden) / 4)

    def forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)
        router_probs = F.softmax(router_logits.float(), dim=-1)
        router_top_value, router_indices = torch.topk(router_probs, self.top_k,
                                                      dim=-1)
        router_top_value /= router_top_value.sum(dim=-1, keepdim=True)
        router_scores = router_top_value.to(router_logits.dtype)
        return router_logits, router_scores, router_indices


class MixtralExpertsV5(nn.Module):
    """transformers 5's MixtralExperts (the experts of every MoE model there:
    stacked [E, 2F, H] gate_up_proj and [E, H, F] down_proj, a loop over the
    experts hit, F.linear at each expert's weights, chunk into gate and up)."""

    def __init__(self, hidden, ffn, num_experts):
        super().__init__()
        self.num_experts = num_experts
        self.hidden_dim = hidden
        self.intermediate_dim = ffn
        self.gate_up_proj = nn.Parameter(
            torch.randn(num_experts, 2 * ffn, hidden) / 4)
        self.down_proj = nn.Parameter(torch.randn(num_experts, hidden, ffn) / 4)
        self.act_fn = nn.SiLU()

    def forward(self, hidden_states, top_k_index, top_k_weights):
        final_hidden_states = torch.zeros_like(hidden_states)
        with torch.no_grad():
            expert_mask = torch.nn.functional.one_hot(
                top_k_index, num_classes=self.num_experts)
            expert_mask = expert_mask.permute(2, 1, 0)
            expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)),
                                       0).nonzero()
        for expert_idx in expert_hit:
            expert_idx = expert_idx[0]
            if expert_idx == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(expert_mask[expert_idx])
            current_state = hidden_states[token_idx]
            gate, up = nn.functional.linear(
                current_state, self.gate_up_proj[expert_idx]).chunk(2, dim=-1)
            current_hidden_states = self.act_fn(gate) * up
            current_hidden_states = nn.functional.linear(
                current_hidden_states, self.down_proj[expert_idx])
            current_hidden_states = (current_hidden_states
                                     * top_k_weights[token_idx, top_k_pos, None])
            final_hidden_states.index_add_(
                0, token_idx, current_hidden_states.to(final_hidden_states.dtype))
        return final_hidden_states


class MixtralSparseMoeBlockV5(nn.Module):
    """transformers 5's MixtralSparseMoeBlock (inference) on [B, S, H]."""

    def __init__(self, hidden, ffn, num_experts, top_k):
        super().__init__()
        self.gate = MixtralTopKRouterV5(hidden, num_experts, top_k)
        self.experts = MixtralExpertsV5(hidden, ffn, num_experts)

    def forward(self, hidden_states):
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        hidden_states = hidden_states.view(-1, hidden_states.shape[-1])
        _, top_k_weights, top_k_index = self.gate(hidden_states)
        hidden_states = self.experts(hidden_states, top_k_index, top_k_weights)
        hidden_states = hidden_states.reshape(batch_size, sequence_length,
                                              hidden_dim)
        return hidden_states


class BiasedSigmoidMoeBlock(MixtralSparseMoeBlock):
    """DeepSeek-V3's routing without the group limit (HF DeepseekV3MoE's
    gate): sigmoid scores, the top-k chosen by scores + a selection bias,
    the weights gathered from the unbiased scores, renormalized and scaled by
    routed_scaling_factor; Mixtral's expert loop."""

    def __init__(self, hidden, ffn, num_experts, top_k, scale=2.5):
        super().__init__(hidden, ffn, num_experts, top_k)
        self.register_buffer("e_score_correction_bias",
                             0.5 * torch.randn(num_experts))
        self.routed_scaling_factor = scale

    def route(self, router_logits):
        scores = router_logits.sigmoid()
        scores_for_choice = scores + self.e_score_correction_bias
        topk_indices = torch.topk(scores_for_choice, self.top_k, dim=-1)[1]
        topk_weights = scores.gather(1, topk_indices)
        topk_weights = topk_weights / topk_weights.sum(dim=-1, keepdim=True)
        return topk_weights * self.routed_scaling_factor, topk_indices


class GroupLimitedMoeBlock(BiasedSigmoidMoeBlock):
    """DeepSeek-V3's full routing (transformers' DeepseekV3TopkRouter
    .get_topk_indices, verbatim): the experts in n_group groups, each group
    scored by the sum of its two best biased scores, the top topk_group
    groups kept and the others' experts masked (with `fill`: 0.0 as
    transformers writes it, -inf as DeepSeek's reference code) before the
    top-k; weights as BiasedSigmoidMoeBlock's. With `fill` = 0.0 the raising
    needs a bias >= 0 (then every kept expert scores above the masked ones):
    `bias_offset` shifts the random bias."""

    def __init__(self, hidden, ffn, num_experts, top_k, n_group, topk_group,
                 fill=0.0, bias_offset=1.0):
        super().__init__(hidden, ffn, num_experts, top_k)
        self.n_routed_experts = num_experts
        self.n_group = n_group
        self.topk_group = topk_group
        self.fill = fill
        self.e_score_correction_bias += bias_offset

    def get_topk_indices(self, scores):
        scores_for_choice = scores.view(-1, self.n_routed_experts) + self.e_score_correction_bias.unsqueeze(0)
        group_scores = (
            scores_for_choice.view(-1, self.n_group, self.n_routed_experts // self.n_group)
            .topk(2, dim=-1)[0]
            .sum(dim=-1)
        )
        group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = (
            group_mask.unsqueeze(-1)
            .expand(-1, self.n_group, self.n_routed_experts // self.n_group)
            .reshape(-1, self.n_routed_experts)
        )
        scores_for_choice = scores_for_choice.masked_fill(~score_mask.bool(), self.fill)
        topk_indices = torch.topk(scores_for_choice, k=self.top_k, dim=-1, sorted=False)[1]
        return topk_indices

    def route(self, router_logits):
        scores = router_logits.sigmoid()
        topk_indices = self.get_topk_indices(scores)
        topk_weights = scores.gather(1, topk_indices)
        topk_weights = topk_weights / topk_weights.sum(dim=-1, keepdim=True)
        return topk_weights * self.routed_scaling_factor, topk_indices


# --- (b) dense-masked form ------------------------------------------------------


class DenseMoeBlock(nn.Module):
    """Every expert runs on every token; the outputs are mixed by a [T, E]
    matrix holding the renormalized top-k weights (zero elsewhere)."""

    def __init__(self, hidden, ffn, num_experts, top_k, shared_ffn=0):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleList(
            [SwiGLUExpert(hidden, ffn) for _ in range(num_experts)])
        self.shared_expert = (SwiGLUExpert(hidden, shared_ffn)
                              if shared_ffn else None)
        self.shared_expert_gate = (nn.Linear(hidden, 1, bias=False)
                                   if shared_ffn else None)

    def forward(self, x):
        probs = F.softmax(self.gate(x), dim=-1)
        top_w, top_i = torch.topk(probs, self.top_k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        mix = torch.zeros_like(probs).scatter(-1, top_i, top_w)
        outs = torch.stack([e(x) for e in self.experts], dim=-2)  # [T, E, H]
        y = (outs * mix.unsqueeze(-1)).sum(dim=-2)
        if self.shared_expert is not None:
            y = y + torch.sigmoid(self.shared_expert_gate(x)) \
                * self.shared_expert(x)
        return y


class GatingResidualMoe(nn.Module):
    """Two Mixtral layers with MoE++'s gating residual: the second layer's
    router logits are its own plus a learned map of the first layer's,
    `gate(h) + W_g(logits_1)` (Jin et al. 2024), each layer with a residual
    connection."""

    def __init__(self, hidden, ffn, num_experts, top_k):
        super().__init__()
        self.layer1 = MixtralSparseMoeBlock(hidden, ffn, num_experts, top_k)
        self.layer2 = MixtralSparseMoeBlock(hidden, ffn, num_experts, top_k)
        self.residual_map = nn.Linear(num_experts, num_experts, bias=False)

    def forward(self, x):
        logits1 = self.layer1.gate(x)
        h = x + self.layer1.mix(x, logits1)
        logits2 = self.layer2.gate(h) + self.residual_map(logits1)
        return h + self.layer2.mix(h, logits2)


class TopPMoeBlock(DenseMoeBlock):
    """Top-p routing (dynamic experts per token, as in Huang et al. 2024,
    "Harder tasks need more experts"): the probabilities sorted (a TopK over
    all experts), an expert kept while the probability before it sums to
    less than p, the kept probabilities (optionally renormalized) scattered
    into the [T, E] mixing matrix of the dense form."""

    def __init__(self, hidden, ffn, num_experts, threshold, renormalize):
        super().__init__(hidden, ffn, num_experts, num_experts)
        self.threshold = threshold
        self.renormalize = renormalize

    def forward(self, x):
        probs = F.softmax(self.gate(x), dim=-1)
        sorted_probs, sorted_idx = torch.topk(probs, self.num_experts, dim=-1)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        w = sorted_probs * (before < self.threshold)
        if self.renormalize:
            w = w / w.sum(dim=-1, keepdim=True)
        mix = torch.zeros_like(probs).scatter(-1, sorted_idx, w)
        outs = torch.stack([e(x) for e in self.experts], dim=-2)
        return (outs * mix.unsqueeze(-1)).sum(dim=-2)


class ExpertChoiceMoeBlock(nn.Module):
    """Expert-choice routing (Zhou et al. 2022): each expert takes the
    `capacity` tokens with the highest router probability in its column
    (softmax over the experts of each token) and scales its output rows by
    those probabilities; a token's result sums the experts that chose it."""

    def __init__(self, hidden, ffn, num_experts, capacity, weighted=True,
                 capacity_factor=None, capacity_offset=0):
        super().__init__()
        self.capacity_offset = capacity_offset
        self.capacity = capacity
        self.capacity_factor = capacity_factor
        self.num_experts = num_experts
        self.weighted = weighted
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleList(
            [SwiGLUExpert(hidden, ffn) for _ in range(num_experts)])

    def forward(self, x):
        probs = F.softmax(self.gate(x), dim=-1)                     # [T, E]
        capacity = self.capacity
        if self.capacity_factor is not None:
            # C = min(ceil(T * f / E), T), computed from T: the export keeps
            # it a function of the token count (Shape, Mul, Div, Ceil, Min).
            T = x.shape[0]
            capacity = torch.ceil(torch.tensor(T) * self.capacity_factor
                                  / self.num_experts).long() + self.capacity_offset
            capacity = torch.minimum(capacity, torch.tensor(T))
        weights, tokens = torch.topk(probs.t(), capacity, dim=-1)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = expert(x[tokens[e]])
            if self.weighted:
                rows = rows * weights[e, :, None]
            y = y.index_add(0, tokens[e], rows)
        return y


class HashMoeBlock(nn.Module):
    """Hash layers (Roller et al. 2021): a token's expert is a fixed function
    of its token id, a lookup in a random table (`hash_table[input_ids]`),
    with weight 1; no router. The expert loop is Mixtral's (torch.where,
    index_add_)."""

    def __init__(self, hidden, ffn, num_experts, vocab, table_offset=0,
                 output_scale=None):
        super().__init__()
        self.num_experts = num_experts
        self.output_scale = output_scale
        g = torch.Generator().manual_seed(7)
        self.register_buffer(
            "hash_table",
            torch.randint(0, num_experts, (vocab,), generator=g) + table_offset)
        self.experts = nn.ModuleList(
            [SwiGLUExpert(hidden, ffn) for _ in range(num_experts)])

    def forward(self, hidden_states, input_ids):
        selected = self.hash_table[input_ids]                         # [T]
        final = torch.zeros_like(hidden_states)
        for e in range(self.num_experts):
            top_x = torch.where(selected == e)[0]
            current = hidden_states[top_x]
            rows = self.experts[e](current)
            if self.output_scale is not None:
                rows = rows * self.output_scale
            final.index_add_(0, top_x, rows)
        return final


class ModalityMoeBlock(MixtralSparseMoeBlock):
    """Modality-aware routing (MoMa, Lin et al. 2024) with one router: the
    experts are split into consecutive groups, one per modality, and a token
    is routed among its modality's group only: the logits of the other
    groups' experts are masked to -inf before the softmax. Mixtral's top-k,
    renormalization and expert loop follow."""

    def __init__(self, hidden, ffn, group_sizes, top_k, renormalize=True):
        super().__init__(hidden, ffn, sum(group_sizes), top_k,
                         renormalize=renormalize)
        self.register_buffer("expert_group", torch.repeat_interleave(
            torch.arange(len(group_sizes)), torch.tensor(group_sizes)))

    def forward(self, hidden_states, modality):
        router_logits = self.gate(hidden_states)
        outside = self.expert_group[None, :] != modality[:, None]
        router_logits = router_logits.masked_fill(outside, float("-inf"))
        return self.mix(hidden_states, router_logits)


class ModalityRoutersMoeBlock(nn.Module):
    """MoMa with one router per modality: each modality's tokens (gathered
    by torch.where) go through their own Mixtral block (router and experts),
    and the outputs are written back in place."""

    def __init__(self, hidden, ffn, group_sizes, top_k):
        super().__init__()
        self.groups = nn.ModuleList([MixtralSparseMoeBlock(hidden, ffn, n, top_k)
                                     for n in group_sizes])

    def forward(self, hidden_states, modality):
        out = torch.zeros_like(hidden_states)
        for m, block in enumerate(self.groups):
            idx = torch.where(modality == m)[0]
            out = out.index_copy(0, idx, block(hidden_states[idx]))
        return out


# --- (c) Switch form ------------------------------------------------------------


class SwitchMoeBlock(nn.Module):
    """Switch Transformer's top-1 router (no capacity): the max router
    probability scales the chosen expert's output; experts are gathered per
    token and applied by einsum."""

    def __init__(self, hidden, ffn, num_experts):
        super().__init__()
        self.num_experts = num_experts
        self.router = nn.Linear(hidden, num_experts, bias=False)
        self.wi = nn.Parameter(torch.randn(num_experts, hidden, ffn) / 4)
        self.bi = nn.Parameter(torch.randn(num_experts, ffn) / 4)
        self.wo = nn.Parameter(torch.randn(num_experts, ffn, hidden) / 4)
        self.bo = nn.Parameter(torch.randn(num_experts, hidden) / 4)

    def forward(self, x):
        probs = F.softmax(self.router(x), dim=-1)
        p_max, _ = torch.max(probs, dim=-1, keepdim=True)
        index = torch.argmax(probs, dim=-1)
        wi, bi = self.wi[index], self.bi[index]          # [T, H, F], [T, F]
        wo, bo = self.wo[index], self.bo[index]
        h = F.relu(torch.einsum("th,thf->tf", x, wi) + bi)
        y = torch.einsum("tf,tfh->th", h, wo) + bo
        return p_max * y


class SwitchTransformersDenseActDense(nn.Module):
    """transformers' SwitchTransformersDenseActDense (wi, ReLU, wo; no
    biases, no dropout in eval)."""

    def __init__(self, hidden, ffn):
        super().__init__()
        self.wi = nn.Linear(hidden, ffn, bias=False)
        self.wo = nn.Linear(ffn, hidden, bias=False)

    def forward(self, hidden_states):
        return self.wo(F.relu(self.wi(hidden_states)))


class SwitchTransformersSparseMLP(nn.Module):
    """transformers' SwitchTransformersTop1Router and
    SwitchTransformersSparseMLP.forward, verbatim apart from the router's
    dtype casts (float32 throughout) and the jitter (eval): top-1 of the
    router softmax, an expert capacity per sequence (cumsum of the one-hot
    along the sequence, `<= expert_capacity`), the experts applied by
    boolean-mask indexing in a loop over the experts hit (`.tolist()`:
    tracing bakes that list in), tokens past the capacity passed through
    unchanged, and everything scaled by the max router probability."""

    def __init__(self, hidden, ffn, num_experts, expert_capacity):
        super().__init__()
        self.num_experts = num_experts
        self.expert_capacity = expert_capacity
        self.classifier = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleDict()
        for idx in range(num_experts):
            self.experts[f"expert_{idx}"] = SwitchTransformersDenseActDense(hidden, ffn)

    def router(self, hidden_states):
        router_logits = self.classifier(hidden_states)
        router_probs = F.softmax(router_logits, dim=-1)
        expert_index = torch.argmax(router_probs, dim=-1)
        expert_index = torch.nn.functional.one_hot(expert_index, num_classes=self.num_experts)
        token_priority = torch.cumsum(expert_index, dim=-2)
        expert_capacity_mask = token_priority <= self.expert_capacity
        expert_index = expert_index * expert_capacity_mask
        router_probs = torch.max(router_probs, dim=-1).values.unsqueeze(-1)
        return expert_index, router_probs, router_logits

    def forward(self, hidden_states):
        router_mask, router_probs, router_logits = self.router(hidden_states)
        next_states = hidden_states.clone()
        router_mask = router_mask.bool()
        batch_size, seq_len, num_experts = router_mask.shape
        idx_mask = router_mask.reshape(batch_size * seq_len, num_experts).sum(dim=0)
        idx_mask = torch.nonzero(idx_mask, as_tuple=True)[0].tolist()
        for idx in idx_mask:
            next_states[router_mask[:, :, idx]] = getattr(self.experts, f"expert_{idx}")(
                hidden_states[router_mask[:, :, idx]])
        hidden_states = router_probs * next_states
        return hidden_states


# --- (e) GPT-OSS -----------------------------------------------------------------


class GptOssTopKRouter(nn.Module):
    """transformers' GptOssTopKRouter, verbatim."""

    def __init__(self, hidden, num_experts, top_k):
        super().__init__()
        self.top_k = top_k
        self.num_experts = num_experts
        self.hidden_dim = hidden
        self.weight = nn.Parameter(torch.randn(num_experts, hidden) / 4)
        self.bias = nn.Parameter(torch.randn(num_experts) / 4)

    def forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight, self.bias)
        router_top_value, router_indices = torch.topk(
            router_logits, self.top_k, dim=-1)
        router_top_value = torch.nn.functional.softmax(
            router_top_value, dim=1, dtype=router_top_value.dtype)
        router_scores = torch.zeros_like(router_logits).scatter_(
            1, router_indices, router_top_value)
        return router_scores, router_indices


class GptOssExperts(nn.Module):
    """transformers' GptOssExperts: the batched branch it takes on GPUs in
    inference (its CPU branch loops over the experts hit, a data-dependent
    loop that tracing would bake in). `limit` is GPT-OSS's 7.0 by default;
    the tests use a small one so that the clamps bind. `up_limit` clamps the
    up projection to another range (a near miss, not GPT-OSS's clamp)."""

    def __init__(self, hidden, ffn, num_experts, limit=7.0, up_limit=None,
                 cpu_loop=False):
        super().__init__()
        self.cpu_loop = cpu_loop
        self.num_experts = num_experts
        self.hidden_size = hidden
        self.expert_dim = ffn
        self.gate_up_proj = nn.Parameter(
            torch.randn(num_experts, hidden, 2 * ffn) / 4)
        self.gate_up_proj_bias = nn.Parameter(
            torch.randn(num_experts, 2 * ffn) / 4)
        self.down_proj = nn.Parameter(torch.randn(num_experts, ffn, hidden) / 4)
        self.down_proj_bias = nn.Parameter(torch.randn(num_experts, hidden) / 4)
        self.alpha = 1.702
        self.limit = limit
        self.up_limit = up_limit or limit

    def forward(self, hidden_states, router_indices=None, routing_weights=None):
        batch_size = hidden_states.shape[0]
        hidden_states = hidden_states.reshape(-1, self.hidden_size)
        num_experts = routing_weights.shape[1]
        if self.cpu_loop:
            return self.forward_cpu(hidden_states, batch_size, num_experts,
                                    router_indices, routing_weights)
        hidden_states = hidden_states.repeat(num_experts, 1)
        hidden_states = hidden_states.view(num_experts, -1, self.hidden_size)
        gate_up = (torch.bmm(hidden_states, self.gate_up_proj)
                   + self.gate_up_proj_bias[..., None, :])
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        gate = gate.clamp(min=None, max=self.limit)
        up = up.clamp(min=-self.limit, max=self.up_limit)
        glu = gate * torch.sigmoid(gate * self.alpha)
        next_states = torch.bmm(((up + 1) * glu), self.down_proj)
        next_states = next_states + self.down_proj_bias[..., None, :]
        next_states = next_states.view(num_experts, batch_size, -1,
                                       self.hidden_size)
        next_states = next_states * routing_weights.transpose(0, 1).view(
            num_experts, batch_size, -1)[..., None]
        next_states = next_states.sum(dim=0)
        return next_states

    def forward_cpu(self, hidden_states, batch_size, num_experts,
                    router_indices, routing_weights):
        """transformers 4.57's branch for CPU tensors: a loop over the
        experts hit (one_hot over E + 1 classes, the last one a masking
        class that no router picks), each expert's weights indexed by the
        hit expert's id at run time."""
        next_states = torch.zeros_like(hidden_states, dtype=hidden_states.dtype,
                                       device=hidden_states.device)
        with torch.no_grad():
            expert_mask = torch.nn.functional.one_hot(
                router_indices, num_classes=num_experts + 1)
            expert_mask = expert_mask.permute(2, 1, 0)
            expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)),
                                       0).nonzero()
        for expert_idx in expert_hit[:]:
            expert_idx = expert_idx[0]
            if expert_idx == num_experts:
                continue
            with torch.no_grad():
                _, token_idx = torch.where(expert_mask[expert_idx])
            current_state = hidden_states[token_idx]
            gate_up = (current_state @ self.gate_up_proj[expert_idx]
                       + self.gate_up_proj_bias[expert_idx])
            gate, up = gate_up[..., ::2], gate_up[..., 1::2]
            gate = gate.clamp(min=None, max=self.limit)
            up = up.clamp(min=-self.limit, max=self.up_limit)
            glu = gate * torch.sigmoid(gate * self.alpha)
            gated_output = (up + 1) * glu
            out = (gated_output @ self.down_proj[expert_idx]
                   + self.down_proj_bias[expert_idx])
            weighted_output = out * routing_weights[token_idx, expert_idx, None]
            next_states.index_add_(0, token_idx,
                                   weighted_output.to(hidden_states.dtype))
        next_states = next_states.view(batch_size, -1, self.hidden_size)
        return next_states


class GptOssMLP(nn.Module):
    """transformers' GptOssMLP (without the router scores output)."""

    def __init__(self, hidden, ffn, num_experts, top_k, **experts):
        super().__init__()
        self.router = GptOssTopKRouter(hidden, num_experts, top_k)
        self.experts = GptOssExperts(hidden, ffn, num_experts, **experts)

    def forward(self, hidden_states):
        router_scores, router_indices = self.router(hidden_states)
        return self.experts(hidden_states, router_indices=router_indices,
                            routing_weights=router_scores)


# --- (f) GShard's einsum form with a capacity -----------------------------------


class CapacityEinsumMoeBlock(nn.Module):
    """Top-1 routing with an expert capacity in GShard's einsum form:
    fairseq's top1gating (one_hot of the argmax, locations by cumsum over
    the tokens, assignments at or past the capacity dropped, combine weights
    einsum("se,sc->sec"), dispatch mask = combine.bool()) verbatim, and the
    experts as Mesh TensorFlow writes them: batched einsums over [E, C, M]
    (ReLU FFN with biases). The capacity is a Python int, so the export
    fixes the token count."""

    def __init__(self, hidden, ffn, num_experts, capacity_factor):
        super().__init__()
        self.num_experts = num_experts
        self.capacity_factor = capacity_factor
        self.wg = nn.Linear(hidden, num_experts, bias=False)
        self.wi = nn.Parameter(torch.randn(num_experts, hidden, ffn) / 4)
        self.bi = nn.Parameter(torch.randn(num_experts, 1, ffn) / 4)
        self.wo = nn.Parameter(torch.randn(num_experts, ffn, hidden) / 4)
        self.bo = nn.Parameter(torch.randn(num_experts, 1, hidden) / 4)

    def top1gating(self, logits):
        gates = F.softmax(logits, dim=1)
        num_tokens = gates.shape[0]
        capacity = int(math.ceil(num_tokens / self.num_experts
                                 * self.capacity_factor))
        indices1_s = torch.argmax(gates, dim=1)
        mask1 = F.one_hot(indices1_s, num_classes=self.num_experts)
        locations1 = torch.cumsum(mask1, dim=0) - 1
        mask1 = mask1 * torch.lt(locations1, capacity)
        locations1_s = torch.sum(locations1 * mask1, dim=1)
        gates1_s = (gates * mask1).sum(dim=1)
        locations1_sc = F.one_hot(locations1_s, num_classes=capacity)
        combine_weights = torch.einsum(
            "se,sc->sec", gates1_s.unsqueeze(-1) * mask1,
            locations1_sc.to(gates.dtype))
        return combine_weights, combine_weights.bool()

    def forward(self, x):
        combine_weights, dispatch_mask = self.top1gating(self.wg(x))
        dispatched = torch.einsum("sec,sm->ecm", dispatch_mask.to(x.dtype), x)
        h = F.relu(torch.einsum("ecm,emf->ecf", dispatched, self.wi) + self.bi)
        out = torch.einsum("ecf,efm->ecm", h, self.wo) + self.bo
        return torch.einsum("sec,ecm->sm", combine_weights, out)


# --- (d) a tiny decoder LM ------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, hidden, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(1 + torch.randn(hidden) / 10)
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.o = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(x).split(h, dim=-1)
        q = q.view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(b, s, self.heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / (self.head_dim ** 0.5)
        causal = torch.ones(s, s, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        ctx = F.softmax(scores, dim=-1) @ v
        return self.o(ctx.transpose(1, 2).reshape(b, s, h))


class DecoderLayer(nn.Module):
    def __init__(self, hidden, heads, ffn, num_experts, top_k):
        super().__init__()
        self.input_norm = RMSNorm(hidden)
        self.attn = Attention(hidden, heads)
        self.post_norm = RMSNorm(hidden)
        self.moe = MixtralSparseMoeBlock(hidden, ffn, num_experts, top_k)

    def forward(self, x):
        x = x + self.attn(self.input_norm(x))
        return x + self.moe(self.post_norm(x))


class TinyDecoder(nn.Module):
    def __init__(self, vocab=32, hidden=16, heads=2, ffn=24, num_experts=4,
                 top_k=2, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(
            [DecoderLayer(hidden, heads, ffn, num_experts, top_k)
             for _ in range(layers)])
        self.norm = RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


# --- Registry -------------------------------------------------------------------

H, FFN, E = 16, 24, 4


def float_input(shape):
    return lambda g: torch.randn(*shape, generator=g)


VOCAB = 32


def modality_inputs(tokens):
    """Hidden states [T, H] and modality ids [T] in {0, 1}."""
    def make(g):
        return (torch.randn(tokens, H, generator=g),
                torch.randint(0, 2, (tokens,), generator=g))
    make.int_high = 2  # the range gen draws the run's ids from
    return make


def token_inputs(tokens):
    """Hidden states [T, H] and token ids [T] in [0, VOCAB)."""
    return lambda g: (torch.randn(tokens, H, generator=g),
                      torch.randint(0, VOCAB, (tokens,), generator=g))


MODELS = {
    # name: (module factory, example input, dynamic axes of input 0)
    "mixtral": (lambda: MixtralSparseMoeBlock(H, FFN, E, 2),
                float_input((7, H)), {0: "tokens"}),
    # transformers 4.52+'s loop over the experts hit.
    "mixtral_hit": (lambda: MixtralSparseMoeBlock(H, FFN, E, 2, hit_loop=True),
                    float_input((7, H)), {0: "tokens"}),
    # transformers 5's Mixtral block (its experts are every MoE model's).
    "mixtral_v5": (lambda: MixtralSparseMoeBlockV5(H, FFN, E, 2),
                   float_input((2, 6, H)), {0: "batch", 1: "seq"}),
    "mixtral_3d": (lambda: MixtralSparseMoeBlock(H, FFN, E, 2),
                   float_input((2, 5, H)), {0: "batch", 1: "seq"}),
    # ReLU FFN experts with biases (Switch's wi/wo MLP) in Mixtral's loop.
    "mixtral_relu": (lambda: MixtralSparseMoeBlock(H, FFN, E, 2,
                                                   expert=ReluExpert),
                     float_input((7, H)), {0: "tokens"}),
    "mixtral_gelu": (lambda: MixtralSparseMoeBlock(H, FFN, E, 2,
                                                   expert=GeluExpert),
                     float_input((7, H)), {0: "tokens"}),
    "mixtral_gelu_tanh": (lambda: MixtralSparseMoeBlock(
        H, FFN, E, 2, expert=GeluTanhExpert), float_input((7, H)),
                          {0: "tokens"}),
    # GPT-OSS's router (a bias; top-k of the logits, softmax over the
    # chosen) in Mixtral's loop with SwiGLU experts with biases.
    "gptoss_router_loop": (lambda: MixtralSparseMoeBlock(
        H, FFN, E, 2, scoring="topk_softmax", router_bias=True,
        expert=lambda h, f: SwiGLUExpert(h, f, bias=True)),
                           float_input((7, H)), {0: "tokens"}),
    # GPT-OSS's MLP (router and batched experts) on [B, S, H], clamped at
    # 0.6 so that the clamps bind for part of the values.
    "gptoss": (lambda: GptOssMLP(H, FFN, E, 2, limit=0.6),
               float_input((2, 5, H)), {0: "batch", 1: "seq"}),
    # GptOssExperts' CPU branch (a loop over the experts hit, unrolled by
    # tracing: the example's 12 tokens hit all 4 experts).
    "gptoss_cpu": (lambda: GptOssMLP(H, FFN, E, 2, limit=0.6, cpu_loop=True),
                   float_input((2, 6, H)), {0: "batch", 1: "seq"}),
    # The same traced on one token: 2 of the 4 experts hit, the export
    # computes those two whatever the input (not raised, a remark says why).
    "gptoss_cpu_partial": (lambda: GptOssMLP(H, FFN, E, 2, limit=0.6,
                                             cpu_loop=True),
                           float_input((1, 1, H)), {0: "batch", 1: "seq"}),
    # The up projection clamped to [-0.6, 1.2]: not GPT-OSS's clamp, not
    # raised.
    "gptoss_clamp_near_miss": (lambda: GptOssMLP(H, FFN, E, 2, limit=0.6,
                                                 up_limit=1.2),
                               float_input((2, 5, H)), {0: "batch", 1: "seq"}),
    # 10 tokens over 4 experts with a capacity of ceil(10 / 4 * 0.5) = 2:
    # at least 2 tokens are dropped. The token count is static.
    "capacity_einsum": (lambda: CapacityEinsumMoeBlock(H, FFN, E, 0.5),
                        float_input((10, H)), {}),
    # The same exported with a dynamic token axis: the capacity stays the
    # traced 2 (at T = 12 too: ceil(12 / 4 * 0.5) = 2), moe.routing's fixed
    # capacity.
    "capacity_einsum_dynamic": (lambda: CapacityEinsumMoeBlock(H, FFN, E, 0.5),
                                float_input((10, H)), {0: "tokens"}),
    # Softmax at temperature 0.5 (logits / 0.5), top-2 without
    # renormalization (so that the temperature shows in the weights).
    "mixtral_temperature": (lambda: MixtralSparseMoeBlock(
        H, FFN, E, 2, renormalize=False, temperature=0.5),
                            float_input((7, H)), {0: "tokens"}),
    "mixtral_sigmoid": (lambda: MixtralSparseMoeBlock(H, FFN, E, 2,
                                                      scoring="sigmoid"),
                        float_input((7, H)), {0: "tokens"}),
    "deepseek_v3": (lambda: BiasedSigmoidMoeBlock(H, FFN, E, 2),
                    float_input((7, H)), {0: "tokens"}),
    # 8 experts in 4 groups of 2, the best 2 groups, top-2 (masked with 0.0
    # as transformers does, the bias >= 0; and with -inf, any bias).
    "deepseek_v3_groups": (lambda: GroupLimitedMoeBlock(H, FFN, 8, 2, 4, 2),
                           float_input((7, H)), {0: "tokens"}),
    "deepseek_v3_groups_inf": (lambda: GroupLimitedMoeBlock(
        H, FFN, 8, 2, 4, 2, fill=float("-inf"), bias_offset=-0.5),
                               float_input((7, H)), {0: "tokens"}),
    # Masked with 0.0 but a bias that can make kept experts score below 0:
    # not raised (a masked expert could be chosen).
    "deepseek_v3_groups_negative": (lambda: GroupLimitedMoeBlock(
        H, FFN, 8, 2, 4, 2, bias_offset=-1.0),
                                    float_input((7, H)), {0: "tokens"}),
    "qwen_norenorm": (lambda: MixtralSparseMoeBlock(H, FFN, E, 2,
                                                    renormalize=False),
                      float_input((6, H)), {0: "tokens"}),
    "dense": (lambda: DenseMoeBlock(H, FFN, E, 2),
              float_input((6, H)), {0: "tokens"}),
    # MoE++'s zero-computation experts: 4 SwiGLU, a zero, a copy and a
    # constant expert, top-2.
    "moe_plus_plus": (lambda: MixtralSparseMoeBlock(
        H, FFN, 7, 2, expert_by_index=moe_plus_plus_expert),
                      float_input((9, H)), {0: "tokens"}),
    # MoE++'s gating residual between two Mixtral layers.
    "gating_residual": (lambda: GatingResidualMoe(H, FFN, E, 2),
                        float_input((7, H)), {0: "tokens"}),
    # Top-p at p = 0.6 over 4 experts: 1 to 4 experts per token.
    "top_p": (lambda: TopPMoeBlock(H, FFN, E, 0.6, renormalize=False),
              float_input((9, H)), {0: "tokens"}),
    "top_p_renorm": (lambda: TopPMoeBlock(H, FFN, E, 0.6, renormalize=True),
                     float_input((9, H)), {0: "tokens"}),
    "dense_shared": (lambda: DenseMoeBlock(H, FFN, E, 2, shared_ffn=20),
                     float_input((6, H)), {0: "tokens"}),
    # Each of the E experts takes 3 of the tokens.
    "expert_choice": (lambda: ExpertChoiceMoeBlock(H, FFN, E, 3),
                      float_input((7, H)), {0: "tokens"}),
    # Capacity from the token count: min(ceil(T * 2 / 4), T) (4 at the
    # traced T = 7, 5 at T = 9).
    "expert_choice_factor": (lambda: ExpertChoiceMoeBlock(
        H, FFN, E, None, capacity_factor=2.0), float_input((7, H)), {0: "tokens"}),
    # min(ceil(T * 1 / 4) + 1, T): not a form moe.routing has (not raised;
    # TopK then has no constant K to import op by op).
    "expert_choice_factor_offset": (lambda: ExpertChoiceMoeBlock(
        H, FFN, E, None, capacity_factor=1.0, capacity_offset=1),
        float_input((7, H)), {0: "tokens"}),
    # The same without scaling the rows by the probabilities: not raised.
    "expert_choice_unweighted": (lambda: ExpertChoiceMoeBlock(
        H, FFN, E, 3, weighted=False), float_input((7, H)), {0: "tokens"}),
    # Hash routing over a vocabulary of 32 token ids: inputs x and ids.
    "hash": (lambda: HashMoeBlock(H, FFN, E, VOCAB),
             token_inputs(7), {0: "tokens"}),
    # Table entries 1..E: entry E matches no expert, so its tokens get 0 (as
    # moe.hash_route routes an entry outside [0, E) nowhere).
    "hash_offset": (lambda: HashMoeBlock(H, FFN, E, VOCAB, table_offset=1),
                    token_inputs(7), {0: "tokens"}),
    # The expert outputs scaled by 0.5: not hash routing as moe.hash_route
    # defines it (weight 1); imported op by op.
    "hash_scaled": (lambda: HashMoeBlock(H, FFN, E, VOCAB, output_scale=0.5),
                    token_inputs(7), {0: "tokens"}),
    # MoMa: 5 experts in groups of 3 (text) and 2 (image), top-2 within
    # the token's group; inputs x and the modality ids (0 or 1).
    "moma": (lambda: ModalityMoeBlock(H, FFN, [3, 2], 2),
             modality_inputs(7), {0: "tokens"}),
    # One router per modality: each modality's Mixtral block on its tokens.
    "moma_routers": (lambda: ModalityRoutersMoeBlock(H, FFN, [3, 2], 2),
                     modality_inputs(7), {0: "tokens"}),
    # Without renormalization the masked softmax (over the group) and
    # moe.routing's (over all experts) differ: not raised.
    "moma_norenorm": (lambda: ModalityMoeBlock(H, FFN, [3, 2], 2,
                                               renormalize=False),
                      modality_inputs(7), {0: "tokens"}),
    "switch": (lambda: SwitchMoeBlock(H, FFN, E),
               float_input((6, H)), {0: "tokens"}),
    # transformers' Switch MLP on [1, S, H] (dynamic S), a capacity of 3
    # tokens per expert: 14 tokens over 4 experts, at least 2 passed through.
    "switch_hf": (lambda: SwitchTransformersSparseMLP(H, FFN, E, 3),
                  float_input((1, 14, H)), {1: "seq"}),
    # The same with a dynamic batch axis (run on 3 sequences): the capacity
    # counts per sequence, which moe.routing's does not (not raised).
    "switch_hf_batch": (lambda: SwitchTransformersSparseMLP(H, FFN, E, 3),
                        float_input((2, 7, H)), {0: "batch", 1: "seq"}),
    "decoder": (lambda: TinyDecoder(),
                lambda g: torch.randint(0, 32, (2, 5), generator=g),
                {0: "batch", 1: "seq"}),
    "near_miss": (lambda: MixtralSparseMoeBlock(H, FFN, E, 2,
                                                score_scale=2.0),
                  float_input((6, H)), {0: "tokens"}),
}


def bf16_bits(t):
    """The bit patterns of a bfloat16 tensor as a uint16 array."""
    return t.view(torch.int16).numpy().view(np.uint16)


def gen(name, out_dir, run_shape=None, bf16=False, f16_reference=False):
    factory, make_input, dynamic = MODELS[name]
    torch.manual_seed(0)
    module = factory().eval()
    dtype = torch.bfloat16 if bf16 else torch.float32
    if bf16:
        module = module.bfloat16()
    g = torch.Generator().manual_seed(1)
    example = make_input(g)
    examples = example if isinstance(example, tuple) else (example,)
    examples = tuple(e.to(dtype) if e.dtype.is_floating_point else e
                     for e in examples)
    names = ["x", "ids"][:len(examples)]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.onnx")
    with torch.no_grad():
        axes = {n: {a: v for a, v in dynamic.items() if a < e.dim()}
                for n, e in zip(names, examples)}
        torch.onnx.export(module, examples, path, opset_version=OPSET,
                          input_names=names, output_names=["y"],
                          dynamic_axes=dict(axes, y=dynamic))
        # A different input than the traced one, with another token count
        # where the axis is dynamic.
        inputs = []
        for e in examples:
            shape = list(e.shape)
            if run_shape:
                shape = [int(d) for d in run_shape.split("x")]
            elif dynamic:
                shape[min(dynamic)] += 2
            if e.dtype.is_floating_point:
                inputs.append(torch.randn(*shape, generator=g).to(dtype))
            else:
                # Token ids in [0, VOCAB), or the input's own range.
                high = getattr(make_input, "int_high", VOCAB)
                inputs.append(torch.randint(0, high, shape, generator=g))
        y = module(*inputs)
        if f16_reference:
            module = module.half()
            inputs64 = [i.half().double() if i.dtype.is_floating_point else i
                        for i in inputs]
        else:
            inputs64 = [i.double() if i.dtype.is_floating_point else i
                        for i in inputs]
        y64 = module.double()(*inputs64)
    for i, x in enumerate(inputs):
        np.save(os.path.join(out_dir, "in%d.npy" % i),
                bf16_bits(x) if x.dtype == torch.bfloat16 else x.numpy())
    np.save(os.path.join(out_dir, "ref0.npy"), y.float().numpy())
    np.save(os.path.join(out_dir, "ref64_0.npy"), y64.numpy())


def check(out_dir, tol=1e-5):
    ok = True
    # out0.npy (the tests), or out.npy (bench/gpu/run.sh's cases).
    path = os.path.join(out_dir, "out0.npy")
    if not os.path.exists(path):
        path = os.path.join(out_dir, "out.npy")
    out = np.load(path)
    if out.dtype == np.uint16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    for ref_name in ("ref0", "ref64_0"):
        ref = np.load(os.path.join(out_dir, ref_name + ".npy"))
        if out.shape != ref.shape:
            print("out0 vs %s: FAIL shape %s, expected %s"
                  % (ref_name, out.shape, ref.shape))
            ok = False
            continue
        ref = ref.astype(np.float64)
        err = np.linalg.norm(out.astype(np.float64) - ref) / max(
            np.linalg.norm(ref), 1e-30)
        status = "OK" if err <= tol else "FAIL"
        ok = ok and err <= tol
        print("out0 vs %s: %s %s rel_l2=%.3g" % (ref_name, status, out.dtype,
                                                 err))
    return ok


def main():
    if sys.argv[1] == "gen":
        flags = ("--bf16", "--f16-reference")
        args = [a for a in sys.argv[2:] if a not in flags]
        gen(args[0], args[1], *args[2:3], bf16="--bf16" in sys.argv,
            f16_reference="--f16-reference" in sys.argv)
    elif sys.argv[1] == "check":
        sys.exit(0 if check(sys.argv[2], *map(float, sys.argv[3:4])) else 1)
    elif sys.argv[1] == "list":
        print("\n".join(MODELS))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
