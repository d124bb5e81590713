"""REFACTOR's extraction and refactoring (Zhou et al., ICLR 2024, sections 3.3 and 4.2).

Candidates. In a predicted node set of a proof tree, each maximal connected part (a predicted node whose parent
is not predicted is its root) of at least two steps is a candidate theorem: its statement is the root's
expression, its `$e` hypotheses are the expressions of the `|-` children that are not predicted (and any
hypothesis of P used inside), and its proof is the predicted steps with the syntax (non-`|-`) subproofs below
them kept whole. Variables keep the database's global `$f` (true in set.mm's propositional part).
The candidate is checked with `verify.check_tree` in a database extended by its hypotheses.

Normalisation and deduplication (the reference's "standardization"): variables renamed in order of first
appearance (per typecode), hypotheses in order; a candidate whose normalised (hypotheses, statement) matches an
assertion of the database is "existing", one matching an earlier new candidate a "duplicate".

Instances (`syntax.instance`, beyond the reference): a candidate that is a substitution instance of an assertion
A of the database, i.e. σ(A's conclusion) is its conclusion and every `$e` of A under σ is one of its
hypotheses (σ maps A's variables to well-formed expressions of their typecodes, A's `$d` kept), is provable in
one step from A and so is not new either; it is counted in its own column. Likewise a candidate that is an
instance of another new candidate (`instance_of_new`): only the most general of them are kept. The propositional part of set.mm
has ~1500 `|-` assertions; they are indexed by the shape of their conclusion's syntax tree (`InstanceIndex`),
so each candidate is matched against a few hundred at most.

Refactoring: each new theorem N's proof is a pattern (its variables' `$f` leaves and its `$e` leaves are
holes); every proof stated after N's last dependency is rewritten bottom-up, each match replaced by one step
applying N (arguments: the syntax proofs of the bound expressions and the matched hypothesis subproofs).
Departure: the reference matches on set.mm with the `metamath` program's own tools; here matching is exact
structural matching of proof trees, with consistent variable bindings.
"""

from __future__ import annotations

import dataclasses

from envs.metamath import syntax
from envs.metamath.database import Database, MMError, Statement
from envs.metamath.verify import ProofTree, check_tree, subtree_sizes


def _subtree(tree: ProofTree, i: int, size) -> range:
    return range(i - size[i] + 1, i + 1)


@dataclasses.dataclass(frozen=True)
class Candidate:
    statement: tuple
    hyps: tuple            # $e expressions, in order
    tree: ProofTree        # $e leaves labelled "@e0", "@e1", ...
    source: str            # the proof it came from

    def key(self, db: Database):
        return normalise(db, self.hyps, self.statement)


def normalise(db: Database, hyps, statement):
    names = {}
    out = []
    for expr in list(hyps) + [statement]:
        out.append(tuple(names.setdefault(s, f"${len(names)}") if s in db.variables else s for s in expr))
    return tuple(out[:-1]), out[-1]


def candidates(db: Database, proof: str, tree: ProofTree, predicted, min_steps: int = 2) -> list:
    parent = [None] * len(tree)
    for p, kids in enumerate(tree.children):
        for k in kids:
            parent[k] = p
    size = subtree_sizes(tree)
    out = []
    for r in range(len(tree)):
        if not predicted[r] or (parent[r] is not None and predicted[parent[r]]):
            continue
        if db.statements[tree.labels[r]].kind in "fe":
            continue
        hyps, labels, exprs, children, steps = [], [], [], [], 0

        def emit(lab, expr, kids):
            labels.append(lab); exprs.append(expr); children.append(tuple(kids))
            return len(labels) - 1

        def hyp_leaf(expr):
            if expr not in hyps:
                hyps.append(expr)
            return emit(f"@e{hyps.index(expr)}", expr, ())

        def copy(i):                       # a syntax subproof, whole
            new = {}
            for j in _subtree(tree, i, size):
                new[j] = emit(tree.labels[j], tree.exprs[j], [new[k] for k in tree.children[j]])
            return new[i]

        def visit(i):
            nonlocal steps
            st = db.statements[tree.labels[i]]
            if st.kind == "e":
                return hyp_leaf(tree.exprs[i])
            if not predicted[i]:
                return hyp_leaf(tree.exprs[i]) if tree.exprs[i][0] == "|-" else copy(i)
            steps += st.kind in "ap"
            kids = [visit(k) for k in tree.children[i]]
            return emit(tree.labels[i], tree.exprs[i], kids)

        visit(r)
        if steps >= min_steps:
            out.append(Candidate(tree.exprs[r], tuple(hyps), ProofTree(tuple(labels), tuple(exprs),
                                                                        tuple(children)), proof))
    return out


