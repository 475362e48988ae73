"""Unique n-gram counting: smm4h's polars counter against scikit-learn's CountVectorizer.

Builds POSTS posts (default 1,000,000) by recombining halves of the sample posts (seeded),
counts unique n-grams for n = 1..3 with smm4h's code and with CountVectorizer(ngram_range=(n, n))
on the same texts, checks the counts are identical, and prints both times, the ratio and the
peak memory of smm4h's count. Target: at least 5x faster, identical counts, peak under 2 GB.

    python bench/ngrams.py [--posts 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sklearn.feature_extraction.text import CountVectorizer  # noqa: E402

from smm4h_cli.analysis.ngrams import count_ngrams, tokenize  # noqa: E402


def recombined_posts(count: int, seed: int) -> list[str]:
    texts = []
    for path in sorted((ROOT / "sample_data").glob("task*/*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.open(encoding="utf-8")]
    halves = []
    for t in texts:
        words = t.split()
        cut = len(words) // 2
        halves += [" ".join(words[:cut]), " ".join(words[cut:])]
    halves = [h for h in halves if h]
    rng = random.Random(seed)
    return [f"{rng.choice(halves)} {rng.choice(halves)}" for _ in range(count)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--psytar", help="ignored (make bench passes it to every script)")
    args = parser.parse_args()

    texts = recombined_posts(args.posts, args.seed)
    base_mb = peak_rss_mb()
    start = time.perf_counter()
    ours = count_ngrams(tokenize(texts), (1, 2, 3))
    ours_s = time.perf_counter() - start
    ours_peak = peak_rss_mb()

    theirs = {}
    start = time.perf_counter()
    for n in (1, 2, 3):
        cv = CountVectorizer(ngram_range=(n, n))
        X = cv.fit_transform(texts)
        theirs[n] = (len(cv.vocabulary_), int(X.sum()))
        del cv, X
    theirs_s = time.perf_counter() - start

    identical = all(ours[n] == theirs[n] for n in (1, 2, 3))
    for n in (1, 2, 3):
        print(f"n={n}: smm4h unique={ours[n][0]:,} total={ours[n][1]:,}  CountVectorizer unique={theirs[n][0]:,} total={theirs[n][1]:,}")
    print(
        f"ngrams: {args.posts:,} posts, n=1..3: smm4h {ours_s:.1f} s, CountVectorizer {theirs_s:.1f} s, "
        f"ratio {theirs_s / ours_s:.1f}x (target >= 5x), counts identical: {identical}, "
        f"peak RSS {ours_peak:,.0f} MB after smm4h's count ({base_mb:,.0f} MB before it; target < 2,048 MB)"
    )
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
