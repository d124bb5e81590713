"""REFACTOR training throughput: our GraphSAGE (nets/graph.py, JAX) next to PyTorch Geometric's SAGEConv.

Both sides train the same network (`NodeClassifier`: summed word embeddings through two linear layers,
`num_layers` mean-aggregator SAGE layers + relu, a hidden relu layer, one logit per node) with the same step
(BCE averaged per proof, Adam with coupled L2, node/proof accuracy) from the same initial weights (ours, copied
into the torch model; their logits on the first batch must agree), on the same batches of the real dataset:
the random split's training graphs of the propositional part of set.mm (`experiments/refactor.py`'s cache,
built in ~25 s when absent), shuffled with seed 0, cut into batches of `graphs_per_batch` graphs.

- ours: `algos.refactor.train_step` (one `jit`), each batch padded by `nets.graph.pad_batch` into the smallest of
  the experiment's seven budgets (`experiments.refactor.padding_budgets`); every budget is compiled before timing
  (compile time reported apart) and the padded batches are put on the device beforehand.
- PyG: `benchmarks/refactor_pyg_worker.py`, torch + `torch_geometric.nn.SAGEConv`, in its own venv
  (`benchmarks/.venv-pyg`, `make bench-pyg`), driven over a pipe; its batches are the same graphs concatenated
  without padding (PyG's own batching), built beforehand; one untimed warm-up pass.

Each timed round is one pass over the batches by each side, one after the other (the order alternates), so load
from other jobs on a shared machine hits both alike; graphs/s are medians over rounds, the ratio is the median of
the per-round ratios. Process CPU time (user + system, all threads) is reported too. Both sides do one host
round trip per step (the loss read back), as the training loop does.

    make bench-pyg            # builds benchmarks/.venv-pyg, runs the defaults and the one-thread run below
    python benchmarks/refactor_pyg.py --sizes cpu --rounds 3 --batches 20 --json runs/bench_refactor_pyg.json
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        python benchmarks/refactor_pyg.py --torch-threads 1     # both sides on one thread

Threads: on a loaded 2-core machine torch's default of one intra-op thread per core can be several times slower
than one thread (its workers wait on each other while other jobs hold the cores), so the one-thread run is the
fairer figure there; XLA_FLAGS as above keeps ours on one thread too. Both runs are in RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from algos import refactor as rf  # noqa: E402
from benchmarks.peer_worker import PeerWorker  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from envs.metamath import cache, parse  # noqa: E402
from experiments import refactor as exp  # noqa: E402
from nets.graph import pad_batch  # noqa: E402

PYG_PYTHON = REPO / "benchmarks" / ".venv-pyg" / "bin" / "python"
# The experiment's CPU defaults (RESULTS.md's REFACTOR runs) and the reference's sizes (jinpz/refactor).
SIZES = {"cpu": rf.Config(embed_dim=64, hidden=64, num_layers=5, graphs_per_batch=8),
         "reference": rf.Config()}


def real_batches(data, cfg: rf.Config, count: int, seed: int = 0) -> list:
    """`count` batches of graph dicts (cache.graph) from the random split's training part, shuffled."""
    idx = np.random.default_rng(seed).permutation(np.flatnonzero(data["split_random"] == 0))
    n = cfg.graphs_per_batch
    return [[cache.graph(data, g) for g in idx[s:s + n]] for s in range(0, min(count * n, len(idx) - n + 1), n)]