def with_hypotheses(db: Database, cand: Candidate, after: str, label: str = "@new"):
    """A database extended by the candidate's $e hypotheses (labelled `label.0`, `label.1`, ...) and its
    statement `label` (placed just after `after`); returns (db, statement, proof tree with those labels).
    Mandatory $f: those of the variables in the statement and hypotheses, in database order."""
    used = {s for e in list(cand.hyps) + [cand.statement] for s in e if s in db.variables}
    floats = {}
    for lab in db.statements:  # the first $f of each variable
        st = db.statements[lab]
        if st.kind == "f" and st.expr[1] in used and st.expr[1] not in floats:
            floats[st.expr[1]] = lab
    if set(floats) != used:
        raise MMError(f"candidate from {cand.source}: variables {sorted(used - set(floats))} have no $f")
    ren = {f"@e{i}": f"{label}.{i}" for i in range(len(cand.hyps))}
    ehyps = {ren[f"@e{i}"]: Statement(ren[f"@e{i}"], "e", e, 0) for i, e in enumerate(cand.hyps)}
    fl = sorted(floats.values(), key=db.position.__getitem__)
    all_floats = frozenset(lab for lab, st in db.statements.items() if st.kind == "f")
    st = Statement(label, "p", cand.statement, db.statements[after].line, tuple(fl) + tuple(ehyps), frozenset(),
                   (), all_floats | frozenset(ehyps), frozenset(), db.statements[after].end)
    stmts = dict(db.statements)
    stmts.update(ehyps)
    pos = dict(db.position)
    base = db.position[after]
    for i, k in enumerate(list(ehyps) + [label]):
        pos[k] = base + (i + 1) / (len(ehyps) + 2)
    stmts[label] = st
    tree = ProofTree(tuple(ren.get(lab, lab) for lab in cand.tree.labels), cand.tree.exprs, cand.tree.children)
    return dataclasses.replace(db, statements=stmts, position=pos), st, tree


def verify_candidate(db: Database, cand: Candidate) -> str | None:
    """None when the candidate's proof checks, else the error."""
    try:
        ext, st, tree = with_hypotheses(db, cand, cand.source)
        check_tree(ext, st, tree)
        return None
    except MMError as err:
        return str(err)


def candidate_parsed(g: syntax.Grammar, cand: Candidate) -> syntax.Parsed | None:
    """A candidate's statement as syntax trees (its variables typed by their first `$f`, as `with_hypotheses`)."""
    concl = syntax.parse_expr(g, cand.statement)
    hyps = tuple(syntax.parse_expr(g, h) for h in cand.hyps)
    if concl is None or any(h is None for h in hyps):
        return None
    return syntax.Parsed(cand.source, concl, hyps, g.var_type)


