"""Groups of posts, their roles, and the one seeded equal-size sampler.

A group is a named set of posts: a file, or with ``--by-label`` one label of a file
(``train/label 1``). ``smm4h ngrams`` and ``smm4h embed-cluster`` compare groups on samples of
one size, ``min(sample, smallest group)``, drawn here and only here, so Table 3 and Figure 2
describe the same posts.

The sampling rule: each group draws with its own generator, seeded by the seed and the group's
*name* (``numpy.random.default_rng([seed, crc32(name)])``), and the same seed always gives the
same posts. A group's sample depends on its posts, its name, the seed and the common size, not
on which other groups there are: adding or removing a file leaves the others' samples as they
were *as long as the common size stays the same* (every group keeps at least ``sample`` posts,
or the smallest group is unchanged). A file that changes the size, such as a new group smaller
than the others, changes every group's sample: draws of different sizes from one generator are
not nested (the 90-post draw is not a subset of the 99-post one). The same file under two
different group names (given by a path that shortens to another name) gets a different sample.
A further draw from a group (the Vendi subsample) uses another stream of the same seed and name.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import polars as pl

ROLE_SYNTHETIC = "synthetic"
ROLE_POSITIVES = "real positives"
ROLE_NEGATIVES = "real negatives"
ROLE_REAL = "real"


@dataclass
class Group:
    """A named set of posts to compare: a file, or one label of a file."""

    name: str
    texts: list[str] = field(default_factory=list)
    ids: list[str] | None = None  # post ids, parallel to texts, where known


def post_ids(group: Group) -> list[str]:
    """The group's post ids, or ``<group>-<row>`` where it has none."""
    return group.ids if group.ids is not None else [f"{group.name}-{i}" for i in range(len(group.texts))]


# ------------------------------------------------------------------------------ building groups


def groups_from_frames(named: Sequence[tuple[str, pl.DataFrame]], by_label: bool) -> list[Group]:
    """One group per file, or with ``by_label`` one per file and label (``train/label 1``).

    A file with a single label value (such as the output of ``generate``) stays one group.
    """
    groups: list[Group] = []
    for name, frame in named:
        labels = frame["label"].unique().sort().to_list() if "label" in frame.columns else []
        if by_label and len(labels) > 1:
            for value in labels:
                part = frame.filter(pl.col("label") == value)
                ids = part["id"].cast(pl.String).to_list() if "id" in part.columns else None
                groups.append(Group(f"{name}/label {value}", part["text"].to_list(), ids))
        else:
            groups.append(Group(name, frame["text"].to_list(), frame["id"].cast(pl.String).to_list() if "id" in frame.columns else None))
    return groups


# ------------------------------------------------------------------------------ roles


def role_of(name: str, synthetic: Sequence[str] = (), positives: Sequence[str] = ()) -> str:
    """synthetic, real positives, real negatives or real.

    ``synthetic`` names files whose groups are synthetic (a file's name also covers its
    ``name/label N`` groups); ``positives`` names further groups of real positives. Otherwise a
    ``.../label 1`` group holds real positives and a ``.../label 0`` group real negatives.
    """
    if any(name == s or name.startswith(f"{s}/label ") for s in synthetic):
        return ROLE_SYNTHETIC
    if name in positives or name.endswith("/label 1"):
        return ROLE_POSITIVES
    if name.endswith("/label 0"):
        return ROLE_NEGATIVES
    return ROLE_REAL


def _is_synthetic(frame: pl.DataFrame) -> bool:
    """Written by ``smm4h generate``: every record has ``source == "synthetic"``. A missing source
    (null, or an empty CSV cell) is not synthetic: polars' ``all`` skips nulls, so they count as
    False here, and real posts with one synthetic record among them stay real."""
    if "source" not in frame.columns or frame.height == 0:
        return False
    return bool((frame["source"].cast(pl.String) == "synthetic").fill_null(False).all())


def _only_positives(frame: pl.DataFrame) -> bool:
    return "label" in frame.columns and frame.height > 0 and bool((frame["label"] == 1).all())


def infer_roles(named: Sequence[tuple[str, pl.DataFrame]], synthetic: Sequence[str] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(synthetic, positives)`` for ``EmbedClusterOptions``: the named files that are synthetic
    (named in ``synthetic``, or written by ``smm4h generate``) and the other files that hold only
    real positives (label 1 everywhere), whose clusters the synthetic posts should reach."""
    syn = tuple(name for name, frame in named if name in synthetic or _is_synthetic(frame))
    pos = tuple(name for name, frame in named if name not in syn and _only_positives(frame))
    return syn, pos


# ------------------------------------------------------------------------------ the sampler


def group_rng(seed: int, name: str, stream: int = 0) -> np.random.Generator:
    """The generator of group ``name``'s draws: seeded by ``seed`` and the name (see above)."""
    key = [seed, zlib.crc32(name.encode("utf-8"))] + ([stream] if stream else [])
    return np.random.default_rng(key)


def draw(n: int, size: int, seed: int, name: str, stream: int = 0) -> np.ndarray:
    """Sorted positions of ``size`` of group ``name``'s ``n`` posts, without replacement."""
    return np.sort(group_rng(seed, name, stream).choice(n, size=size, replace=False))


def equal_size_indices(groups: Sequence[Group], sample: int, seed: int) -> tuple[list[np.ndarray], int | None]:
    """Positions of each group's equal-size sample, and that size (``None``: ``sample`` is 0,
    every position of every group).

    Every group is sampled to ``min(sample, smallest group)`` posts.
    """
    if sample == 0:
        return [np.arange(len(g.texts)) for g in groups], None
    size = min([sample] + [len(g.texts) for g in groups])
    return [draw(len(g.texts), size, seed, g.name) for g in groups], size


def equal_size_sample(groups: Sequence[Group], sample: int, seed: int) -> tuple[list[Group], int | None]:
    """Every group sampled down to ``min(sample, smallest group)`` posts (0: keep all), and that
    size (``None`` for 0)."""
    if sample == 0:
        return list(groups), None
    picks, size = equal_size_indices(groups, sample, seed)
    out = []
    for g, idx in zip(groups, picks):
        out.append(Group(g.name, [g.texts[i] for i in idx], None if g.ids is None else [g.ids[i] for i in idx]))
    return out, size
