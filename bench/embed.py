"""Embedding step of `smm4h embed-cluster` against a bare SentenceTransformer.encode, and its cache.

Takes POSTS (default 5,000) distinct sentences from PsyTAR (real patient posts), and in the same
run and process:

1. baseline: ``SentenceTransformer(<embedded all-MiniLM-L6-v2>).encode(texts, batch_size=B,
   normalize_embeddings=True)``;
2. smm4h: ``embed_texts`` with a fresh cache (hashing, length-sorted chunks, cache write);
3. smm4h again on the same texts: every embedding read from the warm cache;
4. smm4h with ``--precision bf16`` (bf16 autocast), no cache.

Prints the CPU and wall time of each, the throughput ratio baseline/smm4h (target >= 0.95, by
CPU time, because the machine is shared and wall time swings with the neighbours' load), the
warm-cache speed-up over the cold run (target >= 50x), the largest difference between the
two sets of vectors, and for bf16: its speed-up over the bare fp32 encode (target >= 1.8x) and
the smallest cosine between a post's bf16 and fp32 vectors, over every post (target >= 0.999).
Models are loaded before timing starts.

    python bench/embed.py --psytar ../shared/data/psytar [--posts 5000] [--batch-size 64] [--repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from smm4h_cli.analysis.embeddings import SentenceEmbedder, embed_texts  # noqa: E402
from smm4h_cli.models import EMBEDDED_MINILM, minilm_path  # noqa: E402


def psytar_sentences(folder: Path, count: int) -> list[str]:
    """Distinct PsyTAR sentences, train then dev then test. Read with polars directly: the
    TSV quotes sentences that hold line breaks."""
    texts: list[str] = []
    for split in ("train", "dev", "test"):
        frame = pl.read_csv(folder / f"{split}.tsv", separator="\t", quote_char='"')
        texts += frame["sentences"].drop_nulls().to_list()
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    if len(unique) < count:
        raise SystemExit(f"PsyTAR has {len(unique)} distinct sentences; ask for at most that many with --posts.")
    return unique[:count]


def timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--psytar", type=Path, default=ROOT.parent / "shared" / "data" / "psytar")
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="best of R runs of baseline and cold smm4h (alternating)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 keeps CPU time honest on a loaded machine")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)

    texts = psytar_sentences(args.psytar, args.posts)
    bare = SentenceTransformer(str(minilm_path()), device=args.device)
    ours = SentenceEmbedder(None, device=args.device, batch_size=args.batch_size)
    half = SentenceEmbedder(None, device=args.device, batch_size=args.batch_size, precision="bf16")
    bare.encode(texts[:64], batch_size=args.batch_size)  # warm all up alike
    ours(texts[:64])
    half(texts[:64])

    base_best = ours_best = half_best = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            base, base_cpu, base_wall = timed(lambda: bare.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False))
            cache = Path(tmp) / f"cold-{r}"
            (vectors, encoded), ours_cpu, ours_wall = timed(lambda: embed_texts(texts, ours, EMBEDDED_MINILM, cache))
            assert encoded == len(texts)
            # bf16 in the same round as the fp32 runs, so all three see the same machine
            bf16, half_cpu, half_wall = timed(lambda: half(texts))
            print(
                f"run {r + 1}: baseline {base_cpu:.1f} s CPU / {base_wall:.1f} s wall; smm4h {ours_cpu:.1f} s CPU / {ours_wall:.1f} s wall; "
                f"smm4h bf16 {half_cpu:.1f} s CPU / {half_wall:.1f} s wall",
                flush=True,
            )
            if half_best is None or half_cpu < half_best[0]:
                half_best = (half_cpu, half_wall)
            if base_best is None or base_cpu < base_best[0]:
                base_best = (base_cpu, base_wall)
            if ours_best is None or ours_cpu < ours_best[0]:
                ours_best = (ours_cpu, ours_wall, cache)
        (warm, encoded), warm_cpu, warm_wall = timed(lambda: embed_texts(texts, ours, EMBEDDED_MINILM, ours_best[2]))
        assert encoded == 0
    diff = float(np.max(np.abs(vectors - base)))
    same_warm = bool(np.array_equal(warm, vectors))
    print(f"warm cache: {warm_cpu:.3f} s CPU / {warm_wall:.3f} s wall, 0 of {len(texts):,} texts encoded, identical to cold: {same_warm}")
    ratio_cpu = base_best[0] / ours_best[0]
    ratio_wall = base_best[1] / ours_best[1]
    speedup = ours_best[1] / warm_wall
    print(
        f"embed {len(texts):,} PsyTAR posts, batch {args.batch_size}, {args.device}: smm4h/bare throughput ratio "
        f"{ratio_cpu:.2f} by CPU time ({ratio_wall:.2f} by wall time; target >= 0.95); warm cache {speedup:,.0f}x faster "
        f"than cold (target >= 50x); max |difference| from bare encode {diff:.1e}"
    )
    cosine = np.sum(bf16.astype(np.float64) * base.astype(np.float64), axis=1)
    print(
        f"embed {len(texts):,} PsyTAR posts in bf16 autocast ({args.device}): speed-up over bare fp32 encode "
        f"{base_best[0] / half_best[0]:.2f}x by CPU time ({base_best[1] / half_best[1]:.2f}x by wall; target >= 1.8x); "
        f"cosine bf16 vs fp32: min {cosine.min():.5f}, 0.1th percentile {np.percentile(cosine, 0.1):.5f}, "
        f"mean {cosine.mean():.6f}; posts below 0.999: {int((cosine < 0.999).sum())} of {len(texts):,} (target 0)"
    )


if __name__ == "__main__":
    main()
