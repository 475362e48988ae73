"""The run folder of ``smm4h train``: every path in it, creating and replacing it, which seeds
it holds, whether a seed is complete, and whether a run can be resumed.

Layout: ``summary.json`` and one ``seed-N`` folder per seed, holding the model and tokenizer,
``train_config.json`` (written first), ``metrics.json`` (written last: the completion marker),
``test_predictions.jsonl`` with a test set, and ``checkpoints/`` while the seed trains.

The rule every reader follows (``predict``, ``compare``, the study): a run's seeds are the ones
its ``summary.json`` lists, never the ``seed-N`` folders that happen to be on disk, and a seed
is complete only when its ``metrics.json`` (written last) is there and the files it records
have the sizes it records. A folder left by an older run, an interrupted seed or a truncated
model file is refused with a message, never read.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from smm4h_cli.errors import InputError
from smm4h_cli.io import check_writable, write_json

SUMMARY = "summary.json"
METRICS = "metrics.json"
TRAIN_CONFIG = "train_config.json"
TEST_PREDICTIONS = "test_predictions.jsonl"
CHECKPOINTS = "checkpoints"
#: Files whose sizes the completion marker (``metrics.json``) records and readers check.
_SEALED = ("*.safetensors", "*.bin", TEST_PREDICTIONS)
_SEED_DIR = re.compile(r"seed-(-?\d+)")
#: Settings that must match for --resume to go on with a run (the rest may change: device, threads),
#: with the option that sets each.
RESUME_KEYS = {
    "model": "--model", "epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "max_length": "--max-length",
    "balance": "--balance", "warmup_ratio": "--warmup", "weight_decay": "--weight-decay", "padding": "padding",
    "group_by_length": "group_by_length",
}


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


# ----------------------------------------------------------------------------- writing a run


def check_out(out: Path, seeds: list[int], *, resume: bool, force: bool, config: dict[str, Any]) -> None:
    """The run folder can take this run (checks only; nothing is changed).

    ``force`` replaces the run folder as a whole, so it is refused for a folder that holds
    anything but a run (it would be deleted); ``resume`` is refused with changed settings.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; --out takes a folder for the run.")
    check_writable(out, folder=True)  # before any model is loaded or anything trained
    existing = out.is_dir() and ((out / SUMMARY).exists() or any(seed_dir(out, s).exists() for s in seeds))
    if existing and not (resume or force):
        raise InputError(f"{out} already holds a run. Pass --resume to go on with it, --force to replace it, or choose another --out.")
    others = foreign_entries(out) if force and out.is_dir() else []
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise InputError(
            f"{out} holds files that are not part of a smm4h run ({shown}), and --force replaces the run folder "
            f"as a whole. Choose another --out (a new or empty folder), or move those files away."
        )
    if resume:
        check_resumable(out, seeds, config)


