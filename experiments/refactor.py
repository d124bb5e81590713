"""REFACTOR on Metamath: build the expansion dataset, train the GraphSAGE extractor, evaluate, extract theorems.

    make metamath                                    # set.mm and the C verifier (Debian packages), once
    python experiments/refactor.py                   # propositional part of set.mm, both splits, CPU defaults
    python experiments/refactor.py --epochs 40 --model.hidden 256 --model.num-layers 10   # the reference's net
    python experiments/refactor.py --full            # all of set.mm (benchmarks/RESULTS.md has the figures)

Steps: (1) set.mm is cut after `xorexmid` like the reference's propositional.mm (envs/metamath/setmm.py) into
`data/metamath/propositional.mm`; (2) every proof is parsed and verified (times printed); (3) the expansion
dataset (envs/metamath/expand.py) is built once and cached to `data/metamath/<name>.npz` (validated on load,
rebuilt with --rebuild); (4) for each split (random; grouped by the inlined theorem = unseen theorems) the
model trains on the train part and is evaluated on valid and test: node accuracy and proof accuracy (every node
of a graph right); (5) with --extract (`envs/metamath/extract.py`) the trained model predicts on every
ORIGINAL proof of the database, as the paper's section 4.2; candidates are verified, deduplicated, instances of
existing assertions and of other new candidates dropped, the proofs refactored and the refactored database written and re-verified by our
verifier and by the C `metamath`). Written to --out: `results.json`, the test predictions
per split (`test_predictions_<split>.npz`), `refactored_<split>.mm`.

CPU defaults depart from the reference's (embed 128, hidden 256, 10 layers, 4 graphs per batch, up to 500
epochs on a GPU): embed 64, hidden 64, 5 layers, 8 graphs per batch, a few epochs, to fit a contended 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402
import tyro  # noqa: E402

from algos import refactor as rf  # noqa: E402
from envs.metamath import cache, parse, setmm  # noqa: E402
from envs.metamath import extract as ex  # noqa: E402
from envs.metamath.expand import candidates, example, kept_splits, trees  # noqa: E402
from envs.metamath.verify import verify_all  # noqa: E402
from nets.graph import budgets_for, pad_batch  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    """REFACTOR: theorem extraction from Metamath proofs."""

    mm: str = ""
    """A .mm file to use as is (default: the propositional part of the installed set.mm)."""
    full: bool = False
    """Use all of set.mm instead of its propositional part."""
    data_dir: str = "data/metamath"
    """Where the cut database and the dataset cache live."""
    rebuild: bool = False
    """Rebuild the dataset cache even if a valid one exists."""
    splits: tuple[str, ...] = ("random", "grouped")
    """Which splits to train and evaluate on."""
    epochs: int = 6
    """Passes over the training graphs."""
    seed: int = 0
    """Model initialisation and batch order."""
    model: rf.Config = rf.Config(embed_dim=64, hidden=64, num_layers=5, graphs_per_batch=8)
    """Network and optimiser (the reference's values are the rf.Config defaults)."""
    out: str = "runs/refactor"
    """Output directory (results.json, params per split)."""
    extract: bool = False
    """Extract candidate theorems from the test predictions and verify them."""


def database_path(args: Args) -> str:
    if args.mm:
        return args.mm
    src = setmm.find_set_mm()
    if src is None:
        sys.exit(setmm.INSTALL_HINT)
    if args.full:
        return src
    os.makedirs(args.data_dir, exist_ok=True)
    dst = os.path.join(args.data_dir, "propositional.mm")
    if not os.path.exists(dst):
        setmm.truncate(src, dst)
    return dst


def dataset(args: Args, path: str, db, log):
    os.makedirs(args.data_dir, exist_ok=True)
    name = os.path.splitext(os.path.basename(path))[0]
    cpath = os.path.join(args.data_dir, f"{name}.npz")
    if not args.rebuild and os.path.exists(cpath):
        try:
            return cache.load(cpath, source=path), cpath
        except cache.DatasetError as err:
            log(f"rebuilding: {err}")
    t = time.time()
    stats = {}
    raw = trees(db)
    found = list(candidates(db, raw, stats=stats))               # (P, T, use): cheap, no expanded trees
    keep, split = kept_splits([theorem for _, theorem, _ in found])
    log(f"dataset: {len(found)} expansions within the caps (skipped {stats}), {len(keep)} kept by the "
        f"per-theorem caps ({time.time() - t:.1f}s); expanding them")
    exs = (example(db, raw, *found[i]) for i in tqdm.tqdm(keep, desc="expansions", unit="graph", mininterval=5))
    data = cache.build(db, exs, path, split=split, expansions=len(found))
    cache.save(cpath, data)
    log(f"dataset: {len(keep)} graphs, {len(data['target'])} nodes in {time.time() - t:.1f}s -> {cpath}")
    return cache.load(cpath, source=path), cpath


def padding_budgets(data, graphs_per_batch: int) -> list:
    """Seven node budgets up to the largest batch of `graphs_per_batch` graphs the dataset can make, words twice
    the mean per node (plus 8); the largest budget's words are the most any batch can have (the wordiest
    graphs together), so every batch fits one."""
    sizes = np.diff(data["node_offsets"])
    wsizes = np.diff(data["word_offsets"])
    graph_words = np.diff(data["word_offsets"][data["node_offsets"]])
    max_batch_nodes = int(np.sort(sizes)[-graphs_per_batch:].sum())
    budgets = budgets_for(max_batch_nodes, float(wsizes.mean() * 2 + 8), graphs_per_batch,
                          tiers=(1, 2, 4, 8, 16, 24, 32))
    most_words = int(np.sort(graph_words)[-graphs_per_batch:].sum())
    budgets[-1] = budgets[-1]._replace(words=max(budgets[-1].words, most_words))
    return budgets


def batches(data, idx, cfg, budgets, rng=None):
    idx = np.asarray(idx)
    if rng is not None:
        idx = rng.permutation(idx)
    for s in range(0, len(idx), cfg.graphs_per_batch):
        chunk = idx[s:s + cfg.graphs_per_batch]
        yield chunk, pad_batch([cache.graph(data, g) for g in chunk], budgets, cfg.graphs_per_batch)


def evaluate(cfg, vocab, params, data, idx, budgets):
    tot = dict(node_right=0.0, nodes=0.0, proof_right=0.0, proofs=0.0)
    preds = {}
    for chunk, b in batches(data, idx, cfg, budgets):
        logits, m = rf.predict(cfg, vocab, params, b)
        for k in tot:
            tot[k] += float(m[k])
        logits = np.asarray(logits)
        base = 0
        for g in chunk:
            n = int(data["node_offsets"][g + 1] - data["node_offsets"][g])
            preds[int(g)] = logits[base:base + n] > 0
            base += n
    return dict(node_acc=tot["node_right"] / max(tot["nodes"], 1), proof_acc=tot["proof_right"] / max(tot["proofs"], 1),
                graphs=int(tot["proofs"])), preds


def predict_trees(cfg, vocab, params, data, tlist, budgets):
    """Predicted node masks for plain proof trees (the database's own proofs, nothing inlined)."""
    index = {w: i for i, w in enumerate(data["header"]["vocab"])}
    out = []
    for s in range(0, len(tlist), cfg.graphs_per_batch):
        chunk = tlist[s:s + cfg.graphs_per_batch]
        gs = [dict(words=[cache.node_words(lab, e, index) for lab, e in zip(t.labels, t.exprs)],
                   edges=t.edges(), target=[0] * len(t)) for t in chunk]
        logits = np.asarray(rf.predict(cfg, vocab, params, pad_batch(gs, budgets, cfg.graphs_per_batch))[0])
        base = 0
        for t in chunk:
            out.append(logits[base:base + len(t)] > 0)
            base += len(t)
    return out


def extract(args, cfg, vocab, params, db, path, data, budgets, split, log):
    """The paper's section 4.2 on this database: predict on every original proof, build candidates, verify,
    deduplicate, refactor all proofs with the new theorems, write and re-verify the refactored database."""
    raw = trees(db)
    labels = list(raw)
    preds = predict_trees(cfg, vocab, params, data, [raw[p] for p in labels], budgets)
    cands = [c for p, m in zip(labels, preds) for c in ex.candidates(db, p, raw[p], m)]
    new, counts = ex.new_theorems(db, cands)
    db2, t2, added, report = ex.refactor(db, raw, new, prefix=f"rf{split[0]}")
    changed = [p for p in raw if t2[p] != raw[p]]
    before = sum(len(raw[p]) for p in raw)
    after = sum(len(t2[p]) for p in raw) + sum(len(t) for _, t in added.values())
    out_mm = os.path.join(args.out, f"refactored_{split}.mm")
    with open(path, encoding="utf-8") as fh:
        text = ex.write_refactored(fh.read(), db2, t2, added, changed)
    with open(out_mm, "w", encoding="utf-8") as fh:
        fh.write(text)
    ours = verify_all(parse(out_mm))
    res = dict(counts, proofs_changed=len(changed), nodes_before=before, nodes_after=after,
               ours_failing=sum(v is not None for v in ours.values()), ours_checked=len(ours),
               new_theorems=report, file=out_mm,
               mean_uses=float(np.mean([r["uses"] for r in report])) if report else 0.0)
    try:
        c = setmm.metamath_verify(out_mm)
        res.update(metamath_ok=c["ok"], metamath_failing=sorted(c["failed"]))
    except FileNotFoundError as err:
        res.update(metamath_ok=None, metamath_failing=str(err))
    brief = {k: v for k, v in counts.items() if k != "instance_examples"}
    log(f"[{split}] extraction: {brief}; {len(changed)} proofs refactored, nodes {before} -> {after} "
        f"(incl. new proofs); ours: {res['ours_failing']} failing of {len(ours)}, metamath ok: {res['metamath_ok']}")
    return res


def main(args: Args):
    os.makedirs(args.out, exist_ok=True)
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    path = database_path(args)
    t = time.time()
    db = parse(path)
    t_parse = time.time() - t
    t = time.time()
    ver = verify_all(db)
    t_verify = time.time() - t
    bad = [k for k, v in ver.items() if v]
    log(f"{path}: {len(db.statements)} statements, {len(ver)} $p; parse {t_parse:.1f}s, verify {t_verify:.1f}s, "
        f"{len(bad)} failing")
    data, cpath = dataset(args, path, db, log)
    vocab = len(data["header"]["vocab"])
    sizes = np.diff(data["node_offsets"])
    cfg = args.model
    budgets = padding_budgets(data, cfg.graphs_per_batch)
    results = dict(database=path, statements=len(db.statements), theorems=len(ver), failing=len(bad),
                   parse_s=t_parse, verify_s=t_verify, cache=cpath, graphs=int(len(sizes)),
                   mean_nodes=float(sizes.mean()), mean_positive=float(data["target"].mean()),
                   model=dataclasses.asdict(cfg), epochs=args.epochs, splits={})
    for split in args.splits:
        s = data[f"split_{split}"]
        tr, va, te = (np.flatnonzero(s == k) for k in (0, 1, 2))
        log(f"[{split}] train {len(tr)}, valid {len(va)}, test {len(te)} graphs")
        rng = np.random.default_rng(args.seed)
        first = next(batches(data, tr[:1], cfg, budgets))[1]
        params, opt = rf.init(cfg, vocab, jax.random.PRNGKey(args.seed), first)
        t = time.time()
        curve = []
        for ep in range(args.epochs):
            losses = []
            for _, b in tqdm.tqdm(batches(data, tr, cfg, budgets, rng), desc=f"[{split}] epoch {ep + 1}",
                                  total=-(-len(tr) // cfg.graphs_per_batch), unit="batch", mininterval=10):
                params, opt, m = rf.train_step(cfg, vocab, params, opt, b)
                losses.append(m["loss"])             # read back once per epoch: no host sync per step
            losses = jax.device_get(losses)
            ev, _ = evaluate(cfg, vocab, params, data, va, budgets)
            curve.append(dict(epoch=ep + 1, loss=float(np.mean(losses)), **{f"valid_{k}": v for k, v in ev.items()}))
            log(f"[{split}] epoch {ep + 1}: loss {np.mean(losses):.4f}, valid node {ev['node_acc']:.3f} proof "
                f"{ev['proof_acc']:.3f} ({time.time() - t:.0f}s)")
        train_s = time.time() - t
        out = dict(train_s=train_s, graphs_per_s=len(tr) * args.epochs / train_s, curve=curve)
        for name, idx in (("train", tr), ("valid", va), ("test", te)):
            out[name], preds = evaluate(cfg, vocab, params, data, idx, budgets)
            log(f"[{split}] {name}: node acc {out[name]['node_acc']:.4f}, proof acc {out[name]['proof_acc']:.4f} "
                f"({out[name]['graphs']} graphs)")
        if args.extract:
            out["extraction"] = extract(args, cfg, vocab, params, db, path, data, budgets, split, log)
        results["splits"][split] = out
        ids = np.asarray(sorted(preds), np.int64)
        np.savez_compressed(os.path.join(args.out, f"test_predictions_{split}.npz"), graphs=ids,
                            predicted=np.concatenate([preds[g] for g in ids]) if len(ids) else np.zeros(0, bool))
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    log(f"wrote {os.path.join(args.out, 'results.json')}")
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
