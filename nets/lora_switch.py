"""Low-rank adapters on dense projections: one shared LoRA, layer-wise MoE-LoRA, and LoRA-Switch (merged or not).

Kong et al., "LoRA-Switch: Boosting the Efficiency of Dynamic LLM Adapters via System-Algorithm Co-design" (2024);
LoRA: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR 2022).

Every adapted projection is `AdaptedDense`: a backbone kernel W (d_in, d_out) and bias b, plus, by `kind`,

    none        y = x W + b
    lora        y = x W + b + s (x A) B                         A (d_in, r), B (r, d_out); s = alpha / r
    moe_lora    y = x W + b + s Σ_e g_e(x) (x A_e) B_e          E experts; a router IN EVERY PROJECTION:
                                                                g(x) = softmax(x R), every expert applied and
                                                                mixed (or the top-k of g, renormalised)
    switch      y = x W + b + s Σ_{j<k} g_j (x A_{e_j}) B_{e_j} the unmerged path
                y = x (W + s Σ_{j<k} g_j A_{e_j} B_{e_j}) + b   the merged path: one matmul per projection

B starts at zero (`lora_b`), so every adapter starts as the backbone exactly (tested). In `switch` the experts
e_1..e_k and gates g_1..g_k of a token come from ONE router, `Router`, applied to the token's input to the first
transformer layer (the paper's token-wise pre-gating); the same choice serves every projection of every layer.
The transformer (nets/transformer.py) computes it once and passes it down as a `Routing`. Top-k gates are the
softmax over the k selected logits (= the selected probabilities renormalised to sum to one).

Load balancing (Switch-Transformer form, summed over experts and scaled by E so that a uniform router scores 1):

    L_balance = E Σ_e f_e P_e,   f_e = fraction of the (token, slot) assignments that go to e,
                                 P_e = mean over tokens of the router's full softmax probability of e

Routers sow it into the "aux" collection (`aux_loss` averages what was sown). A dense layer-wise mixture has no
routing to balance and sows nothing.

Costs, per token and projection (d = d_in, o = d_out). Unmerged switch: d·o for the backbone plus k·r·(d + o) for
the adapters, with a gather of the k experts' A and B. Merged: building W + ΔW costs k·r·d·o multiply-adds and
writes a (d, o) matrix PER TOKEN (the merged weights are (tokens, d, o)), then one batched matmul. So merging
never saves FLOPs; what it saves is kernel launches: on a GPU in eager mode the unmerged path issues ~2k small
matmuls plus gathers per projection, and at batch 1 those launches dominate. The merge pays when one token is
decoded per step at batch 1 (the paper's setting: merge once per step for the generated token, reuse the merged
weights for that token's whole forward pass) so the (tokens, d, o) tensor is a single matrix. With several tokens
or a batch, each distinct token needs its own merged matrix and the merge costs k·r times the backbone matmul.
Under `jax.jit` XLA fuses the unmerged path's small ops too; `benchmarks/lora_switch.py` measures both.

Departures from the paper:
- The paper merges into the backbone weights in place with a fused CUDA kernel (SGMM) and un-merges afterwards;
  here the merged weights are a fresh per-token tensor (functional, no in-place update), which XLA compiles.
- The router's input is the token's hidden state entering the first layer (before its LayerNorm), with no bias;
  the paper does not pin this detail down in the abstract we have, so it is a choice.
- The balance loss's exact form and weight are ours (the paper adds an auxiliary loss; we use Switch's).
- The layer-wise baseline puts a router in every adapted projection (as MoLA/PESC-style MoE-LoRA do, and the
  issue's "router in every layer"); its mixing is dense over all E experts by default, top-k optional.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

ADAPTER_KINDS = ("none", "lora", "moe_lora", "switch")
ADAPTER_PARAM_PREFIX = "lora_"  # lora_a, lora_b; routers are named "router"


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """Which adapter every projection carries (static: changing it changes the parameter tree)."""

    kind: str = "none"
    num_experts: int = 4  # E (moe_lora, switch)
    rank: int = 4  # r per expert (for `lora`: the rank of the one shared adapter)
    alpha: float = 8.0  # scale s = alpha / rank
    top_k: int = 2  # switch: experts per token
    merged: bool = False  # switch: merged path (one matmul per projection) instead of base + adapter matmuls
    dense_dispatch: bool = False  # unmerged top-k paths: all experts times dense gates instead of gathering k
    layerwise_top_k: int = 0  # moe_lora: 0 mixes every expert; k > 0 keeps each router's top k

    def __post_init__(self):
        if self.kind not in ADAPTER_KINDS:
            raise ValueError(f"AdapterConfig.kind={self.kind!r}: expected one of {ADAPTER_KINDS}.")
        if self.rank < 1 or self.num_experts < 1:
            raise ValueError(f"AdapterConfig needs rank >= 1 and num_experts >= 1; got rank={self.rank}, "
                             f"num_experts={self.num_experts}.")
        if self.kind == "switch" and not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"AdapterConfig.top_k={self.top_k}: expected 1 <= top_k <= num_experts "
                             f"({self.num_experts}).")
        if self.kind == "moe_lora" and not 0 <= self.layerwise_top_k <= self.num_experts:
            raise ValueError(f"AdapterConfig.layerwise_top_k={self.layerwise_top_k}: expected 0 (all experts) "
                             f"to num_experts ({self.num_experts}).")
        if self.merged and self.kind != "switch":
            raise ValueError(f"AdapterConfig.merged=True needs kind='switch' (got {self.kind!r}): only LoRA-Switch "
                             f"has a merged path.")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def shared_lora_like(adapter: AdapterConfig) -> AdapterConfig:
    """One shared LoRA with the adapter parameters of `adapter`'s E experts of rank r: rank E·r, same scale."""
    rank = adapter.num_experts * adapter.rank
    return AdapterConfig(kind="lora", rank=rank, alpha=adapter.scale * rank)


