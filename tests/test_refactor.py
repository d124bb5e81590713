"""REFACTOR: theorem expansion labels exactly the inlined nodes, the dataset cache round-trips and rejects bad
files, padding never changes predictions for real nodes, the GraphSAGE classifier learns a tiny dataset, and
extracted theorems verify."""

import collections
import os

import jax
import numpy as np
import pytest

from envs.metamath import MMError, parse
from envs.metamath import cache
from envs.metamath.expand import cap_per_theorem, examples, expand, splits, trees
from envs.metamath.verify import check_tree, substitute, unfold, proof_dag
from nets.graph import Budget, pad_batch
from algos import refactor as rf


TINY = os.path.join(os.path.dirname(__file__), "data", "metamath", "tiny.mm")


@pytest.fixture(scope="module")
def db():
    return parse(TINY)


def _subtree(tree, i):
    size = lambda j: 1 + sum(size(k) for k in tree.children[j])  # noqa: E731
    return list(range(i - size(i) + 1, i + 1))


@pytest.mark.parametrize("proof,theorem", [("idi", "id"), ("syl", "a1i"), ("syl", "mpd")])
def test_expansion_labels_exactly_the_inlined_nodes(db, proof, theorem):
    raw = trees(db)
    outer, inner = raw[proof], raw[theorem]
    use = outer.labels.index(theorem)
    new, target = expand(db, outer, use, inner)
    check_tree(db, db.statements[proof], new)                 # still a proof of P
    thm = db.statements[theorem]
    kids = outer.children[use]
    sigma = {db.statements[h].expr[1]: outer.exprs[k][1:] for h, k in zip(thm.hyps, kids)
             if db.statements[h].kind == "f"}
    # positives: T's proof steps except its hypothesis leaves, under sigma, in T's order
    want = [(lab, substitute(e, sigma)) for lab, e in zip(inner.labels, inner.exprs) if lab not in thm.hyps]
    got = [(new.labels[i], new.exprs[i]) for i in range(len(new)) if target[i]]
    assert got == want
    # negatives: P's other nodes, with each hypothesis subtree of the use copied once per leaf of T that uses it
    arg = dict(zip(thm.hyps, kids))
    expect = collections.Counter((outer.labels[j], outer.exprs[j]) for j in range(len(outer))
                                 if j not in _subtree(outer, use))
    for lab in inner.labels:
        if lab in arg:
            expect.update((outer.labels[j], outer.exprs[j]) for j in _subtree(outer, arg[lab]))
    assert collections.Counter((new.labels[i], new.exprs[i]) for i in range(len(new)) if not target[i]) == expect
    # the inlined root proves what the use proved, and sits where the use was (its parent's child)
    root = max(i for i in range(len(new)) if target[i])
    assert new.exprs[root] == outer.exprs[use]


def test_examples_and_splits_are_deterministic_and_capped(db):
    exs = list(examples(db, trees(db)))
    assert [(e.proof, e.theorem) for e in exs] == [("idi", "id"), ("syl", "a1i"), ("syl", "mpd")]
    names = ["a"] * 30 + ["b"] * 5 + ["c"] * 12 + ["d"] * 3 + [f"t{i}" for i in range(50)]
    caps = dict(max_per_theorem=10, eval_max_per_theorem=2)
    s1, s2 = splits(names, caps, seed=3), splits(names, caps, seed=3)
    for kind in ("random", "grouped"):
        assert np.array_equal(s1[kind], s2[kind])
        s = s1[kind]
        per = collections.Counter(names[i] for i in np.flatnonzero(s >= 0))
        assert max(per.values()) <= 10
        assert all(collections.Counter(names[i] for i in np.flatnonzero(s == k)).most_common(1)[0][1] <= 2
                   for k in (1, 2) if (s == k).any())
    g = s1["grouped"]
    parts = {k: {names[i] for i in np.flatnonzero(g == k)} for k in (0, 1, 2)}
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert (len(parts[0]), len(parts[1]), len(parts[2])) == (43, 5, 6)      # 80/10/10 of the 54 theorems
    assert len(cap_per_theorem(names, range(len(names)), 10, np.random.default_rng(0))) == 10 + 5 + 10 + 3 + 50


