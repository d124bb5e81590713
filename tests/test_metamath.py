"""Metamath parser and verifier: valid and broken proofs on tests/data/metamath/tiny.mm, bad input, and (slow)
agreement with the C `metamath` program on the propositional part of set.mm."""

import os
import re
import shutil

import pytest

from envs.metamath import MMError, parse
from envs.metamath import setmm
from envs.metamath.verify import compress, proof_dag, unfold, verify_all

TINY = os.path.join(os.path.dirname(__file__), "data", "metamath", "tiny.mm")
TEXT = open(TINY, encoding="utf-8").read()


def _db(text, name="t.mm"):
    return parse(name, text=text)


def _edit(old, new, text=TEXT):
    assert old in text, old
    return text.replace(old, new, 1)


def test_tiny_parses_and_every_proof_verifies():
    db = _db(TEXT)
    assert [s.label for s in db.theorems()] == ["id", "a1i", "mpd", "idi", "syl", "dok"]
    assert db.statements["mp"].hyps == ("wp", "wq", "min", "maj")
    assert db.statements["mpd"].hyps == ("wp", "wq", "wr", "mpd.1", "mpd.2")
    assert db.statements["ax-d"].dvs == frozenset({("x", "y")})
    assert verify_all(db) == {lab: None for lab in ["id", "a1i", "mpd", "idi", "syl", "dok"]}


def test_proof_tree_nodes_edges_and_saved_steps():
    db = _db(TEXT)
    dag = proof_dag(db, "idi")            # compressed, with one Z-saved step used twice
    tree = unfold(dag)
    assert len(dag.labels) == 10 and len(tree) == 16
    assert tree.labels[-1] == "mp" and tree.exprs[-1] == db.statements["idi"].expr
    assert sorted(c for c, _ in tree.edges()) == list(range(15))          # every non-root has one parent
    assert all(c < p for c, p in tree.edges())                           # post-order
    assert tree.rpn() == "wp wp wi wq wp wp wi wi wp id wp wp wi wq ax-1 mp".split()
    assert unfold(dag, max_nodes=15) is None


def test_compress_round_trip():
    db = _db(TEXT)
    for lab in ["id", "a1i", "mpd", "idi"]:
        tree = unfold(proof_dag(db, lab))
        old = " ".join(db.statements[lab].proof)
        text = TEXT.replace(old, compress(db, db.statements[lab], tree), 1)
        assert unfold(proof_dag(_db(text), lab)) == tree


BROKEN = [  # (old, new, theorem, message pattern)
    ("wp wq ax-1 mp $.", "wq wp ax-1 mp $.", "a1i", r"a1i: step 9 \(mp\): hypothesis maj of mp needs"),
    ("a1i $p |- ( q -> p ) $= wp wq wp wi a1i.1", "a1i $p |- ( q -> p ) $= wp wq wp wi mpd.1", "a1i",
     r"a1i: step 5 \(mpd.1\): hypothesis 'mpd.1' is not active"),
    ("wp wq ax-1 mp $.", "wp wq ax-1 mp wp $.", "a1i", r"a1i: the proof leaves 2 entries"),
    ("idi $p |- ( q -> ( p -> p ) ) $=", "idi $p |- ( p -> ( q -> q ) ) $=", "idi",
     r"idi: the proof proves '\|- \( q -> \( p -> p \) \)', not the statement"),
    ("wp wq ax-1 mp $.", "wp wq ax-1 ? $.", "a1i", r"a1i: step 9: unknown step '\?'"),
    ("wp wq ax-1 mp $.", "wp wq ax-9 mp $.", "a1i", r"a1i: step 8 \(ax-9\): label 'ax-9' is not defined"),
    ("wp wq ax-1 mp $.", "wp wq idi mp $.", "a1i", r"a1i: step 8 \(idi\): 'idi' is not stated before a1i"),
    ("$= wp wq wp wi a1i.1 wp wq ax-1 mp $.", "$= wp mp $.", "a1i",
     r"a1i: step 2 \(mp\): mp needs 4 hypotheses, the stack has 1"),
    ("wp wq ax-1 mp $.", "wp wi wq ax-1 mp $.", "a1i",
     r"a1i: step 7 \(wi\): hypothesis wp of wi needs typecode 'wff', got '\|- p'"),
    ("AAFZBGFADGBCE", "AAFZBHFADGBCE", "idi", r"idi: step 5: reference to saved step 2, only 1 saved"),
    ("AAFZBGFADGBCE", "AAFZBGFADGBCEA", "idi", r"idi: the proof leaves 2 entries"),
    ("AAFZBGFADGBCE", "AAFZBGFAD?BCE", "idi", r"idi: step 9: unknown step"),
    ("ABHACHDABCHHABHACHHEABCFGG", "ABHACHDABCHHABHACHHDABCFGG", "mpd", r"mpd: step 25 \(mp\): hypothesis min of mp needs '\|- \( p -> \( q -> r \) \)'"),
    ("dok $p |- ( x = y -> x = y ) $= vx vy ax-d $.", "dok $p |- ( x = x -> x = x ) $= vx vx ax-d $.", "dok",
     r"dok: step 3 \(ax-d\): disjoint variable violation: ax-d needs \$d x y, substituted variables 'x' and 'x' "
     "are the same"),
    ("  $d x y $.\n  ax-d $a |- ( x = y -> x = y ) $.\n", "  $d x y $.\n  ax-d $a |- ( x = y -> x = y ) $.\n$}\n${\n",
     "dok", r"dok: step 3 \(ax-d\): disjoint variable violation: .* 'x' and 'y' have no active \$d"),
]


