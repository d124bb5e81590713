"""Proof checking by substitution (Metamath book, 4.3) and proof trees as graphs.

A proof, normal or compressed, is decoded into a DAG of steps (a compressed proof's `Z` marks let a later step
reuse an earlier subproof). Each step applies a label: a hypothesis active in the theorem's scope, or an earlier
assertion A whose mandatory hypotheses are the top stack entries. The `$f` entries give the substitution
σ (variable -> symbol string, typecodes must match), every `$e` of A under σ must equal its entry, and every
mandatory `$d x y` of A needs, for each variable a in σ(x) and b in σ(y): a != b and `$d a b` active where the
theorem is stated. The step proves σ(conclusion of A); the last step must prove the theorem and leave the stack
with exactly one entry. Failures raise `MMError` naming file, line, theorem label, step number and step label.

`ProofTree` unfolds the DAG into the tree REFACTOR works on (the reference's `ProofNode`): one node per step
(the label used, the expression proved), edges child -> parent, nodes in post-order (root last).
"""

from __future__ import annotations

import dataclasses

from envs.metamath.database import Database, MMError, Statement


@dataclasses.dataclass(frozen=True)
class ProofDag:
    labels: tuple[str, ...]
    children: tuple[tuple[int, ...], ...]
    exprs: tuple[tuple[str, ...], ...]   # root = last entry


@dataclasses.dataclass(frozen=True)
class ProofTree:
    labels: tuple[str, ...]
    exprs: tuple[tuple[str, ...], ...]
    children: tuple[tuple[int, ...], ...]  # post-order: children before parents, root last

    def __len__(self):
        return len(self.labels)

    def edges(self):
        """(child, parent) pairs."""
        return [(c, p) for p, cs in enumerate(self.children) for c in cs]

    def rpn(self):
        """The normal (uncompressed) proof: labels in post-order."""
        return list(self.labels)


def subtree_sizes(tree: ProofTree) -> list:
    """Nodes in each node's subtree (post-order: node i's subtree is the block i - size + 1 .. i)."""
    size = [1] * len(tree)
    for i, kids in enumerate(tree.children):
        size[i] += sum(size[k] for k in kids)
    return size


def _decode_compressed(db: Database, thm: Statement):
    """Yield ('label', name) / ('saved', k) / ('save', None) with the step number of each number decoded."""
    toks = thm.proof
    if ")" not in toks:
        raise MMError(f"{db.path}:{thm.line}: {thm.label}: compressed proof without ')'")
    close = toks.index(")")
    labels = list(thm.hyps) + list(toks[1:close])
    letters = "".join(toks[close + 1:])
    acc, step = 0, 0
    for ch in letters:
        if "A" <= ch <= "T":
            n = 20 * acc + ord(ch) - ord("A") + 1
            acc, step = 0, step + 1
            if n <= len(labels):
                yield step, "label", labels[n - 1]
            else:
                yield step, "saved", n - len(labels) - 1
        elif "U" <= ch <= "Y":
            acc = 5 * acc + ord(ch) - ord("U") + 1
        elif ch == "Z":
            yield step, "save", None
        elif ch == "?":
            raise MMError(f"{db.path}:{thm.line}: {thm.label}: step {step + 1}: unknown step '?' (incomplete proof)")
        else:
            raise MMError(f"{db.path}:{thm.line}: {thm.label}: bad character '{ch}' in compressed proof")
    if acc:
        raise MMError(f"{db.path}:{thm.line}: {thm.label}: compressed proof ends inside a number")


def _steps(db: Database, thm: Statement):
    if thm.proof[0] == "(":
        yield from _decode_compressed(db, thm)
    else:
        for i, lab in enumerate(thm.proof, start=1):
            if lab == "?":
                raise MMError(f"{db.path}:{thm.line}: {thm.label}: step {i}: unknown step '?' (incomplete proof)")
            yield i, "label", lab


def substitute(expr, sigma):
    out = []
    for sym in expr:
        out.extend(sigma.get(sym, (sym,)))
    return tuple(out)