def new_theorems(db: Database, cands: list, index: syntax.InstanceIndex | None = None):
    """(new verified candidates, counts). Each verified candidate is, in this order of tests:
    `existing` (a renaming of an assertion of the database), `instance` (a substitution instance of one,
    `syntax.instance`: provable in one step from it, candidates having no `$d`), `duplicate` (a renaming of an
    earlier new candidate) or `new`; then a new one that is an instance of another new one is dropped as well
    (`instance_of_new`, `_drop_instances_of_each_other`). `unparsed` counts verified candidates whose statement
    the grammar does not parse (they are kept as new: not shown to be instances)."""
    index = syntax.InstanceIndex(db) if index is None else index
    existing = {}
    for st in db.assertions():
        e = [db.statements[h].expr for h in st.hyps if db.statements[h].kind == "e"]
        existing.setdefault(normalise(db, e, st.expr), st.label)
    seen, new = set(), []
    counts = dict(candidates=len(cands), verified=0, existing=0, instance=0, duplicate=0, new=0, unparsed=0)
    matched, inst_of, inst_keys, examples = {}, {}, set(), []
    for c in cands:
        if verify_candidate(db, c) is not None:
            continue
        counts["verified"] += 1
        k = c.key(db)
        if k in existing:
            counts["existing"] += 1
            matched[existing[k]] = matched.get(existing[k], 0) + 1
            continue
        p = candidate_parsed(index.g, c)
        hit = index.find(p) if p is not None else None
        counts["unparsed"] += p is None
        if hit is not None:
            counts["instance"] += 1
            inst_of[hit[0]] = inst_of.get(hit[0], 0) + 1
            inst_keys.add(k)
            if len(examples) < 10:
                examples.append(dict(statement=" ".join(c.statement), hyps=[" ".join(h) for h in c.hyps],
                                     instance_of=hit[0]))
            continue
        if k in seen:
            counts["duplicate"] += 1
            continue
        seen.add(k)
        new.append(c)
    new, counts["instance_of_new"] = _drop_instances_of_each_other(index.g, new)
    counts["new"] = len(new)
    counts["existing_theorems_rediscovered"] = len(matched)
    counts["instance_distinct"] = len(inst_keys)
    counts["instances_of"] = dict(sorted(inst_of.items(), key=lambda kv: -kv[1])[:10])
    counts["instance_examples"] = examples
    return new, counts


def _drop_instances_of_each_other(g: syntax.Grammar, new: list) -> tuple[list, int]:
    """The new candidates less those that are instances of another new one, and how many were dropped.

    `a` is dropped when it is an instance of some `b` that is strictly more general (`b` no instance of `a`) or,
    for mutual instances, earlier in the list. Instances compose, so each dropped candidate is an instance of a
    kept one: the kept ones are the most general, and one step of a kept one proves each dropped one."""
    parsed = [candidate_parsed(g, c) for c in new]
    parsed = [None if p is None else dataclasses.replace(p, label=i) for i, p in enumerate(parsed)]
    index = syntax.InstanceIndex.of(g, [p for p in parsed if p is not None])
    by_label = {p.label: p for p in parsed if p is not None}
    kept = []
    for i, (cand, p) in enumerate(zip(new, parsed)):
        if p is not None and any(j != i and (j < i or syntax.instance(g, p, by_label[j]) is None)
                                 for j, _ in index.hits(p)):
            continue
        kept.append(cand)
    return kept, len(new) - len(kept)


def _match(db, pat: ProofTree, pvars, tree: ProofTree, pi: int, ti: int, bind: dict) -> bool:
    lab = pat.labels[pi]
    st = db.statements[lab]
    if st.kind == "e":
        bind.setdefault(lab, ti)
        return tree.exprs[bind[lab]] == tree.exprs[ti]
    if st.kind == "f" and st.expr[1] in pvars:
        if tree.exprs[ti][0] != st.expr[0]:
            return False
        prev = bind.setdefault(st.expr[1], ti)
        return tree.exprs[prev] == tree.exprs[ti]
    if tree.labels[ti] != lab or len(tree.children[ti]) != len(pat.children[pi]):
        return False
    return all(_match(db, pat, pvars, tree, a, b, bind) for a, b in zip(pat.children[pi], tree.children[ti]))


def rewrite(db: Database, tree: ProofTree, new_st: Statement, pat: ProofTree):
    """`tree` with every (outermost) match of `pat` replaced by one step of `new_st`; returns (tree, uses)."""
    pvars = {db.statements[h].expr[1] for h in new_st.hyps if db.statements[h].kind == "f"}
    size = subtree_sizes(tree)
    labels, exprs, children = [], [], []
    uses = 0

    def emit(i):
        nonlocal uses
        bind = {}
        if len(pat) > 1 and size[i] >= len(pat) and _match(db, pat, pvars, tree, len(pat) - 1, i, bind):
            uses += 1
            args = [bind[db.statements[h].expr[1]] if db.statements[h].kind == "f" else bind[h]
                    for h in new_st.hyps]
            kids = [emit(a) for a in args]
            labels.append(new_st.label); exprs.append(tree.exprs[i]); children.append(tuple(kids))
        else:
            kids = [emit(k) for k in tree.children[i]]
            labels.append(tree.labels[i]); exprs.append(tree.exprs[i]); children.append(tuple(kids))
        return len(labels) - 1

    emit(len(tree) - 1)
    return ProofTree(tuple(labels), tuple(exprs), tuple(children)), uses


