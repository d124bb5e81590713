"""The expansion dataset on disk: one `.npz` with ragged arrays and a JSON header, and its validating loader.

Node features follow the reference (jinpz/refactor `get_expression_indices_update_word_dict`): a node is the
bag of its expression's symbols (one word per math token) and its label's characters (one word per character);
the model sums their embeddings. Word 0 is reserved (padding). Arrays, for G graphs, N nodes, E edges, W words:

    node_offsets [G+1]   graph g owns nodes node_offsets[g]:node_offsets[g+1]
    edge_offsets [G+1]   and edges edge_offsets[g]:edge_offsets[g+1]
    edges [E, 2]         (child, parent), indices local to the graph
    word_offsets [N+1]   node n owns words[word_offsets[n]:word_offsets[n+1]]
    words [W]            vocabulary ids (int32)
    target [N]           1 for inlined nodes
    split_random [G], split_grouped [G]   0 train, 1 valid, 2 test, -1 left out by a cap (in that split)
    header               JSON: version, vocabulary, source file (path, size), caps, seed, the number of
                         expansions before the per-theorem caps, per-graph (P, T, use)

experiments/refactor.py stores only the expansions that some split keeps: it counts them first with
`expand.candidates`, caps them, and expands only those (all of set.mm has far more than fit in memory).
"""

from __future__ import annotations

import json
import os
from array import array

import numpy as np

from envs.metamath.database import Database
from envs.metamath.expand import CAPS, SEED, Example, splits

VERSION = 2          # 2: only the expansions the per-theorem caps keep are stored
KEYS = ("node_offsets", "edge_offsets", "edges", "word_offsets", "words", "target", "split_random",
        "split_grouped", "header")


class DatasetError(ValueError):
    """A cache file that is missing, stale or malformed; the message names the file and the field."""


def vocabulary(db: Database) -> list:
    syms = sorted(db.constants | db.variables)
    chars = sorted({ch for lab in db.statements for ch in lab})
    return ["<pad>"] + ["t:" + s for s in syms] + ["c:" + c for c in chars]


def node_words(label, expr, index) -> list:
    return [index["t:" + s] for s in expr] + [index["c:" + c] for c in label]


def build(db: Database, exs, source: str, caps: dict = CAPS, seed: int = SEED, split: dict | None = None,
          expansions: int | None = None) -> dict:
    """The cache arrays from an iterable of Examples, consumed once and held only as flat int arrays (a Python
    object per node would not fit for all of set.mm). `split`: {'random': s, 'grouped': s} for exactly these
    examples, when the caller capped them before expanding (`expand.candidates`); otherwise computed here.
    `expansions`: how many there were before that cap (recorded in the header)."""
    vocab = vocabulary(db)
    index = {w: i for i, w in enumerate(vocab)}
    node_off, edge_off, word_off = array("q", [0]), array("q", [0]), array("q", [0])
    edges, words, target, graphs = array("i"), array("i"), array("b"), []
    for ex in exs:
        for lab, expr, t in zip(ex.tree.labels, ex.tree.exprs, ex.target):
            words.extend(node_words(lab, expr, index)); word_off.append(len(words)); target.append(t)
        for pair in ex.tree.edges():
            edges.extend(pair)
        node_off.append(len(target)); edge_off.append(len(edges) // 2)
        graphs.append([ex.proof, ex.theorem, ex.use])
    sp = split if split is not None else splits([t for _, t, _ in graphs], caps, seed)
    if any(len(sp[k]) != len(graphs) for k in ("random", "grouped")):
        raise ValueError(f"split has {len(sp['random'])} / {len(sp['grouped'])} entries for {len(graphs)} examples")
    header = dict(version=VERSION, vocab=vocab, source=os.path.abspath(source), source_size=os.path.getsize(source),
                  caps=caps, seed=seed, expansions=len(graphs) if expansions is None else expansions,
                  graphs=graphs)
    return dict(node_offsets=np.frombuffer(node_off, np.int64), edge_offsets=np.frombuffer(edge_off, np.int64),
                edges=np.frombuffer(edges, np.int32).reshape(-1, 2), word_offsets=np.frombuffer(word_off, np.int64),
                words=np.frombuffer(words, np.int32), target=np.frombuffer(target, np.int8),
                split_random=np.asarray(sp["random"], np.int8), split_grouped=np.asarray(sp["grouped"], np.int8),
                header=header)


def save(path: str, data: dict) -> None:
    tmp = path + ".tmp.npz"
    arrays = {k: v for k, v in data.items() if k != "header"}
    if "header" in data:
        arrays["header"] = np.asarray(json.dumps(data["header"]))
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)     # never leaves a half-written cache under the real name


