"""The fictional sample posts shipped with the package (sample_data/ in the source tree).

They are the documented defaults of ``--train``/``--validation``/``--test`` so that every
command runs as written right after ``pip install``.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from smm4h_cli.errors import InputError

TASKS = (5, 6)
SPLITS = ("train", "validation", "test")


def sample_dir() -> Path:
    """The folder holding ``task5/`` and ``task6/``: the checkout's, or the installed copy."""
    checkout = Path(__file__).resolve().parent.parent / "sample_data"
    if checkout.is_dir():
        return checkout
    # pip puts data files under the install prefix, or the user base with `pip install --user`
    installed = [Path(sysconfig.get_path("data", scheme)) / "share" / "smm4h" / "sample_data" for scheme in _schemes()]
    return next((d for d in installed if d.is_dir()), installed[0])


def _schemes() -> list[str]:
    schemes = [sysconfig.get_default_scheme()]
    user = sysconfig.get_preferred_scheme("user")
    return schemes + ([user] if user not in schemes else [])


def sample_path(task: int, split: str) -> Path:
    """``sample_data/task{task}/{split}.jsonl``."""
    if task not in TASKS:
        raise InputError(f"--task must be 5 or 6 (the SMM4H 2024 tasks); got {task}.")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    path = sample_dir() / f"task{task}" / f"{split}.jsonl"
    if not path.exists():
        raise InputError(f"the sample data file {path} is missing; reinstall smm4h or pass the file explicitly.")
    return path
