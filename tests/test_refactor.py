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
from envs.metamath import setmm
from envs.metamath.expand import (CAPS, candidates, cap_per_theorem, example, examples, expand, kept_splits, splits,
                                  trees)
from envs.metamath.verify import check_tree, proof_dag, substitute, subtree_sizes, unfold
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


def _agree(db, caps):
    """`candidates` names exactly the expansions `examples` builds (same order, same skip counts)."""
    raw, s1, s2 = trees(db), {}, {}
    built = [(e.proof, e.theorem, e.use) for e in examples(db, raw, caps, s1)]
    assert list(candidates(db, raw, caps, s2)) == built and s1 == s2
    return built, s1


# proof_max / node_max at the edges of tiny.mm's three expansions (54, 20, 31 nodes; longest strings 38, 22, 30)
@pytest.mark.parametrize("proof_max,node_max,kept", [(1000, 512, 3), (54, 38, 3), (53, 38, 2), (54, 37, 2),
                                                     (30, 30, 1), (20, 21, 0), (19, 512, 0)])
def test_candidates_find_the_expansions_without_building_them(db, proof_max, node_max, kept):
    built, skipped = _agree(db, dict(CAPS, proof_max=proof_max, node_max=node_max))
    assert len(built) == kept and sum(skipped.values()) == 3 - kept


@pytest.mark.skipif(setmm.find_set_mm() is None, reason="set.mm is not installed (make metamath)")
def test_candidates_agree_with_the_expansions_on_propositional_set_mm(tmp_path):
    db = parse(setmm.truncate(setmm.find_set_mm(), str(tmp_path / "prop.mm")))
    for caps in (CAPS, dict(CAPS, proof_max=200, node_max=60), dict(CAPS, proof_max=50, node_max=25)):
        built, skipped = _agree(db, caps)
        assert len(built) > 1000 and (caps is CAPS or min(skipped.values()) > 50)


def test_capped_build_stores_only_the_kept_expansions(db, tmp_path):
    raw = trees(db)
    found = list(candidates(db, raw))
    caps = dict(CAPS, max_per_theorem=1, eval_max_per_theorem=1)
    keep, split = kept_splits([t for _, t, _ in found] * 2, caps)   # each expansion twice: the cap keeps one
    assert len(keep) == 3
    twice = found * 2
    data = cache.build(db, (example(db, raw, *twice[i]) for i in keep), TINY, split=split, expansions=len(twice))
    whole = cache.build(db, examples(db, raw), TINY)
    order = [found.index(twice[i]) for i in keep]
    assert data["header"]["expansions"] == 6 and len(data["header"]["graphs"]) == 3
    for g, w in enumerate(order):
        a, b = cache.graph(data, g), cache.graph(whole, w)
        assert a["target"].tolist() == b["target"].tolist() and np.array_equal(a["edges"], b["edges"])
        assert [x.tolist() for x in a["words"]] == [x.tolist() for x in b["words"]]
    with pytest.raises(ValueError, match="split has 2 / 2 entries for 3 examples"):
        cache.build(db, examples(db, raw), TINY, split={k: v[:2] for k, v in split.items()})


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
    from envs.metamath.extract import candidates, new_theorems, refactor, write_refactored
    raw = trees(db)
    t = raw["id"]
    k = t.labels.index("mp")                        # the inner modus ponens of id's proof: a 3-step lemma
    pred = [False] * len(t)
    for j in range(k - subtree_sizes(t)[k] + 1, k + 1):
        pred[j] = t.exprs[j][0] == "|-"
    cands = candidates(db, "id", t, pred)
    assert [" ".join(c.statement) for c in cands] == ["|- ( ( p -> ( p -> p ) ) -> ( p -> p ) )"]
    new, counts = new_theorems(db, cands)
    # it is an instance of idi (q := ( p -> ( p -> p ) )), so not new; refactoring with it still works
    assert counts["verified"] == counts["instance"] == 1 and counts["instances_of"] == {"idi": 1} and not new
    new = cands
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
    lo = k - subtree_sizes(t)[k] + 1                         # the lemma's region in id's tree; its first node is wp
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


# id's proof with every `wp` (the syntax proof of p) replaced by `wp wq wi` (of `( p -> q )`): a valid proof of the
# instance of id under p := ( p -> q ). And a proof of ( p -> ( q -> ( r -> q ) ) ) by two ax-1 and mp, which is
# no instance of anything in tiny.mm (ax-1 would need p = ( r -> q ); a1i needs a hypothesis). Appended to tiny.mm,
# each gives a candidate (its whole proof predicted) to test against tiny.mm, which lacks both statements.
_ID_PROOF = ("wp wp wp wi wi wp wp wi wp wp ax-1 wp wp wp wi wp wi wi wp wp wp wi wi wp wp wi wi wp wp wp wi ax-1 "
             "wp wp wp wi wp ax-2 mp mp")
_EXTRA = {"idpq": ("|- ( ( p -> q ) -> ( p -> q ) )",
                   " ".join("wp wq wi" if t == "wp" else t for t in _ID_PROOF.split())),
          "a1a1": ("|- ( p -> ( q -> ( r -> q ) ) )",
                   "wq wr wq wi wi wp wq wr wq wi wi wi wq wr ax-1 wq wr wq wi wi wp ax-1 mp")}
# a1a1 under r := ( p -> q ): an instance of a1a1 (a new candidate) and of nothing in tiny.mm
_EXTRA["a1a1pq"] = ("|- ( p -> ( q -> ( ( p -> q ) -> q ) ) )",
                    " ".join("wp wq wi" if t == "wr" else t for t in _EXTRA["a1a1"][1].split()))