def load(path: str, source: str | None = None) -> dict:
    """Load and check a cache; `source`, when given, must be the .mm file it was built from (same path, size)."""
    if not os.path.exists(path):
        raise DatasetError(f"{path}: no such dataset file (build it with experiments/refactor.py --rebuild)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as err:  # a truncated or foreign file
        raise DatasetError(f"{path}: not a readable .npz dataset ({err})") from err
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise DatasetError(f"{path}: missing field(s) {missing}; expected {list(KEYS)}")
    header = json.loads(str(data["header"]))
    if header.get("version") != VERSION:
        raise DatasetError(f"{path}: header.version is {header.get('version')}, expected {VERSION}: rebuild it")
    if source is not None and (header["source"] != os.path.abspath(source)
                               or header["source_size"] != os.path.getsize(source)):
        raise DatasetError(f"{path}: built from {header['source']} ({header['source_size']} bytes), not from "
                           f"{source}: rebuild it")
    g = len(header["graphs"])
    no, eo, wo = data["node_offsets"], data["edge_offsets"], data["word_offsets"]
    n, e = len(data["target"]), len(data["edges"])

    def bad(field, what):
        raise DatasetError(f"{path}: field '{field}' {what}")

    for name, off, total in (("node_offsets", no, n), ("edge_offsets", eo, e), ("word_offsets", wo,
                                                                                 len(data["words"]))):
        if off[0] != 0 or off[-1] != total or np.any(np.diff(off) < 0):
            bad(name, f"is not a non-decreasing offset array from 0 to {total}")
    if len(no) != g + 1 or len(eo) != g + 1 or len(wo) != n + 1:
        bad("node_offsets/edge_offsets/word_offsets", f"lengths do not match {g} graphs and {n} nodes")
    if e and (data["edges"].min() < 0 or np.any(data["edges"].max(1) >= np.repeat(np.diff(no), np.diff(eo)))):
        bad("edges", "has an index outside its graph")
    if len(data["words"]) and (data["words"].min() < 1 or data["words"].max() >= len(header["vocab"])):
        bad("words", f"has ids outside 1..{len(header['vocab']) - 1}")
    if not set(np.unique(data["target"])) <= {0, 1}:
        bad("target", "is not 0/1")
    for k in ("split_random", "split_grouped"):
        if len(data[k]) != g or not set(np.unique(data[k])) <= {-1, 0, 1, 2}:
            bad(k, f"is not {g} values in {{-1, 0, 1, 2}}")
    data["header"] = header
    return data


def graph(data: dict, g: int) -> dict:
    """One graph's arrays (nodes local): words per node (list of arrays), edges, target."""
    a, b = data["node_offsets"][g], data["node_offsets"][g + 1]
    wo = data["word_offsets"]
    return dict(words=[data["words"][wo[i]:wo[i + 1]] for i in range(a, b)],
                edges=data["edges"][data["edge_offsets"][g]:data["edge_offsets"][g + 1]],
                target=data["target"][a:b])


__all__ = ["Example", "build", "save", "load", "graph", "DatasetError", "vocabulary"]
