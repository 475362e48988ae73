"""Peak memory of `smm4h predict` on large files: streamed in chunks against the whole-file path.

Everything is generated in a temporary folder (nothing downloaded): JSON-lines files of
tweet-length synthetic posts (8-40 words from a fixed vocabulary, seed 0, with an id, a label
and a pass-through column), and a classifier folder (the embedded all-MiniLM-L6-v2 with a fresh
seeded two-label head: the speed and memory of prediction do not depend on training).

Each measurement is a separate subprocess whose peak RSS is read with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` by a fresh wrapper process, so that one run's
peak is not another's. Two parts, in the same run:

1. ``smm4h predict`` itself (the real model): streamed with ``--chunk-size CHUNK`` on POSTS/4
   and POSTS posts, and the whole-file path (``--chunk-size`` = the file's size, one chunk: what
   predict did before streaming) on POSTS/4. Prints peak RSS and posts/s of each; flat memory
   means the two streamed peaks are close.
2. The same pipeline without the model (``io.stream.iter_records`` -> ``with_predictions`` with a
   constant probability -> ``write_record_chunks``), which is everything that grows with the
   number of posts: streamed on IO_POSTS/5 and IO_POSTS, and read_records -> write_records on
   IO_POSTS/5. Prints the memory per post of each path and their ratio.

On the 2-core development machine MiniLM predicts a few hundred posts/s when idle, so 1,000,000
posts through the model take about an hour: ``--posts 1000000`` does it; the default is small.

    python bench/predict_stream.py [--posts 2000] [--chunk-size 500] [--io-posts 1000000] [--threads N]
    python bench/predict_stream.py --posts 1000000 --chunk-size 10000 --large-only   # the 1M run alone, measured
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "my son was diagnosed with autism today our daughter has asthma and a cough again the doctor said "
    "fever baby kicked all night long weather is lovely awareness month starts news says celebrity ADHD "
    "school nurse called about rash inhaler appointment tomorrow worried mom dad kids sleep"
).split()

_IO_PIPELINE = """
import sys, numpy as np
from smm4h_cli.io import read_records, write_records
from smm4h_cli.io.stream import iter_records, write_record_chunks
from smm4h_cli.training.predict import with_predictions
src, out, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
fake = lambda f: with_predictions(f, np.full(f.height, 0.5), 0.5)
if chunk:
    write_record_chunks((fake(f) for f in iter_records(src, chunk_size=chunk)), out, force=True)
else:
    write_records(fake(read_records(src)), out, force=True)