def test_cache_round_trip_and_validation(db, tmp_path):
    exs = list(examples(db, trees(db)))
    data = cache.build(db, exs, TINY)
    path = str(tmp_path / "d.npz")
    cache.save(path, data)
    back = cache.load(path, source=TINY)
    g = cache.graph(back, 2)
    assert g["target"].tolist() == list(exs[2].target) and len(g["edges"]) == len(exs[2].tree) - 1
    vocab = back["header"]["vocab"]
    assert [vocab[w] for w in g["words"][-1]] == ["t:" + s for s in exs[2].tree.exprs[-1]] + ["c:m", "c:p"]
    assert exs[2].tree.labels[-1] == "mp"              # the root is now the last step of mpd's own proof
    with pytest.raises(cache.DatasetError, match="no such dataset file"):
        cache.load(str(tmp_path / "none.npz"))
    with pytest.raises(cache.DatasetError, match="not from"):
        cache.load(path, source=os.path.join(os.path.dirname(TINY), "..", "..", "test_refactor.py"))
    for field, value, msg in [("edges", data["edges"] + 100, "'edges' has an index outside"),
                              ("target", data["target"] * 3, "'target' is not 0/1"),
                              ("node_offsets", data["node_offsets"][:-1], "'node_offsets' is not"),
                              ("split_random", data["split_random"][:1], "'split_random' is not")]:
        bad = dict(data, **{field: value})
        cache.save(path, bad)
        with pytest.raises(cache.DatasetError, match=msg):
            cache.load(path)
    cache.save(path, {k: v for k, v in data.items() if k != "words"})
    with pytest.raises(cache.DatasetError, match=r"missing field\(s\) \['words'\]"):
        cache.load(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(cache.DatasetError, match="not a readable"):
        cache.load(str(tmp_path / "junk.npz"))


def _graphs(db):
    data = cache.build(db, list(examples(db, trees(db))), TINY)
    return [cache.graph(data, i) for i in range(3)], len(data["header"]["vocab"])


def test_padding_never_changes_predictions_for_real_nodes(db):
    graphs, vocab = _graphs(db)
    cfg = rf.Config(embed_dim=16, hidden=16, num_layers=3)
    small = [Budget(128, 256, 1200)]
    big = [Budget(400, 900, 5000)]
    b1 = pad_batch(graphs, small, num_graphs=3)
    b2 = pad_batch(graphs, big, num_graphs=8)
    params, _ = rf.init(cfg, vocab, jax.random.PRNGKey(0), b1)
    l1, m1 = rf.predict(cfg, vocab, params, b1)
    l2, m2 = rf.predict(cfg, vocab, params, b2)
    n = int(b1.node_mask.sum())
    np.testing.assert_allclose(np.asarray(l1[:n]), np.asarray(l2[:n]), rtol=1e-5, atol=1e-5)
    assert {k: float(v) for k, v in m1.items()} == {k: float(v) for k, v in m2.items()}
    # a graph alone gives the same logits as inside the batch (no leakage between graphs)
    alone, _ = rf.predict(cfg, vocab, params, pad_batch(graphs[1:2], small, num_graphs=3))
    a, b = len(graphs[0]["target"]), len(graphs[0]["target"]) + len(graphs[1]["target"])
    np.testing.assert_allclose(np.asarray(alone[:b - a]), np.asarray(l1[a:b]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exceeds every budget"):
        pad_batch(graphs, [Budget(10, 10, 10)], num_graphs=3)


def test_learns_the_tiny_dataset(db):
    graphs, vocab = _graphs(db)
    cfg = rf.Config(embed_dim=32, hidden=32, num_layers=3, lr=3e-3)
    budgets = [Budget(128, 256, 1200)]
    batch = pad_batch(graphs, budgets, num_graphs=3)
    params, opt = rf.init(cfg, vocab, jax.random.PRNGKey(1), batch)
    _, first = rf.predict(cfg, vocab, params, batch)
    for _ in range(150):
        params, opt, m = rf.train_step(cfg, vocab, params, opt, batch)
    _, last = rf.predict(cfg, vocab, params, batch)
    assert float(m["loss"]) < 0.05
    assert float(last["node_right"]) == float(last["nodes"]) and float(last["proof_right"]) == 3.0
    assert float(first["proof_right"]) < 3.0


def test_extracted_theorem_verifies_and_the_refactored_proof_still_verifies(db, tmp_path):
    from envs.metamath.extract import candidates, new_theorems, refactor, sizes, write_refactored
    raw = trees(db)
    t = raw["id"]
    k = t.labels.index("mp")                        # the inner modus ponens of id's proof: a 3-step lemma
    pred = [False] * len(t)
    for j in range(k - sizes(t)[k] + 1, k + 1):
        pred[j] = t.exprs[j][0] == "|-"
    cands = candidates(db, "id", t, pred)
    assert [" ".join(c.statement) for c in cands] == ["|- ( ( p -> ( p -> p ) ) -> ( p -> p ) )"]
    new, counts = new_theorems(db, cands)
    assert counts["verified"] == counts["new"] == 1
    # the theorem id itself, predicted whole inside idi's expansion, is found but is not new
    outer = raw["idi"]
    whole, target = expand(db, outer, outer.labels.index("id"), raw["id"])
    assert new_theorems(db, candidates(db, "idi", whole, target))[1]["existing"] == 1
    # a wrong prediction (a hypothesis it cannot derive) gives no verified candidate
    bad = cands[0].__class__(cands[0].statement, (), cands[0].tree.__class__(
        cands[0].tree.labels[:-1] + ("ax-1",), cands[0].tree.exprs, cands[0].tree.children), "id")
    assert new_theorems(db, [bad])[1]["verified"] == 0
    db2, t2, added, report = refactor(db, raw, new)
    assert report[0]["uses"] == 1 and report[0]["proofs_using"] == 1 and report[0]["nodes_saved"] == 26
    assert t2["id"].labels.count("rf0") == 1
    check_tree(db2, db2.statements["id"], t2["id"])
    # no match when a label differs or a variable would be bound to two expressions
    from envs.metamath.extract import rewrite
    pat = added["rf0"][1]
    lo = k - sizes(t)[k] + 1                         # the lemma's region in id's tree; its first node is wp
    j1 = t.labels.index("ax-1", lo)
    assert t.labels[lo] == "wp" and j1 < k
    for j, swap in ((j1, ("wi", t.exprs[j1])), (lo, ("wq", ("wff", "q")))):
        labels, exprs = list(t.labels), list(t.exprs)
        labels[j], exprs[j] = swap
        other = t.__class__(tuple(labels), tuple(exprs), t.children)
        assert rewrite(db2, other, db2.statements["rf0"], pat)[1] == 0
    assert rewrite(db2, t, db2.statements["rf0"], pat)[1] == 1
    text = write_refactored(open(TINY).read(), db2, t2, added, ["id"])
    out = tmp_path / "refactored.mm"
    out.write_text(text)
    assert all(v is None for v in verify_all_file(str(out)).values())


def verify_all_file(path):
    from envs.metamath.verify import verify_all
    return verify_all(parse(path))
