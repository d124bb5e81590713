"""REFACTOR's training data (Zhou et al., ICLR 2024, section 3.2): theorem expansion.

For a proof P and one step of P that applies a `$p` theorem T, T's own proof is inlined in place of that step:
T's proof tree with every expression put under the substitution σ of that step, and T's hypothesis leaves
replaced by the subtrees that proved the step's hypotheses in P. The inlined nodes (T's proof minus its
hypothesis leaves) are the positives (target 1); all other nodes are 0. A model that finds them has found T.

Caps as the reference (jinpz/refactor `theorem_expansion.py`): P and T proof trees at most 1000 nodes (`-rpm`),
expanded tree at most 1000 nodes (`-pm`), every node's string at most 512 symbols (`-nm`: expression tokens plus
label characters), at most 100 instances per T (`-mi`) before splitting and 10 per T in validation and test
(`-vmi`), seed 47, 80/10/10 splits random or grouped by T (the "unseen theorems" split).
Departure: expansions where T's proof uses hypotheses that are not mandatory for T (dummy variables) are
skipped (they are counted), so every expanded proof is a valid proof of P, re-checked by `verify.check_tree`.

`examples` builds every expansion; `candidates` names the same ones, from sizes alone, so that the caps per theorem
can be applied before anything is built (all of set.mm: 314531 expansions, 156489 kept).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from envs.metamath.database import Database
from envs.metamath.verify import ProofTree, proof_dag, substitute, subtree_sizes, unfold

CAPS = dict(raw_proof_max=1000, proof_max=1000, node_max=512, max_per_theorem=100, eval_max_per_theorem=10)
SEED = 47


@dataclasses.dataclass(frozen=True)
class Example:
    proof: str            # P
    theorem: str          # T, the inlined theorem
    use: int              # post-order index, in P's own tree, of the step that applied T
    tree: ProofTree       # the expanded tree
    target: tuple         # 1 for the inlined nodes


def trees(db: Database, max_nodes: int = CAPS["raw_proof_max"]) -> dict:
    """label -> proof tree for every $p whose tree has at most `max_nodes` nodes."""
    out = {}
    for st in db.theorems():
        tree = unfold(proof_dag(db, st), max_nodes)
        if tree is not None:
            out[st.label] = tree
    return out


def expand(db: Database, tree: ProofTree, use: int, inner: ProofTree, sizes: list | None = None):
    """Inline `inner` (the proof of the theorem applied at node `use` of `tree`). Returns (tree, target) or None
    when the inner proof uses non-mandatory hypotheses. `sizes`: `subtree_sizes(tree)`, if already computed."""
    size = sizes if sizes is not None else subtree_sizes(tree)
    thm = db.statements[tree.labels[use]]
    kids = tree.children[use]
    sigma = {db.statements[h].expr[1]: tree.exprs[k][1:] for h, k in zip(thm.hyps, kids)
             if db.statements[h].kind == "f"}
    arg_of = dict(zip(thm.hyps, kids))
    if any(db.statements[lab].kind in "fe" and lab not in arg_of for lab in inner.labels):
        return None
    labels, exprs, children, target = [], [], [], []

    def copy_subtree(root):          # a subtree of `tree`, appended in post-order; returns its new root
        lo = root - size[root] + 1
        base = len(labels)
        for j in range(lo, root + 1):
            labels.append(tree.labels[j]); exprs.append(tree.exprs[j])
            children.append(tuple(base + k - lo for k in tree.children[j])); target.append(0)
        return len(labels) - 1

    def inline():
        new = {}
        for j, lab in enumerate(inner.labels):
            if lab in arg_of:
                new[j] = copy_subtree(arg_of[lab])
            else:
                labels.append(lab); exprs.append(substitute(inner.exprs[j], sigma))
                children.append(tuple(new[k] for k in inner.children[j])); target.append(1)
                new[j] = len(labels) - 1
        return new[len(inner) - 1]

    new_of = {}
    first = use - size[use] + 1      # the use's strict descendants are first .. use - 1
    for j in range(len(tree)):
        if first <= j < use:
            continue                 # the use's own subtree is handled at the use
        if j == use:
            new_of[j] = inline()
            continue
        labels.append(tree.labels[j]); exprs.append(tree.exprs[j])
        children.append(tuple(new_of[k] for k in tree.children[j])); target.append(0)
        new_of[j] = len(labels) - 1
    return ProofTree(tuple(labels), tuple(exprs), tuple(children)), tuple(target)


def examples(db: Database, raw: dict, caps: dict = CAPS, stats: dict | None = None):
    """Every expansion within the caps, in database order (proofs, then use steps)."""
    stats = stats if stats is not None else {}
    for p, tree in raw.items():
        sizes = subtree_sizes(tree)
        for use, lab in enumerate(tree.labels):
            if db.statements[lab].kind != "p" or lab not in raw:
                continue
            out = expand(db, tree, use, raw[lab], sizes)
            if out is None:
                stats["dummy_hyps"] = stats.get("dummy_hyps", 0) + 1
                continue
            new, target = out
            if len(new) > caps["proof_max"]:
                stats["too_long"] = stats.get("too_long", 0) + 1
                continue
            if max(len(lb) + len(e) for lb, e in zip(new.labels, new.exprs)) > caps["node_max"]:
                stats["node_too_long"] = stats.get("node_too_long", 0) + 1
                continue
            yield Example(p, lab, use, new, target)


class _Inner:
    """What the caps need to know of a theorem T's proof, once per T: which hypothesis each leaf uses, and for
    each inlined node its label length, its expression length and how often each of T's variables occurs."""

    def __init__(self, db: Database, lab: str, tree: ProofTree):
        thm = db.statements[lab]
        pos = {h: i for i, h in enumerate(thm.hyps)}
        self.var_hyp = {db.statements[h].expr[1]: i for i, h in enumerate(thm.hyps) if db.statements[h].kind == "f"}
        self.dummy = any(db.statements[x].kind in "fe" and x not in pos for x in tree.labels)
        self.leaves = [pos[x] for x in tree.labels if x in pos]          # hypothesis index of each leaf use
        self.nodes = []                                                  # (fixed length, {hyp index: count})
        for x, e in zip(tree.labels, tree.exprs):
            if x in pos:
                continue
            counts = {}
            for sym in e:
                if sym in self.var_hyp:
                    counts[self.var_hyp[sym]] = counts.get(self.var_hyp[sym], 0) + 1
            self.nodes.append((len(x) + len(e) - sum(counts.values()), counts))


