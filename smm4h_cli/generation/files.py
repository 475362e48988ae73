"""The files a generation run writes: named, checked before any call, and held for the whole run.

A run writes its posts (``--out``), the summary beside them (``OUT.meta.json``) and the call
cache (``--cache``, by default ``OUT.cache.jsonl``). Before the backend is resolved or any call
is made:

* none of them may be another of them or one of the run's inputs (``--train``,
  ``--definitions``, ``--attributes``): a cache appended to the training file would corrupt the
  user's data, and ``-o X --cache X`` would fail only after every call was paid for;
* each must be a place that can be written (:func:`smm4h_cli.io.check_writable` for the posts);
* an exclusive lock (``fcntl.flock`` on ``PATH.lock``) is taken on the posts and on the cache,
  so that a second run on the same files stops at once instead of making every call again and
  replacing the first run's output. The lock dies with its process (``kill -9`` included), so a
  lock file left behind never blocks; a run that ends normally removes its lock files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from smm4h_cli.errors import InputError
from smm4h_cli import io
from smm4h_cli.io import STDIO


@dataclass(frozen=True)
class RunFiles:
    """What a run writes: ``posts`` (None: stdout), ``meta`` beside them, ``cache`` (None: no cache)."""

    posts: Path | None
    meta: Path | None
    cache: Path | None

    @classmethod
    def of(cls, out: str, cache: Path | None) -> "RunFiles":
        posts = None if out == STDIO else Path(out)
        return cls(posts, posts.with_suffix(".meta.json") if posts is not None else None, cache)

    def named(self) -> list[tuple[str, Path]]:
        """Each file with the name a message gives it."""
        names = (("--out", self.posts), ("the summary", self.meta), ("--cache", self.cache))
        return [(name, path) for name, path in names if path is not None]


def check_outputs(files: RunFiles, inputs: Sequence[tuple[str, Path | str | None]], force: bool) -> None:
    """Every check of the files a run writes that can be made without writing: see the module docstring."""
    io.check_outputs(dict(files.named()), dict(inputs))
    for name, path in files.named():
        if path is files.posts:
            io.check_writable(path, force)
        elif path is files.cache:
            io.check_writable(path, append=True)  # a cache is added to: it may exist
        elif path.is_dir():  # the summary goes beside the posts, in their (checked) folder
            raise InputError(f"{name} {path} is a folder; move it away or give another --out.")


@contextlib.contextmanager
def claim_outputs(files: RunFiles, inputs: Sequence[tuple[str, Path | str | None]], force: bool) -> Iterator[None]:
    """Check the files a run writes (:func:`check_outputs`) and hold a lock on the posts and the
    cache until the block ends. Taking a lock also proves that their folders can be written in."""
    check_outputs(files, inputs, force)
    with contextlib.ExitStack() as stack:
        for name, path in files.named():
            if path is not files.meta:  # the summary is written beside the posts, under their lock
                stack.enter_context(_lock(name, path))
        if files.posts is not None:
            io.check_writable(files.posts, force)  # a run that held the lock may have finished it meanwhile
        yield


@contextlib.contextmanager
def _lock(name: str, path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    made = _make_parents(name, lock.parent)
    try:
        fd = _acquire(name, path, lock)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # before closing: a run waiting on this file retries on the new one
            os.close(fd)
    finally:
        for folder in made:  # a refused run leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def _make_parents(name: str, folder: Path) -> list[Path]:
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        for made in reversed(missing):
            made.mkdir()
    except OSError as exc:
        raise InputError(f"{name}: cannot make the folder {made}: {exc.strerror}. Give a path in a folder you can write to.") from None
    return missing


def _acquire(name: str, path: Path, lock: Path) -> int:
    """An open descriptor of ``lock`` holding an exclusive flock on the file that is at that path now."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"{name} {path} cannot be written: {exc.strerror} ({lock}). Give a path in a folder you can write to.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"another smm4h generate is writing {path} (it holds the lock {lock}). Wait for it to finish, "
                f"or give another {name}."
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we opened it: lock the one there now
