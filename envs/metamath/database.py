"""Metamath `.mm` files: a tokenizer and a parser into a `Database` of labelled statements.

Follows the language as specified in the Metamath book (Megill & Wheeler, 2nd ed., ch. 4): math symbols `$c`,
`$v`, floating hypotheses `$f`, essential hypotheses `$e`, axioms `$a`, provable assertions `$p ... $= proof $.`,
scoping blocks `${ ... $}`, disjoint-variable conditions `$d`, comments `$( ... $)`, normal proofs (a list of
labels) and compressed proofs (`( labels ) LETTERS`). File inclusion `$[ f $]` is refused with an error naming
the file and line (set.mm does not use it).

Each assertion stores its *frame* at the point it is stated (book 4.2.7): the mandatory hypotheses in order of
appearance (the `$f` of every variable in the statement or an active `$e`, and every active `$e`) and the
mandatory `$d` pairs; a `$p` also keeps every hypothesis and `$d` pair active in its scope, which its proof may
use. Errors raise `MMError` with `file:line` and, where there is one, the label.
"""

from __future__ import annotations

import dataclasses
import re


class MMError(Exception):
    """A malformed database or a proof that does not verify; the message names file, line and label."""


@dataclasses.dataclass(frozen=True)
class Statement:
    label: str
    kind: str                       # 'f', 'e', 'a' or 'p'
    expr: tuple[str, ...]           # typecode first
    line: int
    hyps: tuple[str, ...] = ()      # mandatory hypotheses, in order (assertions only)
    dvs: frozenset = frozenset()    # mandatory $d pairs (x, y) with x < y (assertions only)
    proof: tuple[str, ...] = ()     # raw proof tokens ($p only)
    active_hyps: frozenset = frozenset()  # every hypothesis label usable in the proof ($p only)
    active_dvs: frozenset = frozenset()   # every $d pair active where the $p is stated
    end: int = 0                    # line of the closing '$.'
    block: int = 0                  # line of the outermost '${' around it (0: top level)


@dataclasses.dataclass
class Database:
    path: str
    constants: set
    variables: set
    statements: dict                 # label -> Statement, in order of appearance (dicts keep order)
    position: dict = dataclasses.field(default_factory=dict)  # label -> index in order of appearance

    def __post_init__(self):
        if not self.position:
            self.position = {lab: i for i, lab in enumerate(self.statements)}

    def assertions(self):
        return [s for s in self.statements.values() if s.kind in "ap"]

    def theorems(self):
        return [s for s in self.statements.values() if s.kind == "p"]


_LABEL = re.compile(r"^[A-Za-z0-9._-]+$")


def tokenize(text: str, path: str):
    """Yield (token, line) outside comments. Unterminated comments and `$[` inclusions raise MMError."""
    in_comment_since = None
    for lineno, line in enumerate(text.split("\n"), start=1):
        for tok in line.split():
            if in_comment_since is not None:
                if tok == "$)":
                    in_comment_since = None
                elif tok == "$(":
                    raise MMError(f"{path}:{lineno}: nested comment '$(' inside the comment opened on line "
                                  f"{in_comment_since}")
                continue
            if tok == "$(":
                in_comment_since = lineno
            elif tok == "$[":
                raise MMError(f"{path}:{lineno}: file inclusion '$[ ... $]' is not supported; concatenate the "
                              "included files into one .mm file")
            else:
                yield tok, lineno
    if in_comment_since is not None:
        raise MMError(f"{path}:{in_comment_since}: comment '$(' never closed with '$)' (file ends first)")


class _Scope:
    def __init__(self):
        self.vars: set = set()
        self.floats: list = []        # (label, var)
        self.essentials: list = []    # labels
        self.dvs: set = set()