def write_unpadded(path: str, batches: list, params) -> dict:
    """The batches as PyG would concatenate them (edges both ways, as ours), and our initial parameters
    (`p/<module>/<name>`), for the worker; returns the real sizes."""
    arrays, nodes, edges = {"count": np.asarray(len(batches))}, [], []
    for keys, x in jax.tree_util.tree_flatten_with_path(params["params"])[0]:
        arrays["p/" + "/".join(k.key for k in keys)] = np.asarray(x)
    for i, graphs in enumerate(batches):
        words, word_node, snd, rcv, node_graph, target, base = [], [], [], [], [], [], 0
        for gi, g in enumerate(graphs):
            for j, ws in enumerate(g["words"]):
                words.extend(ws); word_node.extend([base + j] * len(ws))
            ed = np.asarray(g["edges"], np.int64).reshape(-1, 2) + base
            snd.extend(ed[:, 0]); rcv.extend(ed[:, 1]); snd.extend(ed[:, 1]); rcv.extend(ed[:, 0])
            node_graph.extend([gi] * len(g["target"])); target.extend(g["target"])
            base += len(g["target"])
        for k, v, dt in (("words", words, np.int64), ("word_node", word_node, np.int64), ("senders", snd, np.int64),
                         ("receivers", rcv, np.int64), ("node_graph", node_graph, np.int64),
                         ("target", target, np.float32)):
            arrays[f"b{i}_{k}"] = np.asarray(v, dt)
        nodes.append(base); edges.append(len(snd))
    np.savez(path, **arrays)
    return dict(nodes=nodes, edges=edges)


def PygWorker(python: pathlib.Path, log_path: str) -> PeerWorker:
    """PyTorch Geometric in its own venv: benchmarks/refactor_pyg_worker.py."""
    if not python.exists():
        raise SystemExit(f"{python} not found: build the PyG venv with `make bench-pyg` "
                         "(or pass --pyg-python /path/to/python with torch and torch_geometric)")
    return PeerWorker([str(python), str(REPO / "benchmarks" / "refactor_pyg_worker.py")], REPO, log_path, "PyG")


def ours(cfg: rf.Config, vocab: int, padded: list, params):
    """(timed pass, compile seconds): `train_step` compiled for every budget in `padded` (the compile time
    includes one step per budget), starting from `params`."""
    opt = rf.optimizer(cfg).init(params)
    t = time.time()
    seen = set()
    for b in padded:                      # one compile per budget (and one step), before timing
        if b.node_mask.shape not in seen:
            seen.add(b.node_mask.shape)
            jax.block_until_ready(rf.train_step(cfg, vocab, params, opt, b))
    compile_s = time.time() - t
    state = [params, opt]

    def timed_pass():
        c, t = time.process_time(), time.perf_counter()
        p, o = state
        for b in padded:
            p, o, m = rf.train_step(cfg, vocab, p, o, b)
            loss = float(m["loss"])
        state[:] = [p, o]
        return dict(seconds=time.perf_counter() - t, cpu_seconds=time.process_time() - c, last_loss=loss)

    return timed_pass, compile_s