def _extra_candidates(tmp_path):
    import dataclasses
    from envs.metamath.extract import candidates
    text = open(TINY).read() + "".join(f"\n{lab} $p {st} $= {pf} $.\n" for lab, (st, pf) in _EXTRA.items())
    path = tmp_path / "tiny_extra.mm"
    path.write_text(text)
    ext = parse(str(path))
    out = {}
    for lab in _EXTRA:
        t = trees(ext)[lab]
        (c,) = candidates(ext, lab, t, [e[0] == "|-" for e in t.exprs])
        assert " ".join(c.statement) == _EXTRA[lab][0] and c.hyps == ()
        out[lab] = dataclasses.replace(c, source="syl")   # placed after syl in tiny.mm
    return ext, out


def test_instance_of_an_existing_theorem_is_dropped_and_a_non_instance_kept(db, tmp_path):
    from envs.metamath.extract import new_theorems
    ext, c = _extra_candidates(tmp_path)
    # ( ( p -> q ) -> ( p -> q ) ) is id under p := ( p -> q ): dropped, counted in its own column
    new, counts = new_theorems(db, [c["idpq"]])
    assert (counts["verified"], counts["existing"], counts["instance"], counts["new"]) == (1, 0, 1, 0)
    assert counts["instances_of"] == {"id": 1} and new == []
    # ( p -> ( q -> ( r -> q ) ) ) is an instance of nothing in tiny.mm: kept
    new, counts = new_theorems(db, [c["a1a1"]])
    assert (counts["verified"], counts["instance"], counts["new"]) == (1, 0, 1) and new == [c["a1a1"]]
    # in the database that states them, both are renamings of existing statements: "existing", not "instance"
    _, counts = new_theorems(ext, list(c.values()))
    assert (counts["existing"], counts["instance"], counts["new"]) == (3, 0, 0)
    # a renaming of an earlier new candidate is still a duplicate; instances are dropped each time they occur
    swap_e, swap_l = {"p": "r", "r": "p"}, {"wp": "wr", "wr": "wp"}      # p <-> r, in expressions and proof
    t = c["a1a1"].tree
    renamed = c["a1a1"].__class__(
        tuple(swap_e.get(s, s) for s in c["a1a1"].statement), (),
        t.__class__(tuple(swap_l.get(lab, lab) for lab in t.labels),
                    tuple(tuple(swap_e.get(s, s) for s in e) for e in t.exprs), t.children), "syl")
    new, counts = new_theorems(db, [c["a1a1"], c["idpq"], renamed, c["idpq"]])
    assert (counts["verified"], counts["new"], counts["duplicate"], counts["instance"]) == (4, 1, 1, 2)
    assert counts["instance_distinct"] == 1


def test_instance_of_another_new_candidate_is_dropped_and_the_general_one_kept(db, tmp_path):
    from envs.metamath.extract import new_theorems
    _, c = _extra_candidates(tmp_path)
    new, counts = new_theorems(db, [c["a1a1pq"]])       # alone: new (tiny.mm has nothing it instantiates)
    assert (counts["instance"], counts["instance_of_new"], counts["new"]) == (0, 0, 1)
    for order in ([c["a1a1pq"], c["a1a1"]], [c["a1a1"], c["a1a1pq"]]):   # with a1a1: the general one stays
        new, counts = new_theorems(db, order)
        assert (counts["verified"], counts["instance_of_new"], counts["new"]) == (2, 1, 1) and new == [c["a1a1"]]


def test_instance_direction_typecodes_and_disjoint_variables(db):
    from envs.metamath import syntax
    g = syntax.grammar(db)
    idx = syntax.InstanceIndex(db, g)

    def stmt(concl, *hyps):
        e = lambda s: tuple(s.split())  # noqa: E731
        return syntax.Parsed("c", syntax.parse_expr(g, e(concl)), tuple(syntax.parse_expr(g, e(h)) for h in hyps),
                             g.var_type)

    general = {p.label: p for ps in idx.by_shape.values() for p in ps}
    # mp: |- q from |- p and |- ( p -> q ). Its hypotheses must map INTO the candidate's (extra ones are allowed)
    assert idx.find(stmt("|- ( q -> r )", "|- r", "|- ( r -> ( q -> r ) )"))[0] == "mp"
    assert idx.find(stmt("|- ( q -> r )", "|- ( r -> ( q -> r ) )", "|- r", "|- p"))[0] == "mp"
    assert idx.find(stmt("|- ( q -> r )", "|- ( r -> ( q -> r ) )")) is None   # assumes less than mp needs
    # the inner modus ponens of id's proof is an instance of idi (q := ( p -> ( p -> p ) ))
    assert idx.find(stmt("|- ( ( p -> ( p -> p ) ) -> ( p -> p ) )"))[0] == "idi"
    # a variable binds a whole well-formed subexpression of its typecode, consistently
    assert syntax.instance(g, general["id"], stmt("|- ( x = y -> x = y )")) == {"p": ("weq", "x", "y")}
    assert syntax.instance(g, general["id"], stmt("|- ( ( p -> q ) -> ( q -> p ) )")) is None
    # ax-d needs $d x y: x = x is no instance of it (same variable), nor is x = y without the $d
    assert syntax.instance(g, general["ax-d"], stmt("|- ( x = x -> x = x )")) is None
    assert syntax.instance(g, general["ax-d"], stmt("|- ( x = y -> x = y )")) is None
    assert syntax.instance(g, general["ax-d"], stmt("|- ( x = y -> x = y )"), frozenset({("x", "y")})) is not None
    assert syntax.parse_expr(g, tuple("|- ( p -> q".split())) is None        # not well formed: no tree