def apply_assertion(db: Database, where: str, assertion: Statement, args, active_dvs):
    """The expression proved by `assertion` applied to hypothesis entries `args` (their expressions), checked.
    Returns (expr, sigma). `where` prefixes error messages."""
    sigma = {}
    for h, arg in zip(assertion.hyps, args):
        hyp = db.statements[h]
        if hyp.kind == "f":
            if arg[0] != hyp.expr[0]:
                raise MMError(f"{where}: hypothesis {h} of {assertion.label} needs typecode '{hyp.expr[0]}', "
                              f"got '{' '.join(arg)}'")
            sigma[hyp.expr[1]] = arg[1:]
    for h, arg in zip(assertion.hyps, args):
        hyp = db.statements[h]
        if hyp.kind == "e" and substitute(hyp.expr, sigma) != tuple(arg):
            raise MMError(f"{where}: hypothesis {h} of {assertion.label} needs "
                          f"'{' '.join(substitute(hyp.expr, sigma))}', got '{' '.join(arg)}'")
    for x, y in assertion.dvs:
        for a in (s for s in sigma[x] if s in db.variables):
            for b in (s for s in sigma[y] if s in db.variables):
                if a == b or (min(a, b), max(a, b)) not in active_dvs:
                    raise MMError(f"{where}: disjoint variable violation: {assertion.label} needs $d {x} {y}, "
                                  f"substituted variables '{a}' and '{b}' " +
                                  ("are the same" if a == b else "have no active $d"))
    return substitute(assertion.expr, sigma), sigma


def proof_dag(db: Database, thm: Statement | str) -> ProofDag:
    """Decode and check the proof of `thm`; raises MMError at the first failing step."""
    thm = db.statements[thm] if isinstance(thm, str) else thm
    if thm.kind != "p":
        raise MMError(f"{db.path}:{thm.line}: {thm.label} is not a $p statement")
    order = db.position
    labels, children, exprs, stack, saved = [], [], [], [], []
    for step, kind, what in _steps(db, thm):
        where = f"{db.path}:{thm.line}: {thm.label}: step {step}"
        if kind == "save":
            if not stack:
                raise MMError(f"{where}: 'Z' with an empty stack")
            saved.append(stack[-1])
            continue
        if kind == "saved":
            if what >= len(saved):
                raise MMError(f"{where}: reference to saved step {what + 1}, only {len(saved)} saved")
            stack.append(saved[what])
            continue
        where += f" ({what})"
        st = db.statements.get(what)
        if st is None:
            raise MMError(f"{where}: label '{what}' is not defined")
        if st.kind in "fe":
            if what not in thm.active_hyps:
                raise MMError(f"{where}: hypothesis '{what}' is not active in the scope of {thm.label}")
            kids, expr = (), st.expr
        else:
            if order[what] >= order[thm.label]:
                raise MMError(f"{where}: '{what}' is not stated before {thm.label}")
            n = len(st.hyps)
            if len(stack) < n:
                raise MMError(f"{where}: {what} needs {n} hypotheses, the stack has {len(stack)}")
            kids = tuple(stack[len(stack) - n:])
            del stack[len(stack) - n:]
            expr, _ = apply_assertion(db, where, st, [exprs[k] for k in kids], thm.active_dvs)
        labels.append(what)
        children.append(kids)
        exprs.append(expr)
        stack.append(len(labels) - 1)
    end = f"{db.path}:{thm.line}: {thm.label}"
    if len(stack) != 1:
        raise MMError(f"{end}: the proof leaves {len(stack)} entries on the stack, not 1")
    if exprs[stack[0]] != thm.expr:
        raise MMError(f"{end}: the proof proves '{' '.join(exprs[stack[0]])}', not the statement")
    if stack[0] != len(labels) - 1:  # the root is a reused step: put a copy at the end
        labels.append(labels[stack[0]]); children.append(children[stack[0]]); exprs.append(exprs[stack[0]])
    return ProofDag(tuple(labels), tuple(children), tuple(exprs))