def candidates(db: Database, raw: dict, caps: dict = CAPS, stats: dict | None = None):
    """(P, T, use) of every expansion `examples` yields, in the same order and with the same `stats`, found
    from subtree sizes and symbol counts without building the expanded trees (sizes after substitution:
    every occurrence of a variable of T becomes the expression its floating hypothesis got, less the typecode).
    Building only the expansions the per-theorem caps keep is what lets all of set.mm fit in memory."""
    stats = stats if stats is not None else {}
    inner = {}
    for p, tree in raw.items():
        n, sizes = len(tree), subtree_sizes(tree)
        length = [len(lb) + len(e) for lb, e in zip(tree.labels, tree.exprs)]
        sub_max = list(length)                      # longest node string in each subtree
        for i, kids in enumerate(tree.children):
            for k in kids:
                sub_max[i] = max(sub_max[i], sub_max[k])
        before = [0] * (n + 1)                      # before[j]: longest among nodes 0 .. j - 1
        for j in range(n):
            before[j + 1] = max(before[j], length[j])
        after = [0] * (n + 1)                       # after[j]: longest among nodes j .. n - 1
        for j in range(n - 1, -1, -1):
            after[j] = max(after[j + 1], length[j])
        for use, lab in enumerate(tree.labels):
            if db.statements[lab].kind != "p" or lab not in raw:
                continue
            if lab not in inner:
                inner[lab] = _Inner(db, lab, raw[lab])
            t = inner[lab]
            if t.dummy:
                stats["dummy_hyps"] = stats.get("dummy_hyps", 0) + 1
                continue
            kids = tree.children[use]
            size = n - sizes[use] + len(t.nodes) + sum(sizes[kids[h]] for h in t.leaves)
            if size > caps["proof_max"]:
                stats["too_long"] = stats.get("too_long", 0) + 1
                continue
            sub_len = {h: len(tree.exprs[kids[h]]) - 1 for h in t.var_hyp.values()}   # |sigma(v)|
            longest = max(before[use - sizes[use] + 1], after[use + 1],
                          max((sub_max[kids[h]] for h in t.leaves), default=0),
                          max((fixed + sum(c * sub_len[h] for h, c in counts.items())
                               for fixed, counts in t.nodes), default=0))
            if longest > caps["node_max"]:
                stats["node_too_long"] = stats.get("node_too_long", 0) + 1
                continue
            yield p, lab, use


def example(db: Database, raw: dict, proof: str, theorem: str, use: int) -> Example:
    """The expansion `candidates` named by (proof, theorem, use)."""
    new, target = expand(db, raw[proof], use, raw[theorem])
    return Example(proof, theorem, use, new, target)


def cap_per_theorem(theorems, index, cap: int, rng: np.random.Generator):
    """A subset of `index` with at most `cap` entries per theorem, drawn without replacement, sorted."""
    by = {}
    for i in index:
        by.setdefault(theorems[i], []).append(i)
    keep = []
    for t in sorted(by):
        v = by[t]
        keep.extend(v if len(v) <= cap else rng.choice(v, cap, replace=False).tolist())
    return np.sort(np.asarray(keep, dtype=np.int64))


def splits(theorems, caps: dict = CAPS, seed: int = SEED) -> dict:
    """{'random': s, 'grouped': s} with s[i] in {0 train, 1 valid, 2 test, -1 dropped by a cap}."""
    theorems = list(theorems)
    n = len(theorems)
    rng = np.random.default_rng(seed)
    kept = cap_per_theorem(theorems, range(n), caps["max_per_theorem"], rng)
    out = {}
    for kind in ("random", "grouped"):
        r = np.random.default_rng(seed)
        s = np.full(n, -1, np.int8)
        if kind == "random":
            perm = r.permutation(kept)
            a, b = int(0.8 * len(perm)), int(0.9 * len(perm))
            s[perm[:a]], s[perm[a:b]], s[perm[b:]] = 0, 1, 2
        else:
            groups = sorted({theorems[i] for i in kept})
            perm = [groups[i] for i in r.permutation(len(groups))]
            a, b = int(0.8 * len(perm)), int(0.9 * len(perm))
            part = {t: (0 if i < a else 1 if i < b else 2) for i, t in enumerate(perm)}
            for i in kept:
                s[i] = part[theorems[i]]
        for k in (1, 2):
            idx = np.flatnonzero(s == k)
            keep = cap_per_theorem(theorems, idx, caps["eval_max_per_theorem"], r)
            s[np.setdiff1d(idx, keep)] = -1
        out[kind] = s
    return out


def kept_splits(theorems, caps: dict = CAPS, seed: int = SEED):
    """(indices that some split keeps, `splits` restricted to them): what is worth expanding and storing."""
    sp = splits(theorems, caps, seed)
    keep = np.flatnonzero((sp["random"] >= 0) | (sp["grouped"] >= 0))
    return keep, {k: v[keep] for k, v in sp.items()}
