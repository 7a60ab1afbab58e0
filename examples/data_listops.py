"""ListOps by the Long Range Arena rules (Tay et al. 2021, §3.1; Nangia & Bowman 2018).

A sequence is a nested expression over the digits 0–9 and four operators, written in prefix
form with closing brackets, e.g. ``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]`` → 5. The label
is its value (10 classes). Trees are drawn as the LRA generator draws them:

    node at depth d < max_depth: an operator with probability 1/4, else a digit (uniform 0–9);
                                 at d = max_depth always a digit; the root has depth 1
    operator: uniform over MIN, MAX, MED, SM; argument count uniform in 2..max_args
    MED = int(median) (the mean of the two middle values, truncated, for even counts)
    SM  = sum mod 10
    length = tokens: 1 per digit, 2 per operator (its opening token and "]")

and kept when min_length ≤ length ≤ max_length (LRA: 500 < length < 2000, max_depth 10,
max_args 10; ours: 256..2048). Duplicates are dropped.

Tokens (LRA tokenization without the parentheses): one id per symbol, 0 is padding:

    0 <pad> | 1..10 the digits 0..9 | 11 [MIN | 12 [MAX | 13 [MED | 14 [SM | 15 ]

A set is stored padded to max_length with ``lengths`` (uint8 ids, int64 labels and lengths).

    python examples/data_listops.py --out examples/data/listops_eval.npz
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from sequence_set import SequenceSet, write_eval_set

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
CLOSE = "]"
VOCAB = ("<pad>", *(str(d) for d in range(10)), *OPERATORS, CLOSE)
TOKEN_ID = {symbol: i for i, symbol in enumerate(VOCAB)}
OPERATOR_P = 0.25  # LRA VALUE_P: a node below max_depth is an operator with this probability

MIN_LENGTH, MAX_LENGTH = 256, 2048
MAX_DEPTH, MAX_ARGS = 10, 10
EVAL_COUNT = 256
EVAL_SEED = 1_000_003  # far from the training seeds, so the eval trees are drawn independently


@dataclass(frozen=True)
class Operation:
    """An operator node: its symbol and arguments (digits or further operations)."""

    op: str
    args: tuple[int | Operation, ...]


Tree = int | Operation


def random_tree(rng: random.Random, depth: int, max_depth: int, max_args: int) -> tuple[Tree, int]:
    """(tree, token count) drawn by the LRA rule at ``depth`` (the root has depth 1)."""
    if depth >= max_depth or rng.random() >= OPERATOR_P:
        return rng.randrange(10), 1
    length = 2
    args = []
    for _ in range(rng.randint(2, max_args)):
        arg, arg_length = random_tree(rng, depth + 1, max_depth, max_args)
        args.append(arg)
        length += arg_length
    return Operation(rng.choice(OPERATORS), tuple(args)), length


def evaluate(tree: Tree) -> int:
    """The value 0–9 of an expression."""
    if isinstance(tree, int):
        return tree
    values = [evaluate(a) for a in tree.args]
    if tree.op == "[MIN":
        return min(values)
    if tree.op == "[MAX":
        return max(values)
    if tree.op == "[MED":
        return int(np.median(values))
    return sum(values) % 10


def symbols(tree: Tree) -> list[str]:
    """The expression in prefix form, one symbol per token."""
    if isinstance(tree, int):
        return [str(tree)]
    out = [tree.op]
    for arg in tree.args:
        out.extend(symbols(arg))
    out.append(CLOSE)
    return out


def to_text(tree: Tree) -> str:
    return " ".join(symbols(tree))


def generate_listops(
    count: int,
    seed: int,
    min_length: int = MIN_LENGTH,
    max_length: int = MAX_LENGTH,
    max_depth: int = MAX_DEPTH,
    max_args: int = MAX_ARGS,
    exclude: frozenset[bytes] = frozenset(),
) -> SequenceSet:
    """``count`` distinct expressions of min_length..max_length tokens, padded to max_length.

    ``exclude``: token strings (``ids.tobytes()`` of the unpadded uint8 ids) that must not be
    drawn, e.g. the eval set's when drawing training data.
    """
    rng = random.Random(seed)
    seen = set(exclude)
    x = np.zeros((count, max_length), dtype=np.uint8)
    y = np.zeros(count, dtype=np.int64)
    lengths = np.zeros(count, dtype=np.int64)
    n = 0
    while n < count:
        tree, length = random_tree(rng, 1, max_depth, max_args)
        if not min_length <= length <= max_length:
            continue
        ids = np.fromiter((TOKEN_ID[s] for s in symbols(tree)), dtype=np.uint8, count=length)
        key = ids.tobytes()
        if key in seen:
            continue
        seen.add(key)
        x[n, :length], y[n], lengths[n] = ids, evaluate(tree), length
        n += 1
    return SequenceSet(x, y, lengths)


def token_keys(data: SequenceSet) -> frozenset[bytes]:
    """The unpadded token strings of a set (for ``exclude``)."""
    return frozenset(row[:n].tobytes() for row, n in zip(data.x, data.lengths, strict=True))


def eval_set(count: int = EVAL_COUNT, seed: int = EVAL_SEED) -> SequenceSet:
    return generate_listops(count, seed)


if __name__ == "__main__":
    write_eval_set(eval_set, "listops", EVAL_COUNT, EVAL_SEED)