def unfold(dag: ProofDag, max_nodes: int | None = None) -> ProofTree | None:
    """The proof tree of a DAG (shared subproofs copied); None when it would exceed `max_nodes`."""
    size = [0] * len(dag.labels)
    for i, kids in enumerate(dag.children):
        size[i] = 1 + sum(size[k] for k in kids)
    if max_nodes is not None and size[-1] > max_nodes:
        return None
    labels, exprs, children = [], [], []
    # iterative post-order copy
    todo = [(len(dag.labels) - 1, False)]
    built = []
    while todo:
        i, ready = todo.pop()
        if ready:
            n = len(dag.children[i])
            kids = tuple(built[len(built) - n:]) if n else ()
            del built[len(built) - n:]
            labels.append(dag.labels[i]); exprs.append(dag.exprs[i]); children.append(kids)
            built.append(len(labels) - 1)
        else:
            todo.append((i, True))
            todo.extend((k, False) for k in reversed(dag.children[i]))
    return ProofTree(tuple(labels), tuple(exprs), tuple(children))


def verify_all(db: Database, labels=None) -> dict:
    """label -> None (verified) or the error message, for every $p (or the given labels)."""
    out = {}
    for st in (db.statements[lab] for lab in labels) if labels is not None else db.theorems():
        try:
            proof_dag(db, st)
            out[st.label] = None
        except MMError as err:
            out[st.label] = str(err)
    return out


def _number(n: int) -> str:
    """Compressed-proof encoding of a step number n >= 1 (book, appendix B)."""
    out = chr(ord("A") + (n - 1) % 20)
    n = (n - 1) // 20
    while n:
        out = chr(ord("U") + (n - 1) % 5) + out
        n = (n - 1) // 5
    return out


def compress(db: Database, thm: Statement, tree: ProofTree, width: int = 70) -> str:
    """A compressed proof of `thm` from a proof tree (no `Z` reuse: each step is written out)."""
    hyps = list(thm.hyps)
    extra = sorted({lab for lab in tree.labels if lab not in hyps})
    index = {lab: i + 1 for i, lab in enumerate(hyps + extra)}
    letters = "".join(_number(index[lab]) for lab in tree.labels)
    lines = [letters[i:i + width] for i in range(0, len(letters), width)]
    return "( " + " ".join(extra) + " ) " + " ".join(lines)


def check_tree(db: Database, thm: Statement, tree: ProofTree) -> None:
    """Re-derive every node of a proof tree of `thm` (labels and children as given) and check its expression
    and the root; raises MMError naming the node (post-order index) that fails. Used on expanded and refactored
    proofs, whose node expressions were computed by substitution rather than by the verifier."""
    order = db.position
    for i, (lab, kids, expr) in enumerate(zip(tree.labels, tree.children, tree.exprs)):
        where = f"{db.path}:{thm.line}: {thm.label}: node {i} ({lab})"
        st = db.statements.get(lab)
        if st is None:
            raise MMError(f"{where}: label '{lab}' is not defined")
        if st.kind in "fe":
            if lab not in thm.active_hyps or kids:
                raise MMError(f"{where}: hypothesis '{lab}' is not active in the scope of {thm.label}")
            got = st.expr
        else:
            if order[lab] >= order[thm.label] or len(kids) != len(st.hyps):
                raise MMError(f"{where}: '{lab}' is stated later or gets {len(kids)} hypotheses, not "
                              f"{len(st.hyps)}")
            got, _ = apply_assertion(db, where, st, [tree.exprs[k] for k in kids], thm.active_dvs)
        if got != tuple(expr):
            raise MMError(f"{where}: proves '{' '.join(got)}', the tree says '{' '.join(expr)}'")
    if tuple(tree.exprs[-1]) != thm.expr:
        raise MMError(f"{db.path}:{thm.line}: {thm.label}: the tree proves '{' '.join(tree.exprs[-1])}'")