# ---- routing --------------------------------------------------------------------------------------------------
@flax.struct.dataclass
class Routing:
    """Per-token expert choice: indices and gates (..., k), the router's full softmax probs (..., E)."""

    indices: jax.Array
    gates: jax.Array
    probs: jax.Array


def top_k_routing(logits: jax.Array, k: int) -> Routing:
    """The k largest logits per token; gates = softmax over those k (sums to one), probs = softmax over all."""
    top_logits, indices = jax.lax.top_k(logits, k)
    return Routing(indices=indices, gates=jax.nn.softmax(top_logits, axis=-1), probs=jax.nn.softmax(logits, -1))


def dense_gates(routing: Routing) -> jax.Array:
    """The gates as an (..., E) vector: g_j at the chosen experts, zero elsewhere."""
    one_hot = jax.nn.one_hot(routing.indices, routing.probs.shape[-1], dtype=routing.gates.dtype)
    return jnp.sum(one_hot * routing.gates[..., None], axis=-2)


def load_balancing_loss(routing: Routing) -> jax.Array:
    """E Σ_e f_e P_e over all tokens (1 for a perfectly uniform router, E when every token goes to one expert)."""
    num_experts, k = routing.probs.shape[-1], routing.indices.shape[-1]
    assigned = jax.nn.one_hot(routing.indices, num_experts).reshape(-1, k, num_experts).sum(1)
    fraction = assigned.mean(0) / k
    mean_prob = routing.probs.reshape(-1, num_experts).mean(0)
    return num_experts * jnp.sum(fraction * mean_prob)


def aux_loss(aux: dict) -> jax.Array:
    """Mean of every balance loss sown into the "aux" collection (0 when no router sowed one)."""
    leaves = jax.tree_util.tree_leaves(aux.get("aux", aux) if isinstance(aux, dict) else aux)
    return jnp.mean(jnp.stack(leaves)) if leaves else jnp.zeros(())


class Router(nn.Module):
    """Token-wise top-k router: x (..., d) -> Routing; sows its balance loss into "aux"."""

    num_experts: int
    top_k: int

    @nn.compact
    def __call__(self, x: jax.Array) -> Routing:
        logits = nn.Dense(self.num_experts, use_bias=False, name="logits")(x)
        routing = top_k_routing(logits, self.top_k)
        self.sow("aux", "load_balancing", load_balancing_loss(routing))
        return routing


# ---- the adapted projection -----------------------------------------------------------------------------------
def _gather_experts(table: jax.Array, indices: jax.Array) -> jax.Array:
    """table (E, a, b), indices (..., k) -> (..., k, a, b)."""
    return jnp.take(table, indices, axis=0)