"""


def make_posts(path: Path, n: int, seed: int = 0) -> None:
    r = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(r.choice(WORDS) for _ in range(r.randint(8, 40)))
            f.write(json.dumps({"id": f"t{i}", "text": text, "label": r.randint(0, 1), "source": "raw"}) + "\n")


def make_classifier(folder: Path) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from smm4h_cli.models import minilm_path

    torch.manual_seed(0)
    src = minilm_path()
    AutoModelForSequenceClassification.from_pretrained(src, num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(src).save_pretrained(folder)
    return folder


def measured(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of ``cmd``, run under a fresh wrapper process."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "rc = subprocess.run(sys.argv[1:]).returncode; w = time.perf_counter() - t; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, w); sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    kb, wall = done.stdout.split()[-2:]
    return int(kb) / 1024, float(wall)


def predict_cmd(clf: Path, src: Path, out: Path, chunk: int, threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "smm4h_cli", "predict", str(clf), str(src), "--out", str(out), "--chunk-size", str(chunk), "--quiet", "--force"]
    return cmd + (["--threads", str(threads)] if threads else [])


def large_only(args) -> None:
    """One streamed ``smm4h predict`` on ``--posts`` posts: the peak measured, not estimated."""
    with tempfile.TemporaryDirectory(prefix="smm4h-bench-stream-") as tmp:
        tmp = Path(tmp)
        clf = make_classifier(tmp / "clf")
        make_posts(tmp / "posts.jsonl", args.posts)
        peak, wall = measured(predict_cmd(clf, tmp / "posts.jsonl", tmp / "out.jsonl", args.chunk_size, args.threads))
        with (tmp / "out.jsonl").open("rb") as f:
            written = sum(1 for _ in f)
        print(f"RESULT predict_stream: {args.posts:,} posts predicted streamed (chunk {args.chunk_size:,}), {written:,} written: "
              f"peak RSS {peak:,.0f} MB measured, ratio to the 2,000 MB target {peak / 2000:.2f} (target < 1); "
              f"{wall:,.0f} s wall, {args.posts / wall:.1f} posts/s (model load included); load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=2_000, help="posts through the real model, streamed (default 2,000)")
    parser.add_argument("--chunk-size", type=int, default=500, help="chunk of the streamed runs (default 500; predict's default is 10,000)")
    parser.add_argument("--io-posts", type=int, default=1_000_000, help="posts through the pipeline without the model (default 1,000,000)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--large-only", action="store_true",
                        help="only the streamed run on --posts posts, its peak measured (e.g. --posts 1000000: about an hour idle)")
    parser.add_argument("--psytar", default=None, help="ignored (make bench passes it to every script)")
    args = parser.parse_args()
    if args.large_only:
        large_only(args)
        return

    with tempfile.TemporaryDirectory(prefix="smm4h-bench-stream-") as tmp:
        tmp = Path(tmp)
        print(f"building a classifier folder and files of {args.posts:,} / {args.posts // 4:,} / {args.io_posts:,} / {args.io_posts // 5:,} posts in {tmp}", file=sys.stderr)
        clf = make_classifier(tmp / "clf")

        # 1. smm4h predict with the model
        small, large = args.posts // 4, args.posts
        for n in (small, large):
            make_posts(tmp / f"p{n}.jsonl", n)
        rows = []
        for label, n, chunk in (("streamed", small, args.chunk_size), ("streamed", large, args.chunk_size), ("whole file", small, small)):
            peak, wall = measured(predict_cmd(clf, tmp / f"p{n}.jsonl", tmp / "out.jsonl", chunk, args.threads))
            rows.append((label, n, chunk, peak, wall))
            print(f"predict {label:10} {n:>9,} posts, chunk {chunk:>7,}: peak RSS {peak:7.0f} MB, {wall:6.1f} s wall, {n / wall:7.1f} posts/s (model load included)")
        s_small, s_large, whole = rows
        print(
            f"predict: streamed peak {s_small[3]:.0f} MB at {small:,} posts, {s_large[3]:.0f} MB at {large:,} "
            f"({s_large[3] - s_small[3]:+.0f} MB for {large / small:.0f}x the posts); whole-file path {whole[3]:.0f} MB at {small:,}"
        )

        # 2. the same pipeline without the model: what grows with the number of posts
        io_small, io_large = args.io_posts // 5, args.io_posts
        for n in (io_small, io_large):
            make_posts(tmp / f"io{n}.jsonl", n)
        base, _ = measured([sys.executable, "-c", "import polars, numpy, smm4h_cli.io.stream, smm4h_cli.training.predict"])
        runs = {}
        for label, n, chunk in (("streamed", io_small, args.chunk_size), ("streamed", io_large, args.chunk_size), ("whole file", io_small, 0)):
            peak, wall = measured([sys.executable, "-c", _IO_PIPELINE, str(tmp / f"io{n}.jsonl"), str(tmp / "io-out.jsonl"), str(chunk)])
            runs[(label, n)] = peak
            print(f"io only {label:10} {n:>9,} posts, chunk {chunk or n:>7,}: peak RSS {peak:7.0f} MB, {wall:6.1f} s, {n / wall:9,.0f} posts/s")
        # streamed: the growth of the peak from the small file to the large one (the ids kept to check them unique);
        # whole file: the peak above the streamed run's on the same file
        per_stream = max(runs[("streamed", io_large)] - runs[("streamed", io_small)], 0.0) * 1e6 / (io_large - io_small)
        per_whole = (runs[("whole file", io_small)] - base) * 1e6 / io_small
        print(f"io only: imports alone {base:.0f} MB; memory per post: streamed {per_stream:,.0f} bytes (peak growth from {io_small:,} "
              f"to {io_large:,} posts), whole file {per_whole:,.0f} bytes (peak above imports at {io_small:,}): "
              f"ratio {per_whole / max(per_stream, 1.0):.1f}x")
        est = s_large[3] + per_stream * 1_000_000 / 1e6
        print(f"RESULT predict_stream: 1,000,000 posts predicted streamed: peak about {est:,.0f} MB "
              f"(model run's peak + the pipeline's growth per post; target < 2,000 MB); whole-file path uses "
              f"{per_whole / max(per_stream, 1.0):.1f}x the memory per post")


if __name__ == "__main__":
    main()