def refactor(db: Database, raw: dict, new: list, prefix: str = "rf"):
    """Add the new theorems and rewrite later proofs in `raw` (label -> tree) to use them, in order.

    A new theorem N goes, in the file, just before the top-level block (or statement) of its first user, so a
    proof P is rewritten only when that point lies after N's last dependency. Every rewritten proof is
    re-checked. Returns (db, trees, added: label -> (insertion line, proof tree), report)."""
    trees_ = dict(raw)
    labels_in = {p: set(t.labels) for p, t in trees_.items()}   # a proof lacking a label of the pattern can't match
    added = {}
    report = []
    for n, cand in enumerate(new):
        label = f"{prefix}{n}"
        last = max((lab for lab in cand.tree.labels if not lab.startswith("@e")), key=db.position.__getitem__)
        db, st, pat = with_hypotheses(db, cand, last, label)
        check_tree(db, st, pat)
        dep_end = db.statements[last].end
        pvars = {db.statements[h].expr[1] for h in st.hyps if db.statements[h].kind == "f"}
        needed = {lab for lab in pat.labels if db.statements[lab].kind in "ap"
                  or (db.statements[lab].kind == "f" and db.statements[lab].expr[1] not in pvars)}
        uses, saved, users, where, rejected = 0, 0, 0, None, 0
        for p, tree in trees_.items():
            ps = db.statements[p]
            ins = ps.block or ps.line
            if db.position[p] <= db.position[label] or ins <= dep_end or not needed <= labels_in[p]:
                continue
            new_tree, u = rewrite(db, tree, st, pat)
            if u:
                try:
                    check_tree(db, ps, new_tree)
                except MMError:            # a match that does not re-verify is not used (counted)
                    rejected += 1
                    continue
                uses += u; users += 1; saved += len(tree) - len(new_tree)
                trees_[p] = new_tree
                labels_in[p] = set(new_tree.labels)
                where = ins if where is None else min(where, ins)
        added[label] = (where, pat)
        report.append(dict(label=label, statement=" ".join(cand.statement), hyps=[" ".join(h) for h in cand.hyps],
                           proof_steps=len(cand.tree), uses=uses, proofs_using=users, nodes_saved=saved,
                           rewrites_rejected=rejected))
    return db, trees_, added, report


def write_refactored(src_text: str, db: Database, trees: dict, added: dict, changed) -> str:
    """The database text with the new theorems inserted (before their first user's block, or at the end) and
    the proofs of `changed` rewritten (compressed). Assumes each rewritten statement has lines of its own."""
    from envs.metamath.verify import compress
    lines = src_text.split("\n")
    before = {}
    for label, (where, tree) in added.items():
        before.setdefault(where or len(lines) + 1, []).append(mm_text(db, {label: tree}))
    replace = {}
    for p in changed:
        st = db.statements[p]
        replace[st.line] = (st.end, f"  {p} $p {' '.join(st.expr)} $=\n    {compress(db, st, trees[p])} $.")
    out, i = [], 1
    while i <= len(lines):
        out.extend(before.get(i, []))
        if i in replace:
            end, text = replace[i]
            out.append(text)
            i = end + 1
            continue
        out.append(lines[i - 1])
        i += 1
    out.extend(before.get(len(lines) + 1, []))
    return "\n".join(out)


def mm_text(db: Database, added: dict) -> str:
    """The new theorems as .mm text (each in its own block with its $e hypotheses), compressed proofs."""
    from envs.metamath.verify import compress
    out = []
    for label, tree in added.items():
        st = db.statements[label]
        body = ["${"] + [f"  {h} $e {' '.join(db.statements[h].expr)} $." for h in st.hyps
                         if db.statements[h].kind == "e"]
        body += ["  $( Extracted by REFACTOR (headstart). $)",
                 f"  {label} $p {' '.join(st.expr)} $=", f"    {compress(db, st, tree)} $.", "$}"]
        out.append("\n".join(body))
    return "\n\n".join(out) + "\n"