def switch_unmerged(x, kernel, bias, lora_a, lora_b, routing: Routing, scale, dense: bool = False) -> jax.Array:
    """x W + b + s Σ_j g_j (x A_{e_j}) B_{e_j}: the backbone matmul plus the k chosen adapters, per token.

    dense=False gathers the k chosen experts per token (k·r·(d + o) multiply-adds); dense=True runs all E
    experts and weights them by the (mostly zero) dense gates: E/k times the adapter FLOPs but no gathers and
    no scatter-add in the backward pass, the faster way to TRAIN small E on a CPU. Both are the same function.
    """
    if dense:
        low = jnp.einsum("...d,edr->...er", x, lora_a) * dense_gates(routing)[..., None]
        return x @ kernel + bias + scale * jnp.einsum("...er,ero->...o", low, lora_b)
    a, b = _gather_experts(lora_a, routing.indices), _gather_experts(lora_b, routing.indices)
    low = jnp.einsum("...d,...kdr->...kr", x, a) * routing.gates[..., None]
    return x @ kernel + bias + scale * jnp.einsum("...kr,...kro->...o", low, b)


def switch_merged(x, kernel, bias, lora_a, lora_b, routing: Routing, scale) -> jax.Array:
    """x (W + s Σ_j g_j A_{e_j} B_{e_j}) + b: the chosen adapters merged into per-token weights, one matmul."""
    a, b = _gather_experts(lora_a, routing.indices), _gather_experts(lora_b, routing.indices)
    delta = jnp.einsum("...kdr,...k,...kro->...do", a, routing.gates, b)
    return jnp.einsum("...d,...do->...o", x, kernel + scale * delta) + bias


class AdaptedDense(nn.Module):
    """A dense projection whose backbone (kernel, bias) carries the adapter `adapter` (see the module docstring).

    `routing` is required for kind "switch" (the first layer's choice) and ignored otherwise.
    """

    features: int
    adapter: AdapterConfig = AdapterConfig()
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.xavier_uniform()

    @nn.compact
    def __call__(self, x: jax.Array, routing: Routing | None = None) -> jax.Array:
        d_in, cfg = x.shape[-1], self.adapter
        kernel = self.param("kernel", self.kernel_init, (d_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else 0.0
        if cfg.kind == "none":
            return x @ kernel + bias
        a_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-2, out_axis=-1)
        if cfg.kind == "lora":
            lora_a = self.param("lora_a", a_init, (d_in, cfg.rank))
            lora_b = self.param("lora_b", nn.initializers.zeros, (cfg.rank, self.features))
            return x @ kernel + bias + cfg.scale * (x @ lora_a) @ lora_b
        shape_a, shape_b = (cfg.num_experts, d_in, cfg.rank), (cfg.num_experts, cfg.rank, self.features)
        lora_a = self.param("lora_a", a_init, shape_a)
        lora_b = self.param("lora_b", nn.initializers.zeros, shape_b)
        if cfg.kind == "moe_lora":
            if cfg.layerwise_top_k:
                local = Router(cfg.num_experts, cfg.layerwise_top_k, name="router")(x)
                return switch_unmerged(x, kernel, bias, lora_a, lora_b, local, cfg.scale, cfg.dense_dispatch)
            gates = jax.nn.softmax(nn.Dense(cfg.num_experts, use_bias=False, name="router")(x), axis=-1)
            low = jnp.einsum("...d,edr->...er", x, lora_a) * gates[..., None]
            return x @ kernel + bias + cfg.scale * jnp.einsum("...er,ero->...o", low, lora_b)
        if routing is None:
            raise ValueError("AdaptedDense(kind='switch') needs the first layer's Routing (indices, gates); the "
                             "transformer computes it once with Router and passes it to every projection.")
        if cfg.merged:
            return switch_merged(x, kernel, bias, lora_a, lora_b, routing, cfg.scale)
        return switch_unmerged(x, kernel, bias, lora_a, lora_b, routing, cfg.scale, cfg.dense_dispatch)


def is_adapter_path(path: tuple[str, ...]) -> bool:
    """Whether a parameter (by its key path) belongs to an adapter: lora_a/lora_b or any router."""
    return any(str(p).startswith(ADAPTER_PARAM_PREFIX) or str(p) == "router" for p in path)
