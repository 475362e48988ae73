"""Training on real data: the embedded MiniLM on PsyTAR (label ADR), and dynamic vs static padding.

Trains on PsyTAR's train split with the paper's defaults (10 epochs, learning rate 5e-5 decaying
linearly to 0, best epoch by dev F1 of label 1), predicts test with the best epoch, and prints
the test F1 and the seconds per epoch. Then it times one epoch of the same training with every
post padded to --max-length in random batches (the static baseline) against one epoch with
smm4h's dynamic padding and length-grouped batches, and prints the ratio.

Targets (issue 4): test F1 >= 0.80; dynamic at least 1.5x faster; 10 epochs under 15 minutes
on two CPU cores.

    python bench/train_psytar.py --psytar ../shared/data/psytar [--epochs 10] [--threads 2]
    python bench/train_psytar.py --psytar ../shared/data/psytar --quick   # 1,000 posts, 2 epochs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402

from smm4h_cli.training.train import TrainOptions, train_seeds  # noqa: E402


def load(psytar: Path, split: str, label: str) -> pl.DataFrame:
    """PsyTAR's TSV quotes sentences that hold line breaks, so it is read as quoted TSV here."""
    raw = pl.read_csv(psytar / f"{split}.tsv", separator="\t", quote_char='"', infer_schema=False)
    frame = raw.select(
        pl.format("{}-{}", pl.lit(split), pl.int_range(1, pl.len() + 1)).alias("id"),
        pl.col("sentences").alias("text"),
        pl.col(label).cast(pl.Int64).alias("label"),
    )
    return frame.filter(pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--psytar", type=Path, default=ROOT.parent / "shared" / "data" / "psytar")
    parser.add_argument("--label", default="ADR")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1,000 training posts and 2 epochs")
    parser.add_argument("--skip-train", action="store_true", help="only the padding comparison")
    parser.add_argument("--skip-padding", action="store_true", help="only the training run")
    args = parser.parse_args()

    train, dev, test = (load(args.psytar, s, args.label) for s in ("train", "dev", "test"))
    epochs = args.epochs
    if args.quick:
        train, epochs = train.sample(1000, seed=args.seed), min(epochs, 2)
    print(f"PsyTAR {args.label}: train {train.height:,} ({train['label'].mean():.0%} positive), dev {dev.height:,}, test {test.height:,}; "
          f"{os.cpu_count()} CPUs, {args.threads} torch threads, load average {os.getloadavg()[0]:.1f}", flush=True)
    common = dict(lr=args.lr, batch_size=args.batch_size, max_length=args.max_length, device="cpu", threads=args.threads,
                  warmup_ratio=args.warmup, force=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_train:
            options = TrainOptions(out=Path(tmp) / "full", epochs=epochs, **common)
            started = time.perf_counter()
            result = train_seeds(options, [args.seed], train, dev, None, test_frame=test)
            wall = time.perf_counter() - started
            run = result.to_dict()["runs"][str(args.seed)]
            per_epoch = run["train_seconds"] / epochs
            print(
                f"train_psytar: test F1 {run['test']['f1']:.3f} (precision {run['test']['precision']:.3f}, recall {run['test']['recall']:.3f}; "
                f"target 0.80: ratio {run['test']['f1'] / 0.80:.3f}) at best dev epoch {run['best_epoch']} (dev F1 {run['best_f1']:.3f}); "
                f"{epochs} epochs in {wall / 60:.1f} min, {per_epoch:.0f} s/epoch (lr {args.lr}, batch {args.batch_size}, "
                f"max_length {args.max_length}, warmup {args.warmup})",
                flush=True,
            )
        if not args.skip_padding:
            times = {}
            for name, extra in (("static", dict(padding="max_length", group_by_length=False)), ("dynamic", {})):
                options = TrainOptions(out=Path(tmp) / name, epochs=1, **common, **extra)
                times[name] = train_seeds(options, [args.seed], train, dev, None).runs[0].train_seconds
            print(
                f"padding: one epoch (training + dev evaluation) {times['dynamic']:.0f} s with dynamic padding and length-grouped "
                f"batches vs {times['static']:.0f} s padded to {args.max_length} in random batches: ratio {times['static'] / times['dynamic']:.2f}x "
                f"(target >= 1.5x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
