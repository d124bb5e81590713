"""The PyTorch Geometric side of benchmarks/refactor_pyg.py, run in its own venv (benchmarks/.venv-pyg).

The same network as nets/graph.py's `NodeClassifier` and the same training step as algos/refactor.py's
`train_step`, written with torch and PyG's `SAGEConv` (mean aggregator; its `lin_l` with bias on the neighbour
mean, `lin_r` without bias on the node itself: ours' "neigh" and "self" with the bias on the other side, the same
function class): summed word embeddings through two linear layers, `num_layers` SAGEConv + relu, a hidden relu
layer, one logit per node; BCE averaged per proof; Adam with coupled L2 (`torch.optim.Adam(weight_decay=...)`,
as optax's add_decayed_weights + adam); node and proof accuracy computed each step, as ours does.

Batches are PyG's own kind: the graphs of a batch concatenated with no padding (what `Batch.from_data_list`
builds), read from the .npz the parent wrote, so both sides step on the same graphs in the same order.

Protocol: JSON lines on stdin, one JSON line back per request on stdout. {"cmd": "setup", "batches": path,
"config": {...}, "threads": n} builds the model from the parent's initial parameters (saved in the same file),
returns its logits on the first batch (the parent checks they are ours) and runs one warm-up pass; n > 0 sets
torch's intra-op threads. {"cmd": "time"} runs one pass over all batches (forward, backward, Adam step, loss read
back each step as the training loop does) and returns its wall and process CPU seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np
import torch
import torch_geometric
from torch import nn
from torch_geometric.nn import SAGEConv


class NodeClassifier(nn.Module):
    def __init__(self, vocab: int, embed_dim: int, hidden: int, num_layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed_dim)
        self.lin3, self.lin4 = nn.Linear(embed_dim, hidden), nn.Linear(hidden, embed_dim)
        self.convs = nn.ModuleList(SAGEConv(embed_dim if i == 0 else hidden, hidden, aggr="mean")
                                   for i in range(num_layers))
        self.hidden, self.out = nn.Linear(hidden, hidden), nn.Linear(hidden, 1)

    def forward(self, words, word_node, edge_index, num_nodes: int):
        e = self.lin4(self.lin3(self.embed(words)))
        x = torch.zeros(num_nodes, e.shape[1], dtype=e.dtype).index_add_(0, word_node, e)
        for conv in self.convs:
            x = torch.relu(conv(x, edge_index))
        return self.out(torch.relu(self.hidden(x)))[:, 0]


def step_fn(model, opt):
    def step(b):
        logits = model(b["words"], b["word_node"], b["edge_index"], b["num_nodes"])
        per_node = nn.functional.binary_cross_entropy_with_logits(logits, b["target"], reduction="none")
        per_graph = torch.zeros(b["num_graphs"]).index_add_(0, b["node_graph"], per_node) / b["graph_sizes"]
        loss = per_graph.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            wrong = ((logits > 0) != (b["target"] > 0.5)).float()
            node_right = b["num_nodes"] - wrong.sum()
            proof_right = (torch.zeros(b["num_graphs"]).index_add_(0, b["node_graph"], wrong) == 0).sum()
        return loss.item(), float(node_right), int(proof_right)
    return step


def load_ours(model: NodeClassifier, z) -> None:
    """Copy our flax parameters (saved by the parent as `p/<module>/<name>`) into the torch model, so both sides
    start from the same weights. flax's Dense kernel is torch's weight transposed; flax numbers the unnamed
    Dense layers in the order they are built: Dense_0 = lin4, Dense_1 = lin3, Dense_2 = hidden, Dense_3 = out.
    A SAGE layer's `self` (with bias) and `neigh` are SAGEConv's `lin_r` and `lin_l` (with the bias there)."""
    def put(dst, key, transpose=True):
        x = torch.from_numpy(np.asarray(z[f"p/{key}"], np.float32))
        dst.data.copy_(x.T if transpose else x)

    with torch.no_grad():
        put(model.embed.weight, "Embed_0/embedding", transpose=False)
        for lin, name in ((model.lin4, "Dense_0"), (model.lin3, "Dense_1"), (model.hidden, "Dense_2"),
                          (model.out, "Dense_3")):
            put(lin.weight, f"{name}/kernel"); put(lin.bias, f"{name}/bias", transpose=False)
        for i, conv in enumerate(model.convs):
            put(conv.lin_r.weight, f"sage{i}/self/kernel"); put(conv.lin_l.bias, f"sage{i}/self/bias", False)
            put(conv.lin_l.weight, f"sage{i}/neigh/kernel")


def load_batches(path: str) -> list:
    z = np.load(path)
    out = []
    for i in range(int(z["count"])):
        g = z[f"b{i}_node_graph"]
        out.append(dict(words=torch.from_numpy(z[f"b{i}_words"]).long(),
                        word_node=torch.from_numpy(z[f"b{i}_word_node"]).long(),
                        edge_index=torch.from_numpy(np.stack([z[f"b{i}_senders"], z[f"b{i}_receivers"]])).long(),
                        node_graph=torch.from_numpy(g).long(), target=torch.from_numpy(z[f"b{i}_target"]).float(),
                        num_nodes=len(g), num_graphs=int(g.max()) + 1,
                        graph_sizes=torch.from_numpy(np.bincount(g)).float()))
    return out


def setup(msg) -> dict:
    cfg = msg["config"]
    if msg.get("threads"):
        torch.set_num_threads(int(msg["threads"]))
    torch.manual_seed(0)
    model = NodeClassifier(cfg["vocab"], cfg["embed_dim"], cfg["hidden"], cfg["num_layers"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    batches = load_batches(msg["batches"])
    load_ours(model, np.load(msg["batches"]))
    with torch.no_grad():
        b = batches[0]
        first_logits = model(b["words"], b["word_node"], b["edge_index"], b["num_nodes"]).numpy().tolist()
    step = step_fn(model, opt)
    t = time.time()
    for b in batches:
        step(b)
    return dict(step=step, batches=batches, warmup_s=time.time() - t, first_logits=first_logits,
                params=sum(p.numel() for p in model.parameters()))


def timed_pass(prog) -> dict:
    c, t = time.process_time(), time.perf_counter()
    losses = [prog["step"](b)[0] for b in prog["batches"]]
    return dict(seconds=time.perf_counter() - t, cpu_seconds=time.process_time() - c, last_loss=losses[-1])


def main():
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    prog = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "setup":
                prog = setup(msg)
                reply = dict(warmup_s=prog["warmup_s"], params=prog["params"], first_logits=prog["first_logits"],
                             torch=torch.__version__,
                             torch_geometric=torch_geometric.__version__, threads=torch.get_num_threads())
            elif msg["cmd"] == "time":
                reply = timed_pass(prog)
            else:
                reply = {"error": f"unknown command {msg['cmd']!r}"}
        except Exception:
            reply = {"error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