def compare(name: str, cfg: rf.Config, data, vocab: int, budgets: list, args, tmp: str) -> dict:
    graphs = real_batches(data, cfg, args.batches)
    n_graphs = sum(len(b) for b in graphs)
    padded = [jax.device_put(pad_batch(b, budgets, cfg.graphs_per_batch)) for b in graphs]
    params, _ = rf.init(cfg, vocab, jax.random.PRNGKey(0), padded[0])
    n_ours = sum(x.size for x in jax.tree_util.tree_leaves(params))
    first = np.asarray(rf.predict(cfg, vocab, params, padded[0])[0])[:sum(len(g["target"]) for g in graphs[0])]
    path = os.path.join(tmp, f"batches_{name}.npz")
    sizes = write_unpadded(path, graphs, params)
    pad_nodes = sum(int(b.node_mask.shape[0]) for b in padded)
    pad_edges = sum(int(b.senders.shape[0]) for b in padded)
    timed_ours, compile_s = ours(cfg, vocab, padded, params)
    worker = PygWorker(pathlib.Path(args.pyg_python), os.path.join(tmp, f"pyg_{name}.log"))
    try:
        info = worker.call(cmd="setup", batches=path, config=dict(dataclasses.asdict(cfg), vocab=vocab),
                           threads=args.torch_threads)
        gap = float(np.max(np.abs(np.asarray(info["first_logits"]) - first)))
        if gap > 1e-3 * max(1.0, float(np.max(np.abs(first)))):
            raise RuntimeError(f"[{name}] the two networks differ on the first batch from the same weights: "
                               f"max |logit difference| {gap:.3g}")
        rounds = []
        for r in range(args.rounds):
            first, second = ("ours", "pyg") if r % 2 == 0 else ("pyg", "ours")
            got = {}
            for side in (first, second):
                got[side] = timed_ours() if side == "ours" else worker.call(cmd="time")
            rounds.append(got)
            print(f"  [{name}] round {r + 1}: ours {n_graphs / got['ours']['seconds']:.1f} graphs/s, "
                  f"PyG {n_graphs / got['pyg']['seconds']:.1f} graphs/s", flush=True)
    finally:
        worker.close()
    med = lambda xs: statistics.median(xs)  # noqa: E731
    out = dict(config=dataclasses.asdict(cfg), graphs_per_round=n_graphs, batches=len(graphs),
               real_nodes=sum(sizes["nodes"]), real_edges=sum(sizes["edges"]), padded_nodes=pad_nodes,
               padded_edges=pad_edges, budgets_used=len({b.node_mask.shape for b in padded}),
               ours_compile_s=compile_s, ours_params=int(n_ours), pyg_params=info["params"],
               same_weights_max_logit_gap=gap,
               pyg_warmup_s=info["warmup_s"], torch=info["torch"], torch_geometric=info["torch_geometric"],
               torch_threads=info["threads"], rounds=rounds)
    for side in ("ours", "pyg"):
        out[f"{side}_graphs_per_s"] = med([n_graphs / r[side]["seconds"] for r in rounds])
        out[f"{side}_graphs_per_cpu_s"] = med([n_graphs / r[side]["cpu_seconds"] for r in rounds])
    out["ratio_ours_over_pyg"] = med([r["pyg"]["seconds"] / r["ours"]["seconds"] for r in rounds])
    out["ratio_ours_over_pyg_cpu"] = med([r["pyg"]["cpu_seconds"] / r["ours"]["cpu_seconds"] for r in rounds])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["cpu", "reference"], choices=list(SIZES))
    parser.add_argument("--batches", type=int, default=40, help="batches per timed pass")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pyg-python", default=str(PYG_PYTHON))
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default, one per core)")
    parser.add_argument("--json", default="runs/bench_refactor_pyg.json")
    args = parser.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    machine = describe()
    eargs = exp.Args()
    path = exp.database_path(eargs)
    data, _ = exp.dataset(eargs, path, parse(path), print)
    vocab = len(data["header"]["vocab"])
    results = dict(machine_before=machine, xla_flags=os.environ.get("XLA_FLAGS", ""),
                   torch_threads_asked=args.torch_threads, sizes={})
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes:
            cfg = SIZES[name]
            res = compare(name, cfg, data, vocab, exp.padding_budgets(data, cfg.graphs_per_batch), args, tmp)
            results["sizes"][name] = res
            print(f"[{name}] embed {cfg.embed_dim}, hidden {cfg.hidden}, {cfg.num_layers} layers, "
                  f"{cfg.graphs_per_batch} graphs/batch, {res['batches']} batches: ours "
                  f"{res['ours_graphs_per_s']:.1f} graphs/s (compile {res['ours_compile_s']:.1f}s, "
                  f"{res['budgets_used']} budgets), PyG {res['pyg_graphs_per_s']:.1f} graphs/s; ours/PyG "
                  f"{res['ratio_ours_over_pyg']:.2f} (CPU time: {res['ratio_ours_over_pyg_cpu']:.2f}); padding: "
                  f"{res['padded_nodes'] / res['real_nodes']:.2f}x nodes, "
                  f"{res['padded_edges'] / res['real_edges']:.2f}x edges; params ours {res['ours_params']} / PyG "
                  f"{res['pyg_params']}", flush=True)
    results["machine_after"] = describe()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"load average before {machine['load_average']}, after {results['machine_after']['load_average']}; "
          f"wrote {args.json}")


if __name__ == "__main__":
    main()