@pytest.mark.parametrize("old,new,label,pattern", BROKEN)
def test_broken_proof_is_rejected_with_label_and_step(old, new, label, pattern):
    db = _db(_edit(old, new), "broken.mm")
    results = verify_all(db)
    assert re.search(r"^broken\.mm:\d+: " + pattern, results[label]), results[label]
    assert [lab for lab, err in results.items() if err] == [label]      # the others still verify
    with pytest.raises(MMError, match=pattern):
        proof_dag(db, label)


BAD_INPUT = [
    ("$( Identity, normal proof. $)", "$( Identity, $( normal proof. $)", r"bad\.mm:17: nested comment"),
    ("$v p q r $.", "$v p q r $.\n$[ other.mm $]", r"bad\.mm:5: file inclusion"),
    ("wi $a wff ( p -> q ) $.", "wi $a wff ( p => q ) $.", r"bad\.mm:8: wi: symbol '=>' is not an active"),
    ("ax-1 $a", "ax-2 $a", r"bad\.mm:15: label 'ax-2' already used on line 14"),
    ("wr $f wff r $.", "wr $f wff s $.", r"bad\.mm:7: wr: \$f must be"),
    ("a1i $p |- ( q -> p ) $= wp", "a1i $p |- ( q -> p ) wp", r"bad\.mm:\d+: a1i: \$p statement without"),
]


@pytest.mark.parametrize("old,new,pattern", BAD_INPUT)
def test_bad_input_names_file_line_and_label(old, new, pattern):
    with pytest.raises(MMError, match=pattern):
        _db(_edit(old, new), "bad.mm")


def test_truncated_input_names_the_label():
    lines = TEXT.count("\n")
    with pytest.raises(MMError, match=rf"cut\.mm:{lines + 2}: comment '\$\(' never closed"):
        _db(TEXT + "\n$( never closed\n", "cut.mm")
    cut = TEXT.index("wp wq wp wi a1i.1")
    with pytest.raises(MMError, match=r"cut\.mm:\d+: a1i: file ends before '\$\.' \(truncated input\?\)"):
        _db(TEXT[:cut], "cut.mm")
    with pytest.raises(MMError, match=r"cut\.mm: file ends with 1 block"):
        _db(TEXT[:TEXT.index("  $( Deduction form")], "cut.mm")


def test_truncate_closes_markers_and_keeps_the_last_label(tmp_path):
    src = tmp_path / "full.mm"
    src.write_text("$( Begin $[ a.mm $] $)\n" + TEXT + "\n$( End $[ a.mm $] $)\nlater $a |- p $.\n")
    out = setmm.truncate(str(src), str(tmp_path / "cut.mm"), last_label="idi")
    text = open(out).read()
    assert text.rstrip().endswith("$( End $[ a.mm $] $)") and "dok" not in text
    assert list(verify_all(parse(out))) == ["id", "a1i", "mpd", "idi"]


needs_set_mm = pytest.mark.skipif(setmm.find_set_mm() is None or shutil.which("metamath") is None,
                                  reason=setmm.INSTALL_HINT)


@pytest.mark.slow
@needs_set_mm
def test_agrees_with_c_metamath_on_propositional_set_mm(tmp_path):
    """Both verifiers accept the 1402 propositional proofs; on a copy with 6 corrupted proofs both reject
    exactly those 6."""
    path = setmm.truncate(setmm.find_set_mm(), str(tmp_path / "prop.mm"))
    ours = verify_all(parse(path))
    assert len(ours) == 1402 and not any(ours.values())
    c = setmm.metamath_verify(path)
    assert c["ok"] and not c["failed"]
    text = open(path).read()
    victims = ["mpd", "syl", "pm2.43", "con3", "bitri", "xorexmid"]
    for lab in victims:   # swap the last two proof letters of each victim (compressed proofs)
        m = re.search(r"\n\s+" + re.escape(lab) + r" \$p [^$]*\$=\s+\( [^)]*\) ([A-Z\s]+?)([A-Z])([A-Z]) \$\.", text)
        assert m and m.group(2) != m.group(3), lab
        text = text[:m.start(2)] + m.group(3) + m.group(2) + text[m.end(3):]
    bad = tmp_path / "bad.mm"
    bad.write_text(text)
    ours = verify_all(parse(str(bad)))
    assert {lab for lab, err in ours.items() if err} == set(victims)
    assert setmm.metamath_verify(str(bad))["failed"] == set(victims)


def test_compressed_numbers_follow_the_book():
    from envs.metamath.verify import _number
    assert [_number(n) for n in (1, 20, 21, 40, 41, 120, 121, 620, 621)] == \
        ["A", "T", "UA", "UT", "VA", "YT", "UUA", "YYT", "UUUA"]


def test_compressed_decoding_of_multi_digit_numbers():
    from envs.metamath.database import Statement
    from envs.metamath.verify import _decode_compressed
    names = [f"L{i}" for i in range(1, 700)]
    thm = Statement("t", "p", ("|-",), 1, hyps=("h1",), proof=("(", *names, ")", "UUA", "YYT", "UA", "Z", "UUUA"))
    got = list(_decode_compressed(_db(TEXT), thm))
    assert got == [(1, "label", "L120"), (2, "label", "L619"), (3, "label", "L20"), (3, "save", None),
                   (4, "label", "L620")]
