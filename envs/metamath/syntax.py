"""Metamath expressions as syntax trees, and matching one statement as a substitution instance of another.

Grammar: the database's syntax axioms, i.e. every `$a` whose typecode is not a provable one (set.mm: `wi` is
`wff ( ph -> ps )`, `cv` is `class x`), each a rule typecode -> symbols, its variables standing for subtrees of
their `$f` typecode. A provable statement `|- e` is parsed as e of typecode `wff` (set.mm's convention; `PROVABLE`).
A tree is a variable name (a leaf) or a tuple `(syntax axiom label, *subtrees)` with one subtree per variable
of the axiom, in the axiom's order of mandatory `$f` (the order of a syntax proof's arguments).

Parsing is recursive descent over all alternatives with a memo per (typecode, position); a rule re-entered at
the same position and typecode (left recursion) yields nothing there. set.mm's grammar is unambiguous and its
propositional part has no left recursion; an expression that does not parse to exactly one tree gives None.

Matching is on trees, not token strings, so a variable is only ever bound to a well-formed expression of its
typecode (string matching could bind `ph` in `( ph -> ps )` to a fragment like `( a`).
"""

from __future__ import annotations

import dataclasses

from envs.metamath.database import Database, Statement

PROVABLE = {"|-": "wff"}


@dataclasses.dataclass(frozen=True)
class Grammar:
    rules: dict          # typecode -> [(label, body symbols)]
    rule_type: dict      # label -> typecode
    rule_vars: dict      # label -> {variable: typecode}, in mandatory-$f order (its own $f)
    var_type: dict       # variable -> typecode (its first $f in the database)


def grammar(db: Database) -> Grammar:
    """The syntax axioms of `db` (non-provable `$a` without `$e` hypotheses)."""
    var_type = {}
    for st in db.statements.values():
        if st.kind == "f":
            var_type.setdefault(st.expr[1], st.expr[0])
    rules, rule_type, rule_vars = {}, {}, {}
    for st in db.statements.values():
        if st.kind != "a" or st.expr[0] in PROVABLE or any(db.statements[h].kind == "e" for h in st.hyps):
            continue
        rules.setdefault(st.expr[0], []).append((st.label, st.expr[1:]))
        rule_type[st.label] = st.expr[0]
        rule_vars[st.label] = {db.statements[h].expr[1]: db.statements[h].expr[0] for h in st.hyps}
    return Grammar(rules, rule_type, rule_vars, var_type)


def parse_expr(g: Grammar, expr, var_type: dict | None = None):
    """The syntax tree of `expr` (typecode first; `|-` read as `wff`), or None when it has no single parse.
    `var_type` gives the typecodes of the variables (default: the grammar's)."""
    vt = g.var_type if var_type is None else var_type
    typ = PROVABLE.get(expr[0], expr[0])
    toks = tuple(expr[1:])
    memo, busy = {}, set()

    def at(t, i):
        """Every (tree, end) with tree of typecode t spanning toks[i:end]."""
        key = (t, i)
        if key in memo:
            return memo[key]
        if key in busy:               # left recursion: no parse through this path
            return []
        busy.add(key)
        out = []
        if i < len(toks) and vt.get(toks[i]) == t:
            out.append((toks[i], i + 1))
        for label, body in g.rules.get(t, ()):
            for binds, end in seq(g.rule_vars[label], body, 0, i, {}):
                out.append(((label,) + tuple(binds[v] for v in g.rule_vars[label]), end))
        busy.discard(key)
        memo[key] = out
        return out

    def seq(rule_vars, body, k, i, binds):
        if k == len(body):
            yield binds, i
            return
        sym = body[k]
        if sym in rule_vars:              # a variable of the rule: a subtree of its typecode
            for tree, j in at(rule_vars[sym], i):
                yield from seq(rule_vars, body, k + 1, j, {**binds, sym: tree})
        elif i < len(toks) and toks[i] == sym:
            yield from seq(rule_vars, body, k + 1, i + 1, binds)

    full = [tree for tree, end in at(typ, 0) if end == len(toks)]
    return full[0] if len(full) == 1 else None


def tree_type(g: Grammar, tree, var_type: dict):
    return var_type.get(tree) if isinstance(tree, str) else g.rule_type[tree[0]]


def variables_of(tree) -> set:
    if isinstance(tree, str):
        return {tree}
    return set().union(*(variables_of(t) for t in tree[1:])) if len(tree) > 1 else set()


def match(g: Grammar, pattern, tree, sigma: dict, pat_types: dict, tree_types: dict) -> bool:
    """Extend `sigma` (pattern variable -> subtree of `tree`) so that sigma(pattern) == tree; False when
    impossible (sigma may then be partly extended: pass a copy). Bindings respect typecodes."""
    if isinstance(pattern, str):
        if pattern in sigma:
            return sigma[pattern] == tree
        if tree_type(g, tree, tree_types) != pat_types[pattern]:
            return False
        sigma[pattern] = tree
        return True
    if isinstance(tree, str) or tree[0] != pattern[0]:
        return False
    return all(match(g, p, t, sigma, pat_types, tree_types) for p, t in zip(pattern[1:], tree[1:]))


