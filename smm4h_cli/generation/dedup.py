"""Exact and near duplicates among synthetic posts, and copies of training posts (leaks).

Texts are normalised (lower case, URLs and @mentions removed, punctuation dropped, spaces
collapsed) before comparing. Near duplicates are pairs whose TF-IDF vectors of character
4-grams have a cosine similarity at or above a threshold (0.9 by default). A synthetic post
is flagged, in this order of precedence:

``example_copy``                  it is mostly a copy of a few-shot example shown in its own call:
                                  at least 80% of its normalised characters lie in runs of 8 or
                                  more shared with that example (so an example with a word changed,
                                  or cut short, or with a few words added, is one);
``train_exact`` / ``train_near``  it copies (or nearly copies) a post of the training file;
``exact`` / ``near``              it repeats an earlier synthetic post (the first one stays unflagged).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

KINDS = ("example_copy", "train_exact", "train_near", "exact", "near")
#: Kinds that copy training posts (the rest repeat synthetic posts).
COPY_KINDS = ("example_copy", "train_exact", "train_near")
EXAMPLE_COPY_SHARE = 0.8
_MIN_RUN = 8
_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"@\w+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    text = _MENTION.sub(" ", _URL.sub(" ", text.lower()))
    return " ".join(_PUNCT.sub(" ", text).split())


def copied_share(text: str, example: str) -> float:
    """The share of ``text``'s characters (normalised) in runs of at least 8 shared with ``example``."""
    from difflib import SequenceMatcher

    if not text:
        return 0.0
    blocks = SequenceMatcher(None, text, example, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks if b.size >= _MIN_RUN) / len(text)


def find_duplicates(
    texts: Sequence[str],
    train_texts: Sequence[str],
    train_ids: Sequence[str],
    ids: Sequence[str],
    threshold: float = 0.9,
    shown: Sequence[Sequence[tuple[str, str]]] | None = None,
    block_rows: int | None = None,
) -> tuple[list[str | None], list[str | None], Counter]:
    """For each synthetic post: its duplicate kind (or None) and the id of the post it repeats.

    ``shown``: for each post, the (id, text) few-shot examples of its call (``example_copy``).
    ``block_rows``: rows of the similarity matrix computed at once (None: as many as keep a block
    within ``BLOCK_ENTRIES``), so memory stays bounded however many posts there are; the result
    does not depend on it."""
    kinds: list[str | None] = [None] * len(texts)
    of: list[str | None] = [None] * len(texts)
    if not texts:
        return kinds, of, Counter()
    norm = [normalise(t) for t in texts]
    train_norm = [normalise(t) for t in train_texts]
    train_index: dict[str, int] = {}
    for j, t in enumerate(train_norm):
        train_index.setdefault(t, j)

    nearest = _nearest(norm, train_norm, block_rows)
    first_seen: dict[str, int] = {}
    for i, t in enumerate(norm):
        copied = _example_copied(t, shown[i]) if shown is not None and t else None
        if copied is not None:
            kinds[i], of[i] = "example_copy", copied
        elif t and t in train_index:
            kinds[i], of[i] = "train_exact", train_ids[train_index[t]]
        elif nearest is not None and nearest.train_best is not None and nearest.train_best[i] >= threshold:
            kinds[i], of[i] = "train_near", train_ids[int(nearest.train_of[i])]
        elif t and t in first_seen:
            kinds[i], of[i] = "exact", ids[first_seen[t]]
        elif i > 0 and nearest is not None and nearest.self_best[i] >= threshold:
            kinds[i], of[i] = "near", ids[int(nearest.self_of[i])]
        if t:
            first_seen.setdefault(t, i)
    return kinds, of, Counter(k for k in kinds if k)


def _example_copied(norm: str, examples: Sequence[tuple[str, str]]) -> str | None:
    for example_id, example in examples:
        if copied_share(norm, normalise(example)) >= EXAMPLE_COPY_SHARE:
            return example_id
    return None


#: Similarities computed at once (a block of rows of the matrix): 4M float32 values, 16 MB.
#: The whole N x N matrix would be 5 GB for 20,000 posts, 30 GB for 50,000.
BLOCK_ENTRIES = 1 << 22


@dataclass
class _Nearest:
    """For each synthetic post: the highest cosine to an earlier synthetic post (``-inf`` for the
    first) and to a training post (None without training posts), and where the first such is."""

    self_best: np.ndarray
    self_of: np.ndarray
    train_best: np.ndarray | None
    train_of: np.ndarray | None


def _nearest(norm: list[str], train_norm: list[str], block_rows: int | None = None) -> _Nearest | None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not any(norm) and not any(train_norm):
        return None
    # One pass over synthetic and training texts; rows come out L2-normalised, so products are cosines.
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(4, 4), dtype=np.float32)
    matrix = vectorizer.fit_transform(norm + train_norm)
    n, n_train = len(norm), len(train_norm)
    syn, train = matrix[:n], matrix[n:]
    rows = block_rows or max(1, BLOCK_ENTRIES // (n + n_train))
    out = _Nearest(np.full(n, -np.inf, np.float32), np.zeros(n, np.int64),
                   np.empty(n, np.float32) if n_train else None, np.zeros(n, np.int64) if n_train else None)
    # Row i of a block is computed from row i and the other matrix alone (a sparse product sums each
    # entry in the same order whatever else it computes), so the values are those of the whole matrix.
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = syn[start:stop]
        earlier = (block @ syn[:stop].T).toarray()  # row i: posts 0 .. stop-1, of which only j < i count
        earlier[np.arange(stop)[None, :] >= np.arange(start, stop)[:, None]] = -np.inf
        out.self_best[start:stop], out.self_of[start:stop] = earlier.max(axis=1), earlier.argmax(axis=1)
        if n_train:
            near = (block @ train.T).toarray()
            out.train_best[start:stop], out.train_of[start:stop] = near.max(axis=1), near.argmax(axis=1)
    return out
