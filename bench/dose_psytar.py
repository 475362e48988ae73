"""The dose-response study on real data: PsyTAR, label ADR, through `smm4h study --definitions`.

Writes PsyTAR's splits (optionally a seeded subsample of the training set, --train-sample, and of
the test set, --test-sample) as JSONL files keeping PsyTAR's own column names (`sentences`, `ADR`),
then runs

    smm4h study --definitions bench/psytar_adr.yaml --train ... --validation ... --test ...
                --text-col sentences --label-col ADR --doses ... --selections ... --seeds ...

with the embedded generator (SmolLM2) and classifier (MiniLM), and prints one result line: the
best arm, its ΔF1 and Holm-adjusted p, and the wall time. The study's report (report.md, the
dose curve, the table) lies in --out. A second run resumes: finished steps are skipped.

    python bench/dose_psytar.py --psytar ../shared/data/psytar                       # the full grid
    python bench/dose_psytar.py --psytar ../shared/data/psytar --train-sample 600 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402

LABEL = "ADR"


def load(psytar: Path, split: str) -> pl.DataFrame:
    """PsyTAR's TSV quotes sentences that hold line breaks, so it is read as quoted TSV here."""
    raw = pl.read_csv(psytar / f"{split}.tsv", separator="\t", quote_char='"', infer_schema=False)
    frame = raw.select(
        pl.format("{}-{}", pl.lit(split), pl.int_range(1, pl.len() + 1)).alias("id"),
        pl.col("sentences"),
        pl.col(LABEL).cast(pl.Int64),
    )
    return frame.filter(pl.col("sentences").is_not_null() & (pl.col("sentences").str.strip_chars() != ""))


def subsample(frame: pl.DataFrame, n: int | None, seed: int) -> pl.DataFrame:
    """A seeded random ``n`` of the posts (all of them when ``n`` is None or not smaller)."""
    if n is None or n >= frame.height:
        return frame
    return frame.sample(n=n, seed=seed, shuffle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--psytar", type=Path, default=ROOT.parent / "shared" / "data" / "psytar")
    parser.add_argument("--out", type=Path, default=Path("bench-out/dose_psytar"))
    parser.add_argument("--train-sample", type=int, default=None, help="a seeded subsample of the training set (posts)")
    parser.add_argument("--test-sample", type=int, default=None, help="a seeded subsample of the test set (posts)")
    parser.add_argument("--doses", default="0,0.5,1")
    parser.add_argument("--selections", default="none,dedup,confidence")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sample", type=int, default=1000, help="posts per group in the n-gram and t-SNE analyses")
    parser.add_argument("--quick", action="store_true", help="study --quick: batches of 16, 2,000 bootstrap resamples (--epochs and --sample still apply)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, name, n in (("train", "train", args.train_sample), ("dev", "validation", None), ("test", "test", args.test_sample)):
        frame = subsample(load(args.psytar, split), n, args.seed)
        path = data / f"{name}.jsonl"
        if not path.exists() or pl.read_ndjson(path).to_dicts() != frame.to_dicts():
            frame.write_ndjson(path)  # rewritten only when it differs: the study's fingerprints see content
        sizes[name] = (frame.height, int(frame[LABEL].sum()))
    command = [
        sys.executable, "-m", "smm4h_cli", "study", "--definitions", str(ROOT / "bench" / "psytar_adr.yaml"),
        "--train", str(data / "train.jsonl"), "--validation", str(data / "validation.jsonl"), "--test", str(data / "test.jsonl"),
        "--text-col", "sentences", "--label-col", LABEL, "--out", str(args.out / "study"),
        "--doses", args.doses, "--selections", args.selections, "--seeds", args.seeds,
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--sample", str(args.sample),
        "--seed", str(args.seed),
    ] + (["--threads", str(args.threads)] if args.threads else []) + (["--quick"] if args.quick else [])
    print("data:", ", ".join(f"{k} {n:,} posts ({p:,} ADR)" for k, (n, p) in sizes.items()), flush=True)
    print("run:", " ".join(command), flush=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rc = subprocess.run(command, env=env).returncode
    seconds = time.monotonic() - started
    if rc != 0:
        sys.exit(f"the study failed (exit {rc}) after {seconds:,.0f} s")
    numbers = json.loads((args.out / "study" / "report.json").read_text(encoding="utf-8"))
    arms = numbers["dose"][1:]
    best = max(arms, key=lambda r: r["delta_f1"])
    print(
        f"dose_psytar: baseline F1 {numbers['dose'][0]['f1']:.3f}; best arm {best['arm']} ({best['posts added']} posts) "
        f"ΔF1 {best['delta_f1']:+.3f} [{best['ci_low']:+.3f}, {best['ci_high']:+.3f}], Holm p {best['p_holm']:.3g}; "
        f"wall {seconds / 60:.1f} min"
    )
    print(numbers["conclusion"])


if __name__ == "__main__":
    main()
