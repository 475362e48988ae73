"""Lexical diversity: the paper's unique n-gram counts (§3.3.2, Table 3) and two more measures.

* ``unique_ngrams``: the number of distinct n-grams in a sample, as the paper counts them.
* ``distinct_n``: unique / total n-grams (Li et al., 2016), comparable across sample sizes.
* ``compression_ratio``: size of the sample's text over its gzip size (Shaib et al., 2024,
  "Standardizing the measurement of text diversity"); higher means more repetitive text.

The default tokenizer is scikit-learn ``CountVectorizer``'s (lower-case, maximal runs of two or
more word characters), so the counts compare with the paper's. Counting runs in polars over
integer-free string structs, which is exact and an order of magnitude faster than building a
CountVectorizer vocabulary; ``bench/ngrams.py`` checks both claims.

Groups are sampled to equal size by ``groups.equal_size_sample``, the sampler ``embed-cluster``
uses too (seeded by the seed and each group's name; see ``analysis.groups``).
"""

from __future__ import annotations

import gzip
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import polars as pl

from smm4h_cli.analysis.groups import Group, equal_size_sample
from smm4h_cli.errors import InputError

TOKENIZERS = ("sklearn", "tweet")


@dataclass(frozen=True)
class NgramOptions:
    """Options of the n-gram analysis.

    Attributes:
        ns: the n-gram orders to count (default 1, 2, 3 as in the paper).
        sample: posts per group; every group is sampled down to ``min(sample, smallest group)``
            so that counts compare (the paper: 1,000). 0 uses every post of every group.
        seed: seed of the sampling.
        tokenizer: ``sklearn`` (CountVectorizer's default analyzer) or ``tweet`` (NLTK's
            TweetTokenizer, lower-cased).
    """

    ns: tuple[int, ...] = (1, 2, 3)
    sample: int = 1000
    seed: int = 0
    tokenizer: str = "sklearn"

    def __post_init__(self) -> None:
        if not self.ns or any(n < 1 for n in self.ns):
            raise InputError(f"--n takes positive n-gram orders such as 1,2,3; got {list(self.ns)}.")
        if len(set(self.ns)) != len(self.ns):
            raise InputError(f"--n lists an order twice: {list(self.ns)}.")
        if self.sample < 0:
            raise InputError(f"--sample must be 0 (all posts) or a positive size; got {self.sample}.")
        if self.tokenizer not in TOKENIZERS:
            raise InputError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}; got '{self.tokenizer}'.")


@lru_cache(maxsize=1)
def python_word_class() -> str:
    """A Rust-regex character class equal to Python's Unicode ``\\w`` on this interpreter.

    polars' regex engine has its own idea of ``\\w`` (it includes combining marks such as the
    emoji variation selector U+FE0F); scikit-learn uses Python's. Spelling out Python's set as
    ranges makes the polars tokenizer give CountVectorizer's tokens exactly.
    """
    word = re.compile(r"\w")
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        if word.match(chr(cp)):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    parts = (f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return "[" + "".join(parts) + "]"


def tokenize(texts: Sequence[str], tokenizer: str = "sklearn") -> pl.Series:
    """Token lists, one per text, as the chosen tokenizer makes them."""
    if tokenizer == "tweet":
        from nltk.tokenize import TweetTokenizer

        tok = TweetTokenizer(preserve_case=False)
        return pl.Series("tok", [tok.tokenize(t) for t in texts], dtype=pl.List(pl.String))
    # CountVectorizer: doc.lower(), then re.findall(r"(?u)\b\w\w+\b"), i.e. maximal runs of
    # two or more word characters. Lower-casing stays in Python so it is Python's exactly.
    lowered = pl.Series("t", [t.lower() for t in texts], dtype=pl.String)
    return lowered.str.extract_all(python_word_class() + "{2,}").alias("tok")


def count_ngrams(tokens: pl.Series, ns: Sequence[int]) -> dict[int, tuple[int, int]]:
    """``{n: (unique n-grams, total n-grams)}`` over all token lists in ``tokens``."""
    flat = (
        pl.DataFrame({"tok": tokens})
        .with_row_index("doc")
        .explode("tok")
        .drop_nulls("tok")
        .lazy()
    )
    queries = []
    for n in ns:
        # An n-gram starts at every token whose (n-1)-th successor is in the same post.
        parts = [pl.col("tok").shift(-k).alias(f"t{k}") for k in range(n)]
        same_doc = pl.col("doc").shift(-(n - 1)) == pl.col("doc")
        queries.append(
            flat.select(parts + [same_doc.alias("ok")])
            .filter(pl.col("ok"))
            .select(
                pl.lit(n).alias("n"),
                pl.struct([f"t{k}" for k in range(n)]).n_unique().alias("unique"),
                pl.len().alias("total"),
            )
        )
    out = pl.concat(pl.collect_all(queries))
    result = {}
    for n, unique, total in out.iter_rows():
        result[n] = (int(unique), int(total)) if total else (0, 0)
    return result


def compression_ratio(texts: Sequence[str]) -> float:
    """Bytes of the texts (one per line) over their gzip size: higher is more repetitive."""
    raw = "\n".join(texts).encode("utf-8")
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))


def ngram_table(groups: Sequence[Group], options: NgramOptions = NgramOptions()) -> list[dict]:
    """The paper's Table 3 with distinct-n and compression ratio: one dict per group."""
    empty = [g.name for g in groups if not g.texts]
    if empty:
        raise InputError(f"group '{empty[0]}' has no posts; nothing to count.")
    sampled, _ = equal_size_sample(groups, options.sample, options.seed)
    rows = []
    for g in sampled:
        counts = count_ngrams(tokenize(g.texts, options.tokenizer), options.ns)
        row: dict = {"group": g.name, "posts": len(g.texts)}
        for n in options.ns:
            row[f"unique_{n}grams"] = counts[n][0]
        for n in options.ns:
            unique, total = counts[n]
            row[f"distinct_{n}"] = unique / total if total else 0.0
        row["compression_ratio"] = compression_ratio(g.texts)
        rows.append(row)
    return rows
