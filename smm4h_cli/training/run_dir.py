"""The run folder of ``smm4h train``: which seeds it holds, and whether a seed is complete.

The rule every reader follows (``predict``, ``compare``, the study): a run's seeds are the ones
its ``summary.json`` lists, never the ``seed-N`` folders that happen to be on disk, and a seed
is complete only when its ``metrics.json`` (written last) is there and the files it records
have the sizes it records. A folder left by an older run, an interrupted seed or a truncated
model file is refused with a message, never read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from smm4h_cli.errors import InputError

SUMMARY = "summary.json"
METRICS = "metrics.json"
TRAIN_CONFIG = "train_config.json"
TEST_PREDICTIONS = "test_predictions.jsonl"
CHECKPOINTS = "checkpoints"
#: Files whose sizes the completion marker (``metrics.json``) records and readers check.
_SEALED = ("*.safetensors", "*.bin", TEST_PREDICTIONS)
_SEED_DIR = re.compile(r"seed-(-?\d+)")


def seed_dir(run: Path, seed: int) -> Path:
    return Path(run) / f"seed-{seed}"


def run_seeds(run: str | Path) -> list[int]:
    """The seeds of the finished run in ``run``, as its ``summary.json`` lists them."""
    run = Path(run)
    path = run / SUMMARY
    if not path.is_file():
        stray = sorted(d.name for d in run.glob("seed-*")) if run.is_dir() else []
        hint = (
            f" It holds {', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''} but no {SUMMARY}: the run did not finish. "
            "Finish it with the same smm4h train command and --resume."
        ) if stray else " Give the --out folder of a finished smm4h train."
        raise InputError(f"{run} is not a finished run folder of smm4h train (no {SUMMARY}).{hint}")
    try:
        seeds = json.loads(path.read_text(encoding="utf-8"))["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ValueError("'seeds' is not a list of integers")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a summary of smm4h train ({exc}). Train the run again with --force.") from None
    return seeds


def finished_seed_dirs(run: str | Path) -> list[Path]:
    """The complete seed folders of the run in ``run``, in the order its summary lists them."""
    return [check_complete(seed_dir(Path(run), s)) for s in run_seeds(run)]


def test_prediction_files(folder: str | Path) -> list[Path]:
    """The test predictions in a seed folder, or of every seed a run folder's summary lists."""
    folder = Path(folder)
    if (folder / TEST_PREDICTIONS).exists() or is_seed_of_run(folder):
        seeds = [check_complete(folder) if is_seed_of_run(folder) else folder]
    elif not (folder / SUMMARY).exists() and not any(folder.glob("seed-*")):
        raise InputError(
            f"{folder} holds no test predictions (no {TEST_PREDICTIONS}, no run of smm4h train). Give the --out "
            "folder of smm4h train --test, or a predictions file of smm4h predict."
        )
    else:
        seeds = finished_seed_dirs(folder)
    missing = [d for d in seeds if not (d / TEST_PREDICTIONS).is_file()]
    if missing:
        raise InputError(
            f"{missing[0]} holds no test predictions ({TEST_PREDICTIONS}). Train with --test TEST, "
            "or predict the test set with smm4h predict and give that file."
        )
    return [d / TEST_PREDICTIONS for d in seeds]


def is_seed_of_run(folder: Path) -> bool:
    """A seed folder written by ``smm4h train`` (not some other transformers classifier folder)."""
    return (folder / TRAIN_CONFIG).is_file()


def sealed_files(folder: Path) -> dict[str, int]:
    """Sizes of the files the completion marker vouches for."""
    return {p.name: p.stat().st_size for pattern in _SEALED for p in sorted(folder.glob(pattern)) if p.is_file()}


def check_complete(folder: Path) -> Path:
    """``folder`` if it is a complete seed of ``smm4h train``; an ``InputError`` saying why not."""
    marker = folder / METRICS
    if not folder.is_dir():
        raise InputError(f"{folder}: the run's summary lists this seed, but its folder is missing. Train the run again with --force.")
    if not marker.is_file():
        raise InputError(
            f"{folder} is not a finished seed (no {METRICS}, which smm4h train writes last): its training was "
            "interrupted. Finish it with the same smm4h train command and --resume, or train again with --force."
        )
    try:
        recorded: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8")).get("files") or {}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise InputError(f"{marker}: unreadable ({exc}). Train the seed again with --force.") from None
    for name, size in recorded.items():
        path = folder / name
        now = path.stat().st_size if path.is_file() else None
        if now is None and name == TEST_PREDICTIONS:
            continue  # taken away to be predicted again; the readers that need it say so
        if now != size:
            state = "is missing" if now is None else f"has {now:,} bytes, not the {size:,} written by training"
            raise InputError(
                f"{path} {state}: the file was truncated or changed after training. Copy the run folder again, "
                "or train the seed again with --force."
            )
    return folder


def foreign_entries(folder: Path) -> list[str]:
    """What ``folder`` holds besides what ``smm4h train`` writes: empty for a run folder (or an
    empty folder), which ``--force`` may delete as a whole."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name == SUMMARY or (name.startswith(f".{SUMMARY}.") and name.endswith(".tmp")):
            continue
        if entry.is_dir() and not entry.is_symlink() and _SEED_DIR.fullmatch(name):
            continue
        foreign.append(name)
    return foreign
