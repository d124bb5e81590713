"""Graph networks on padded batches: GraphSAGE message passing with `jax.ops.segment_sum`.

GraphSAGE (Hamilton, Ying & Leskovec, NeurIPS 2017) with the mean aggregator, in the form of PyTorch Geometric's
`SAGEConv` that REFACTOR uses (jinpz/refactor `model.py`, class GraphSAGE):

    h_i' = relu( W_self h_i + W_neigh * (1/|N(i)|) Σ_{j ∈ N(i)} h_j )        (N(i): in-neighbours of i)

Node inputs are bags of words: x_i = Σ_{w ∈ node i} W4 W3 E[w] (the reference's summed embeddings with its
`mlp_after_embed` linear pair), then `num_layers` SAGE layers, a hidden relu layer and one logit per node.

Batching: a batch is several graphs concatenated into fixed budgets of nodes, edges and words (`Budget`), with
masks; padding nodes have no edges and no words, padding edges and words have mask 0 and point at slot 0, so
they add nothing to any real node. Training therefore compiles once per budget in use, not per batch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Budget(NamedTuple):
    nodes: int
    edges: int
    words: int


class GraphBatch(NamedTuple):
    words: jax.Array        # [W] vocabulary ids
    word_node: jax.Array    # [W] node of each word
    word_mask: jax.Array    # [W] 1 for real words
    senders: jax.Array      # [E]
    receivers: jax.Array    # [E]
    edge_mask: jax.Array    # [E]
    node_mask: jax.Array    # [N] 1 for real nodes
    node_graph: jax.Array   # [N] graph of each node (padding nodes: the padding graph slot)
    graph_mask: jax.Array   # [G] 1 for real graphs
    target: jax.Array       # [N] 0/1 (0 on padding)


def budgets_for(max_nodes: int, max_words_per_node: float, graphs: int, tiers: Sequence[int] = (1, 2, 4, 8)):
    """A few budgets: nodes = tier * max_nodes/8 ... up to max_nodes, edges twice nodes (both directions)."""
    out = []
    for t in tiers:
        n = int(np.ceil(max_nodes * t / tiers[-1])) + 1
        out.append(Budget(n, 2 * n, int(np.ceil(n * max_words_per_node))))
    return out


def pad_batch(graphs: Sequence[dict], budgets: Sequence[Budget], num_graphs: int, bidirectional: bool = True):
    """Pack `graphs` (each: words per node, edges (child, parent), target) into the smallest budget that fits.
    Edges are used in both directions when `bidirectional` (the reference's default 'bi')."""
    n = sum(len(g["target"]) for g in graphs)
    e = sum(len(g["edges"]) for g in graphs) * (2 if bidirectional else 1)
    w = sum(sum(len(x) for x in g["words"]) for g in graphs)
    if len(graphs) > num_graphs:
        raise ValueError(f"{len(graphs)} graphs in a batch of at most {num_graphs}")
    fits = [b for b in budgets if b.nodes > n and b.edges >= e and b.words >= w]
    if not fits:
        raise ValueError(f"a batch of {n} nodes, {e} edges, {w} words exceeds every budget {list(budgets)}")
    b = min(fits, key=lambda b: b.nodes)
    words, word_node, senders, receivers = [], [], [], []
    node_graph, target = [], []
    base = 0
    for gi, g in enumerate(graphs):
        for i, ws in enumerate(g["words"]):
            words.extend(ws); word_node.extend([base + i] * len(ws))
        ed = np.asarray(g["edges"], np.int64).reshape(-1, 2) + base
        senders.extend(ed[:, 0]); receivers.extend(ed[:, 1])
        if bidirectional:
            senders.extend(ed[:, 1]); receivers.extend(ed[:, 0])
        node_graph.extend([gi] * len(g["target"])); target.extend(g["target"])
        base += len(g["target"])

    def pad(x, size, dtype, fill=0):
        out = np.full(size, fill, dtype)
        out[:len(x)] = x
        return out

    return GraphBatch(
        words=pad(words, b.words, np.int32), word_node=pad(word_node, b.words, np.int32),
        word_mask=pad(np.ones(len(words)), b.words, np.float32),
        senders=pad(senders, b.edges, np.int32), receivers=pad(receivers, b.edges, np.int32),
        edge_mask=pad(np.ones(len(senders)), b.edges, np.float32),
        node_mask=pad(np.ones(n), b.nodes, np.float32),
        node_graph=pad(node_graph, b.nodes, np.int32, fill=num_graphs),
        graph_mask=pad(np.ones(len(graphs)), num_graphs + 1, np.float32),
        target=pad(target, b.nodes, np.float32))


class SAGELayer(nn.Module):
    features: int

    @nn.compact
    def __call__(self, h, senders, receivers, edge_mask):
        n = h.shape[0]
        msg = h[senders] * edge_mask[:, None]
        total = jax.ops.segment_sum(msg, receivers, num_segments=n)
        deg = jax.ops.segment_sum(edge_mask, receivers, num_segments=n)
        mean = total / jnp.maximum(deg, 1.0)[:, None]
        return nn.Dense(self.features, name="self")(h) + nn.Dense(self.features, use_bias=False, name="neigh")(mean)


class NodeClassifier(nn.Module):
    """GraphSAGE node classifier over bag-of-words nodes; returns one logit per node slot."""

    vocab: int
    embed_dim: int = 128
    hidden: int = 256
    num_layers: int = 10

    @nn.compact
    def __call__(self, batch: GraphBatch):
        n = batch.node_mask.shape[0]
        e = nn.Embed(self.vocab, self.embed_dim)(batch.words)
        e = nn.Dense(self.embed_dim)(nn.Dense(self.hidden)(e))            # the reference's lin3, lin4
        x = jax.ops.segment_sum(e * batch.word_mask[:, None], batch.word_node, num_segments=n)
        for i in range(self.num_layers):
            x = nn.relu(SAGELayer(self.hidden, name=f"sage{i}")(x, batch.senders, batch.receivers, batch.edge_mask))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)[:, 0]
