"""The Figure 2 scatter: t-SNE coordinates, one colour per group, with a legend.

matplotlib with the Agg backend, so no display is needed. The figure is 7 × 5 inches at 200
dpi (1400 × 1000 pixels): full text width of a paper page, with 10-point type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

WIDTH_IN, HEIGHT_IN, DPI = 7.0, 5.0, 200
SIZE_PX = (int(WIDTH_IN * DPI), int(HEIGHT_IN * DPI))


def save_figure(fig, target: Path) -> None:
    """``fig`` written atomically to ``target``, in the format of its suffix (png, svg), the same
    bytes for the same figure: no date or software stamp, and SVG ids from a fixed salt (else
    matplotlib draws them at random)."""
    import matplotlib

    from smm4h_cli.io import atomic_write

    fmt = Path(target).suffix.lstrip(".")
    metadata = {"Software": None} if fmt == "png" else {"Date": None}
    with matplotlib.rc_context({"svg.hashsalt": "smm4h"}):
        atomic_write(target, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata))

# Real negatives grey and real positives blue, as the eye reads "background" and "target";
# synthetic groups in warm colours that stand out against both.
_ROLE_COLOURS = {
    "real negatives": ["#9e9e9e", "#6d6d6d", "#c7c7c7"],
    "real positives": ["#1f77b4", "#17becf", "#2ca02c"],
    "synthetic": ["#d62728", "#ff7f0e", "#9467bd", "#e377c2", "#8c564b"],
    "real": ["#2ca02c", "#1f77b4", "#17becf", "#7f7f7f", "#bcbd22"],
}


def group_colours(groups: list[str], roles: dict[str, str]) -> dict[str, str]:
    used: dict[str, int] = {}
    colours = {}
    for name in groups:
        role = roles.get(name, "real")
        palette = _ROLE_COLOURS.get(role, _ROLE_COLOURS["real"])
        colours[name] = palette[used.get(role, 0) % len(palette)]
        used[role] = used.get(role, 0) + 1
    return colours


def tsne_figure(points: pl.DataFrame, roles: dict[str, str], metrics: dict[str, Any], seed: int = 0):
    """The scatter as a matplotlib Figure (the caller saves it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    groups = list(dict.fromkeys(points["group"].to_list()))
    colours = group_colours(groups, roles)
    counts = dict(zip(*np.unique(points["group"].to_numpy(), return_counts=True)))

    # A plain Figure (not pyplot) does not register with a GUI backend or leak between calls.
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend: no display needed
    ax = fig.add_subplot()
    # Draw the points in a seeded random order so no group hides under the one drawn last.
    order = np.random.default_rng(seed).permutation(points.height)
    group_col = points["group"].to_numpy()[order]
    ax.scatter(
        points["x"].to_numpy()[order], points["y"].to_numpy()[order],
        c=[colours[g] for g in group_col], s=9, alpha=0.75, linewidths=0, rasterized=False,
    )
    handles = [
        Line2D([], [], marker="o", linestyle="", markersize=6, color=colours[g], label=f"{g} ({'synthetic, ' if roles.get(g) == 'synthetic' else ''}n = {counts[g]:,})")
        for g in groups
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9, title="group", title_fontsize=9)
    settings = metrics.get("settings", {})
    model = str(settings.get("model", "")).removeprefix("embedded:")
    ax.set_title(f"t-SNE of sentence embeddings ({model})", fontsize=11)
    ax.set_xlabel("t-SNE dimension 1", fontsize=10)
    ax.set_ylabel("t-SNE dimension 2", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    return fig
