"""ListOps (Nangia & Bowman, 2018), generated offline by the procedure of the Long Range Arena's generator
(the data kzl/universal-computation and the FPT paper trained on).

An expression is a tree: each node is, with probability 1 - value_p (or always at max_depth), a digit
0-9; otherwise an operator over 2..max_args sub-trees, drawn uniformly from

    MAX  the largest argument          MIN  the smallest
    MED  the median, truncated to int  SM   the sum modulo 10

written in prefix form with a closing bracket:  [MAX 2 9 [MIN 4 7 ] 0 ]  -> 9.
Its length counts operators, closing brackets and digits (the tokens above: 9); an expression is kept
when min_length < length < max_length. LRA's settings: max_depth 10, max_args 10, lengths 500-2000,
value_p 0.25, 96,000 training and 2,000 test expressions; the answer (10 classes) is the root's value.

Example i of a split is drawn from a generator seeded by (seed, split, i): the data set is a pure
function of its config, made in any order, in any worker, after a resume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from patchbench.errors import ConfigError

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
END = "]"
DIGITS = tuple(str(d) for d in range(10))
PAD_ID = 0
VOCAB = ("<pad>", *DIGITS, *OPERATORS, END)  # 16 ids; 0 pads
MAX_TRIES = 100_000  # trees drawn per example before the length window is declared unreachable


def apply(op: str, args: Sequence[int]) -> int:
    """The value of operator `op` over its arguments' values."""
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        return int(np.median(args))  # LRA: int() of the median, so the mean of two middles is truncated
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate(tokens: Sequence[str]) -> int:
    """The value of a bracketed prefix expression, e.g. ['[MAX', '2', '9', ']'] -> 9 (a stack machine,
    independent of the generator, so tests can check one against the other)."""
    stack: list[list] = []
    value = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == END:
            if not stack or len(stack[-1]) < 2:
                raise ValueError("']' closes no operator with arguments")
            op, *args = stack.pop()
            value = apply(op, args)
            if stack:
                stack[-1].append(value)
        elif tok in DIGITS:
            if not stack:
                if value is not None:
                    raise ValueError("more than one expression")
                value = int(tok)
            else:
                stack[-1].append(int(tok))
        else:
            raise ValueError(f"unknown ListOps token {tok!r}")
    if stack or value is None:
        raise ValueError("unbalanced expression")
    return value


def depth_of(tokens: Sequence[str]) -> int:
    """Nesting depth: a digit alone is depth 1, an operator over digits depth 2 (LRA counts from 1)."""
    level = deepest = 0
    for tok in tokens:
        if tok in OPERATORS:
            level += 1
            deepest = max(deepest, level)
        elif tok == END:
            level -= 1
    return deepest + 1


class _TooLong(Exception):
    pass


def generate_tree(rng: np.random.Generator, max_depth: int, max_args: int, value_p: float, limit: int) -> tuple[list[str], int]:
    """One random expression (tokens, value) by LRA's recursion; a tree that reaches `limit` tokens is
    abandoned early (it would be rejected anyway, so the kept trees are distributed the same)."""
    out: list[str] = []

    def node(depth: int) -> int:
        if depth >= max_depth or rng.random() > value_p:
            d = int(rng.integers(0, 10))
            out.append(DIGITS[d])
            if len(out) >= limit:
                raise _TooLong
            return d
        n_args = int(rng.integers(2, max_args + 1))
        op = OPERATORS[int(rng.integers(0, len(OPERATORS)))]
        out.append(op)
        args = [node(depth + 1) for _ in range(n_args)]
        out.append(END)
        if len(out) >= limit:
            raise _TooLong
        return apply(op, args)

    value = node(1)
    return out, value


def sampler(max_depth: int, max_args: int, min_length: int, max_length: int, value_p: float = 0.25) -> Callable:
    """make(rng) -> (tokens, value): draw trees until one's length lies strictly between the limits."""
    def make(rng: np.random.Generator) -> tuple[list[str], int]:
        for _ in range(MAX_TRIES):
            try:
                tokens, value = generate_tree(rng, max_depth, max_args, value_p, max_length)
            except _TooLong:
                continue
            if len(tokens) > min_length:
                return tokens, value
        raise ConfigError(f"data: no ListOps expression with {min_length} < length < {max_length} in {MAX_TRIES} draws "
                          f"(max_depth={max_depth}, max_args={max_args}); widen the length window or raise max_depth/max_args")
    return make


def encode(tokens: Sequence[str], keep_brackets: bool = True) -> np.ndarray:
    """Tokens -> int64 ids over VOCAB. keep_brackets=False drops every ']' as kzl's input pipeline did
    (its TensorFlow tokenizer kept alphanumeric runs only, so '[MAX' became 'MAX' and ']' vanished)."""
    index = {t: i for i, t in enumerate(VOCAB)}
    return np.asarray([index[t] for t in tokens if keep_brackets or t != END], dtype=np.int64)