def prepare_out(out: Path, seeds: list[int], *, resume: bool, force: bool, config: dict[str, Any]) -> None:
    """Check the run folder, then create it; with ``force`` the old run goes as a whole first, so
    that no seed of an earlier call is left for a reader to find."""
    check_out(out, seeds, resume=resume, force=force, config=config)
    if force and out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def check_resumable(out: Path, seeds: list[int], config: dict[str, Any]) -> None:
    """--resume goes on only with the settings the run was started with: those its summary and
    every seed folder already there (finished or not) record."""
    recorded: list[tuple[Path, dict]] = []
    for path in [out / SUMMARY] + [seed_dir(out, s) / TRAIN_CONFIG for s in seeds]:
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise InputError(f"{path}: unreadable ({exc}), so --resume cannot check the run's settings. Pass --force to start over.") from None
            recorded.append((path, old.get("config", {}) if path.name == SUMMARY else old))
    for path, old in recorded:
        changed = [k for k in RESUME_KEYS if k in old and old[k] != config.get(k)]
        if changed:
            settings = ", ".join(f"{RESUME_KEYS[k]} {old[k]} (now {config.get(k)})" for k in changed)
            raise InputError(
                f"{out} was trained with other settings ({path.name}): {settings}. --resume goes on with the "
                f"same settings only, so that the run records the settings its models were trained with. Pass the "
                f"same options, or --force to start over."
            )


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint of a seed folder whose trainer state was written (the Trainer writes it last)."""
    checkpoints = folder / CHECKPOINTS
    done = [c for c in checkpoints.glob("checkpoint-*") if (c / "trainer_state.json").exists() and c.name.split("-")[-1].isdigit()]
    return str(max(done, key=lambda c: int(c.name.split("-")[-1]))) if done else None


def start_seed(folder: Path, config: dict[str, Any], resume: bool) -> str | None:
    """Make ``folder`` ready to train a seed and record its configuration; returns the checkpoint
    to go on from (``resume`` and one is there), else the folder starts clean."""
    last = last_complete_checkpoint(folder) if resume else None
    if last is None and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / TRAIN_CONFIG, config)
    return last


def seed_finished(folder: Path) -> bool:
    """Finished (its marker is there); ``check_complete`` then vouches for its files."""
    return (folder / METRICS).exists() and check_complete(folder) is not None


def read_metrics(folder: Path) -> dict[str, Any]:
    """A finished seed's metrics, without the file sizes of its completion marker."""
    metrics = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    metrics.pop("files", None)
    return metrics


def finish_seed(folder: Path, metrics: dict[str, Any]) -> None:
    """The seed's completion marker, written last (its metrics and the sizes of its model and
    predictions); its checkpoints go."""
    write_json(folder / METRICS, {**metrics, "files": sealed_files(folder)})
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)


def keep_seeds(run: Path, seeds: list[int], forget_test: bool = False) -> None:
    """Remove the seed folders of ``run`` other than ``seeds``; with ``forget_test`` the kept
    seeds' test predictions go too (a new test file: they are predicted again)."""
    wanted = {seed_dir(run, s).name for s in seeds}
    for left_out in [d for d in Path(run).glob("seed-*") if d.name not in wanted]:
        shutil.rmtree(left_out)
    if forget_test:
        for s in seeds:
            (seed_dir(run, s) / TEST_PREDICTIONS).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- reading a model


def resolve_run_dir(path: str | Path) -> Path:
    """The folder holding the model: ``path`` itself, or the one seed its run's summary lists.

    A seed folder of ``smm4h train`` must be complete (``check_complete``); other transformers
    classifier folders are taken as they are.
    """
    try:
        return _resolve_run_dir(Path(path))
    except PermissionError:
        raise InputError(f"{path}: permission denied, the run folder cannot be read. Check its permissions (ls -l '{path}').") from None
    except OSError as exc:
        raise InputError(f"{path}: the run folder could not be read ({exc.strerror or exc}).") from None


def _resolve_run_dir(p: Path) -> Path:
    if not p.exists():
        raise InputError(f"{p}: no such run folder. Give the --out folder of smm4h train (or one of its seed-N folders).")
    if not p.is_dir():
        raise InputError(f"{p} is a file; give the run folder that smm4h train wrote (it holds config.json and the model).")
    if is_seed_of_run(p):
        return check_complete(p)
    if (p / "config.json").exists():
        return p
    if not (p / SUMMARY).exists() and not any(p.glob("seed-*")):
        raise InputError(f"{p} holds no trained model (no config.json, no {SUMMARY} of smm4h train). Give the right folder.")
    seeds = run_seeds(p)
    if len(seeds) > 1:
        names = ", ".join(str(seed_dir(p, s)) for s in seeds[:3])
        raise InputError(f"{p} holds {len(seeds)} trained seeds ({names}{', ...' if len(seeds) > 3 else ''}); give one of them, e.g. {seed_dir(p, seeds[0])}.")
    return check_complete(seed_dir(p, seeds[0]))


def run_config(folder: Path) -> dict:
    """The training configuration of a seed folder (empty for other classifier folders)."""
    path = folder / TRAIN_CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} could not be read ({getattr(exc, 'strerror', None) or exc}).") from None