def parse(path: str, text: str | None = None, max_line: int | None = None) -> Database:
    """Parse a .mm file (or `text`, reported as `path`). `max_line` stops after that line (a truncated database);
    blocks still open there are closed, so the statements before it keep their frames."""
    if text is None:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    if max_line is not None:
        text = "\n".join(text.split("\n")[:max_line])
    name = path
    constants, variables, statements, position = set(), set(), {}, {}
    scopes = [_Scope()]
    block_lines = []
    toks = tokenize(text, name)

    def active_vars():
        return set().union(*(s.vars for s in scopes))

    def float_of(var):
        for s in reversed(scopes):
            for lab, v in s.floats:
                if v == var:
                    return lab
        return None

    def read_until(end, line, label, what):
        out = []
        for tok, ln in toks:
            if tok == end:
                return out, ln
            if tok.startswith("$") and not (end == "$." and tok == "$=" and what == "$p"):
                raise MMError(f"{name}:{ln}: {label or what}: unexpected '{tok}' before '{end}' "
                              f"(statement starting on line {line})")
            out.append(tok)
        raise MMError(f"{name}:{line}: {label or what}: file ends before '{end}' (truncated input?)")

    def check_expr(expr, line, label):
        if not expr:
            raise MMError(f"{name}:{line}: {label}: empty statement (a typecode is needed)")
        if expr[0] not in constants:
            raise MMError(f"{name}:{line}: {label}: typecode '{expr[0]}' is not a declared constant")
        av = active_vars()
        for sym in expr[1:]:
            if sym not in constants and sym not in av:
                raise MMError(f"{name}:{line}: {label}: symbol '{sym}' is not an active constant or variable")
            if sym in av and float_of(sym) is None:
                raise MMError(f"{name}:{line}: {label}: variable '{sym}' has no active $f hypothesis")

    def frame(expr):
        ess = [lab for s in scopes for lab in s.essentials]
        used = set(v for v in expr if v in variables)
        for lab in ess:
            used.update(v for v in statements[lab].expr if v in variables)
        floats = [(lab, v) for s in scopes for lab, v in s.floats if v in used]
        hyps = sorted([f for f, _ in floats] + ess, key=position.__getitem__)
        all_dvs = set().union(*(s.dvs for s in scopes))
        mand_dvs = frozenset((x, y) for x, y in all_dvs if x in used and y in used)
        active = frozenset([lab for s in scopes for lab, _ in s.floats] + ess)
        return tuple(hyps), mand_dvs, active, frozenset(all_dvs)

    label = None
    for tok, line in toks:
        if tok == "${":
            scopes.append(_Scope())
            block_lines.append(line)
        elif tok == "$}":
            if len(scopes) == 1:
                raise MMError(f"{name}:{line}: '$}}' without a matching '${{'")
            scopes.pop()
            block_lines.pop()
        elif tok in ("$c", "$v"):
            syms, _ = read_until("$.", line, None, tok)
            for sym in syms:
                if sym in constants or sym in active_vars():
                    raise MMError(f"{name}:{line}: symbol '{sym}' declared twice")
                if tok == "$c":
                    if len(scopes) > 1:
                        raise MMError(f"{name}:{line}: constant '{sym}' declared inside a block")
                    constants.add(sym)
                else:
                    variables.add(sym)
                    scopes[-1].vars.add(sym)
        elif tok == "$d":
            syms, _ = read_until("$.", line, None, tok)
            av = active_vars()
            for sym in syms:
                if sym not in av:
                    raise MMError(f"{name}:{line}: $d: '{sym}' is not an active variable")
            scopes[-1].dvs.update((min(x, y), max(x, y)) for x in syms for y in syms if x != y)
        elif tok.startswith("$"):
            raise MMError(f"{name}:{line}: unexpected keyword '{tok}'" + (f" after label '{label}'" if label else ""))
        else:
            label = tok
            if not _LABEL.match(label):
                raise MMError(f"{name}:{line}: '{label}' is not a valid label")
            if label in statements:
                raise MMError(f"{name}:{line}: label '{label}' already used on line {statements[label].line}")
            try:
                kw, kline = next(toks)
            except StopIteration:
                raise MMError(f"{name}:{line}: {label}: file ends after the label (truncated input?)") from None
            if kw not in ("$f", "$e", "$a", "$p"):
                raise MMError(f"{name}:{kline}: {label}: expected $f, $e, $a or $p after the label, got '{kw}'")
            body, end_line = read_until("$.", line, label, kw)
            position[label] = len(position)
            if kw == "$p":
                if "$=" not in body:
                    raise MMError(f"{name}:{line}: {label}: $p statement without '$=' proof")
                cut = body.index("$=")
                expr, proof = tuple(body[:cut]), tuple(body[cut + 1:])
                if not proof:
                    raise MMError(f"{name}:{line}: {label}: empty proof")
            else:
                expr, proof = tuple(body), ()
            if kw == "$f":
                if len(expr) != 2 or expr[0] not in constants or expr[1] not in active_vars():
                    raise MMError(f"{name}:{line}: {label}: $f must be 'typecode variable' with an active variable")
                if float_of(expr[1]) is not None and any(v == expr[1] for _, v in scopes[-1].floats):
                    raise MMError(f"{name}:{line}: {label}: variable '{expr[1]}' already has a $f in this block")
                statements[label] = Statement(label, "f", expr, line, end=end_line,
                                              block=block_lines[0] if block_lines else 0)
                scopes[-1].floats.append((label, expr[1]))
                continue
            check_expr(expr, line, label)
            if kw == "$e":
                statements[label] = Statement(label, "e", expr, line, end=end_line,
                                              block=block_lines[0] if block_lines else 0)
                scopes[-1].essentials.append(label)
                continue
            hyps, dvs, active, all_dvs = frame(expr)
            statements[label] = Statement(label, kw[1], expr, line, hyps, dvs, proof,
                                          active if kw == "$p" else frozenset(),
                                          all_dvs if kw == "$p" else frozenset(), end_line,
                                          block_lines[0] if block_lines else 0)
    if len(scopes) > 1 and max_line is None:
        raise MMError(f"{name}: file ends with {len(scopes) - 1} block(s) '${{' still open (truncated input?)")
    return Database(name, constants, variables, statements, position)
