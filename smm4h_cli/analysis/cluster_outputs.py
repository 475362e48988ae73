"""The files of ``embed-cluster`` (``tsne.png``, ``tsne.svg``, ``points.parquet``,
``metrics.json``) and its table: what ``clustering.embed_cluster`` found, written out.

An output folder holds one run's files: a run without the figure (``plot=False``) removes the
figures an earlier run left there, so no tsne.png is ever read beside points it does not show.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smm4h_cli.errors import InputError
from smm4h_cli.io import atomic_write, write_json

if TYPE_CHECKING:
    from smm4h_cli.analysis.clustering import Result

OUTPUT_FILES = ("tsne.png", "tsne.svg", "points.parquet", "metrics.json")


def table_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics as one flat row per group: the table of ``embed-cluster`` and of the study report."""
    rows = []
    for g in metrics["groups"]:
        rows.append({
            "group": g["group"],
            "role": g["role"],
            "posts": g["posts"],
            "Vendi": g["vendi"],
            "centroid dist.": g["centroid_distance"],
            "pairwise dist.": g["pairwise_distance"],
            "clusters": g["clusters"],
            "positive coverage": None if g["positive_coverage"] is None else f"{g['positive_clusters_reached']}/{g['positive_clusters']}",
            "entropy (bits)": g["cluster_entropy"],
            "copies": None if g["copy_share"] is None else f"{g['copy_share']:.1%}",
            # realism against real positives (k-NN balls); .get: metrics saved before it have none
            "precision": g.get("precision"),
            "recall": g.get("recall"),
            "density": g.get("density"),
            "coverage (kNN)": g.get("knn_coverage"),
        })
    return rows


FIGURES = ("tsne.png", "tsne.svg")


def existing_outputs(out_dir: Path) -> list[Path]:
    """The output files already in ``out_dir``: all four, whether or not this run draws the
    figure, since a run without it would leave an earlier run's figures beside its own points;
    without ``--force`` any of them is a clash."""
    return [Path(out_dir) / n for n in OUTPUT_FILES if (Path(out_dir) / n).exists()]


def write_outputs(result: "Result", out_dir: Path, plot: bool = True, seed: int = 0) -> list[Path]:
    """Write ``points.parquet``, ``metrics.json`` and (with ``plot``) ``tsne.png``/``tsne.svg``.

    Each file is written atomically; ``seed`` fixes the order in which points are drawn. Without
    ``plot``, figures already in ``out_dir`` (an earlier run's) are removed once the new files
    are written, so the folder never mixes two runs. Returns the paths written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; --out takes a folder.")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if plot:
        from smm4h_cli.analysis.plots import save_figure, tsne_figure

        fig = tsne_figure(result.points, result.roles, result.metrics, seed=seed)
        for name in FIGURES:
            save_figure(fig, out / name)
            written.append(out / name)
    atomic_write(out / "points.parquet", lambda tmp: result.points.write_parquet(tmp))
    write_json(out / "metrics.json", _jsonable(result.metrics))
    written += [out / "points.parquet", out / "metrics.json"]
    if not plot:
        for name in FIGURES:
            (out / name).unlink(missing_ok=True)
    return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
