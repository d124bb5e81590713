"""REFACTOR's theorem-extraction model: node classification on expanded proof trees (Zhou et al., ICLR 2024).

Each training graph is a proof with one theorem's proof inlined (`envs/metamath/expand.py`); the model predicts,
for every node, whether it belongs to the inlined theorem. Objective (the reference's `average='proof'`):

    L(θ) = (1/G) Σ_g (1/n_g) Σ_{i ∈ g} BCE(σ(f_θ(x)_i), y_i)  [· w_i, w_i = pos_weight for y_i = 1, else 1]

minimised with Adam (lr 1e-3) and coupled L2 weight decay 1e-3 (torch `Adam(weight_decay=lam)`), as the
reference's `train.py` defaults. Metrics: node accuracy (a node is right when round(σ) = y) and proof accuracy
(every node of the graph right: the paper's "extracts 19.6% of the theorems" measure).

Departure: this is a host loop over padded batches of a few budget shapes (one compile per budget), not a
`experiments/runner.Trainer` scan: batches of different shapes cannot share one `lax.scan` chunk without
padding every batch to the largest budget. Population sweeps and the runner's checkpoints are not used.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import optax

from nets.graph import GraphBatch, NodeClassifier


@dataclasses.dataclass(frozen=True)
class Config:
    embed_dim: int = 128
    hidden: int = 256
    num_layers: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-3
    pos_weight: float = 1.0
    graphs_per_batch: int = 4      # the reference's batch size


def model(cfg: Config, vocab: int) -> NodeClassifier:
    return NodeClassifier(vocab=vocab, embed_dim=cfg.embed_dim, hidden=cfg.hidden, num_layers=cfg.num_layers)


def optimizer(cfg: Config):
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(cfg.lr))


def init(cfg: Config, vocab: int, key, example: GraphBatch):
    params = model(cfg, vocab).init(key, example)
    return params, optimizer(cfg).init(params)


def node_loss(logits, batch: GraphBatch, pos_weight: float):
    w = jnp.where(batch.target > 0, pos_weight, 1.0) * batch.node_mask
    return optax.sigmoid_binary_cross_entropy(logits, batch.target) * w


def proof_average(values, batch: GraphBatch):
    """(1/G) Σ_g mean over g's nodes of `values` (zero on padding); graph slot G is the padding graph."""
    g = batch.graph_mask.shape[0]
    per = jax.ops.segment_sum(values, batch.node_graph, num_segments=g)
    count = jax.ops.segment_sum(batch.node_mask, batch.node_graph, num_segments=g)
    return jnp.sum(per / jnp.maximum(count, 1.0) * batch.graph_mask) / jnp.maximum(batch.graph_mask.sum(), 1.0)


def metrics(logits, batch: GraphBatch):
    g = batch.graph_mask.shape[0]
    right = ((logits > 0) == (batch.target > 0.5)).astype(jnp.float32) * batch.node_mask
    wrong = jax.ops.segment_sum(batch.node_mask - right, batch.node_graph, num_segments=g)
    return dict(node_right=right.sum(), nodes=batch.node_mask.sum(),
                proof_right=jnp.sum((wrong == 0) * batch.graph_mask), proofs=batch.graph_mask.sum())


@partial(jax.jit, static_argnums=(0, 1))
def train_step(cfg: Config, vocab: int, params, opt_state, batch: GraphBatch):
    def loss_fn(p):
        logits = model(cfg, vocab).apply(p, batch)
        return proof_average(node_loss(logits, batch, cfg.pos_weight), batch), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer(cfg).update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, dict(loss=loss, **metrics(logits, batch))


@partial(jax.jit, static_argnums=(0, 1))
def predict(cfg: Config, vocab: int, params, batch: GraphBatch):
    logits = model(cfg, vocab).apply(params, batch)
    return logits, metrics(logits, batch)