@dataclasses.dataclass(frozen=True)
class Parsed:
    """A statement as trees: its conclusion and its `$e` hypotheses, with its variables' typecodes."""
    label: str
    conclusion: object
    hyps: tuple
    types: dict
    dvs: frozenset = frozenset()


def parsed_assertion(db: Database, g: Grammar, st: Statement) -> Parsed | None:
    """A `|-` assertion of `db` as trees (None when a part does not parse); typecodes from its own `$f`."""
    types = {db.statements[h].expr[1]: db.statements[h].expr[0] for h in st.hyps if db.statements[h].kind == "f"}
    concl = parse_expr(g, st.expr, types)
    hyps = tuple(parse_expr(g, db.statements[h].expr, types) for h in st.hyps if db.statements[h].kind == "e")
    if concl is None or any(h is None for h in hyps):
        return None
    return Parsed(st.label, concl, hyps, types, st.dvs)


def instance(g: Grammar, general: Parsed, specific: Parsed, specific_dvs=frozenset()) -> dict | None:
    """A substitution σ making `specific` an instance of `general`, or None.

    σ maps general's variables to well-formed trees over specific's symbols with σ(conclusion of general) ==
    conclusion of specific, every `$e` of general mapped by σ onto SOME `$e` of specific (specific may have more),
    and general's `$d x y` kept: every variable a of σ(x) and b of σ(y) distinct with (a, b) in `specific_dvs`.
    This is the sound direction: then one step applying general (σ's syntax proofs, then specific's own
    hypotheses) proves specific, so specific is no new theorem. The converse (specific's hypotheses mapping into
    general's) would not be: specific could then assume less than general needs."""
    sigma = {}
    if not match(g, general.conclusion, specific.conclusion, sigma, general.types, specific.types):
        return None
    order = sorted(general.hyps, key=lambda h: -len(str(h)))  # the most constrained first: fail early

    def hyps_from(k, sigma):
        if k == len(order):
            return sigma
        for h in specific.hyps:
            s = dict(sigma)
            if match(g, order[k], h, s, general.types, specific.types):
                found = hyps_from(k + 1, s)
                if found is not None:
                    return found
        return None

    sigma = hyps_from(0, sigma)
    if sigma is None:
        return None
    for x, y in general.dvs:
        for a in variables_of(sigma[x]):
            for b in variables_of(sigma[y]):
                if a == b or (min(a, b), max(a, b)) not in specific_dvs:
                    return None
    return sigma


def _shape(tree):
    """Index key: the root's label and its children's labels (None for a variable)."""
    if isinstance(tree, str):
        return None
    return (tree[0],) + tuple(None if isinstance(t, str) else t[0] for t in tree[1:])


class InstanceIndex:
    """The `|-` assertions of a database indexed by conclusion shape, to find one that a statement instantiates.

    A general conclusion whose child is a variable matches any child of the specific one there, so a lookup
    tries the 2^k keys with each child label either kept or replaced by None (k: the root's arity, 1-3 in set.mm's
    propositional part), plus the assertions whose whole conclusion is a variable."""

    def __init__(self, db: Database, g: Grammar | None = None):
        self.g = grammar(db) if g is None else g
        self.by_shape, self.unparsed, self.order = {}, [], db.position
        for st in db.assertions():
            if st.expr[0] not in PROVABLE:
                continue
            p = parsed_assertion(db, self.g, st)
            if p is None:
                self.unparsed.append(st.label)
                continue
            self.by_shape.setdefault(_shape(p.conclusion), []).append(p)

    def candidates(self, tree):
        key = _shape(tree)
        out = list(self.by_shape.get(None, ()))
        if key is None:
            return out
        kids = key[1:]
        keys = {(key[0],) + tuple(None if (mask >> i) & 1 else kids[i] for i in range(len(kids)))
                for mask in range(1 << len(kids))}
        for k in keys:
            out.extend(self.by_shape.get(k, ()))
        return out

    @classmethod
    def of(cls, g: Grammar, statements: list) -> "InstanceIndex":
        """An index over the given `Parsed` statements (not a database's); their order is the list's."""
        self = cls.__new__(cls)
        self.g, self.by_shape, self.unparsed = g, {}, []
        self.order = {p.label: i for i, p in enumerate(statements)}
        for p in statements:
            self.by_shape.setdefault(_shape(p.conclusion), []).append(p)
        return self

    def hits(self, specific: Parsed, specific_dvs=frozenset()) -> list:
        """Every (label, σ) of an indexed statement that `specific` is an instance of."""
        hits = []
        for general in self.candidates(specific.conclusion):
            sigma = instance(self.g, general, specific, specific_dvs)
            if sigma is not None:
                hits.append((general.label, sigma))
        return hits

    def find(self, specific: Parsed, specific_dvs=frozenset()):
        """(label of the first assertion, in database order, that `specific` is an instance of, σ) or None."""
        hits = self.hits(specific, specific_dvs)
        return min(hits, key=lambda h: self.order[h[0]]) if hits else None
