"""The dose study's report: the curve, the table, the diversity-vs-gain figure and the conclusion.

Read from the step files only (``tables/table2.json`` for the comparison with Holm-adjusted
McNemar p-values, ``tables/dose_sets.json`` for each set's measures, the arms' test
predictions for the bands), like :mod:`smm4h_cli.study.report`, whose HTML rendering and
escaping it reuses.

The band of an arm's F1 is a percentile bootstrap over the test posts of its seed-mean F1
(pooled over seeds), drawn with the same resamples for every arm (paired): 95%.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from smm4h_cli.io import read_records, write_json, write_records, write_text
from smm4h_cli.study.layout import DOSE_FIGURE, FIGURE2, GAIN_FIGURE, StudyLayout
from smm4h_cli.study.options import ARM_BASELINE
from smm4h_cli.study.report import _data_rows, _generation_rows, _versions, literal, render_html, report_head, task_title
from smm4h_cli.tables import format_p, markdown_table, p_clause

CONFIDENCE = 0.95


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def f1_bands(layout: StudyLayout, arms: list[str], resamples: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """Each arm's seed-mean F1 of label 1 on the test posts and its paired bootstrap band."""
    from smm4h_cli.training.metrics import bootstrap_weights, seed_mean_f1
    from smm4h_cli.training.run_dir import test_prediction_files

    labels, preds = None, {}
    order = None
    for arm in arms:
        frames = [read_records(p) for p in test_prediction_files(layout.run(arm))]
        cols = []
        for f in frames:
            f = f.with_columns(pl.col("id").cast(pl.String)).sort("id")
            if order is None:
                order, labels = f["id"], f["label"].to_numpy()
            cols.append(f["pred"].to_numpy())
        preds[arm] = np.column_stack(cols)
    ones = np.ones((1, len(labels)))
    draws: dict[str, list[np.ndarray]] = {arm: [] for arm in arms}
    for w in bootstrap_weights(len(labels), resamples, np.random.default_rng(seed)):
        for arm in arms:
            draws[arm].append(seed_mean_f1(w, labels, preds[arm]))
    tail = (1 - CONFIDENCE) / 2
    out = {}
    for arm in arms:
        low, high = np.quantile(np.concatenate(draws[arm]), [tail, 1 - tail])
        out[arm] = (float(seed_mean_f1(ones, labels, preds[arm])[0]), float(low), float(high))
    return out


def dose_rows(table2: dict, measures: dict, bands: dict, arms: list, posts_added: dict[str, int]) -> list[dict[str, Any]]:
    """One row per arm, the baseline first: what the table shows and the CSV holds."""
    by_arm = {a["arm"]: a for a in table2["arms"]}
    pairs = {p["b"]: p for p in table2["pairs"]}
    base = by_arm[ARM_BASELINE]
    rows = [{
        "arm": "baseline (dose 0)", "selection": "", "dose": 0.0, "posts added": 0, "f1": base["f1"], "f1_std": base["f1_std"],
        "band_low": bands[ARM_BASELINE][1], "band_high": bands[ARM_BASELINE][2], "delta_f1": None, "ci_low": None, "ci_high": None,
        "mcnemar_p": None, "p_holm": None, "significant": None, "vendi": None, "positive_coverage": None,
        "precision": None, "recall": None, "density": None, "coverage": None,
    }]
    for arm in arms:
        a, p, m = by_arm[arm.name], pairs[arm.name], measures["arms"][arm.name]
        rows.append({
            "arm": arm.shown, "selection": arm.selection, "dose": arm.dose, "posts added": posts_added[arm.name], "f1": a["f1"],
            "f1_std": a["f1_std"], "band_low": bands[arm.name][1], "band_high": bands[arm.name][2], "delta_f1": p["f1_diff"],
            "ci_low": p["ci_low"], "ci_high": p["ci_high"], "mcnemar_p": p["mcnemar_p"], "p_holm": p["p_adjusted"],
            "significant": p["significant"], "vendi": m["vendi"], "positive_coverage": m["positive_coverage"],
            "precision": m["precision"], "recall": m["recall"], "density": m["density"], "coverage": m["coverage"],
        })
    return rows


def _shown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def num(v: Any, fmt: str = ".3f") -> str:
        return "–" if v is None else format(v, fmt)

    shown = []
    for r in rows:
        sd = f" ± {r['f1_std']:.3f}" if r["f1_std"] is not None else ""
        shown.append({
            "arm": literal(r["arm"]), "posts added": r["posts added"], "F1 (label 1)": f"{r['f1']:.3f}{sd}",
            "ΔF1 [95% CI]": "–" if r["delta_f1"] is None else f"{r['delta_f1']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
            "McNemar p (Holm)": "–" if r["p_holm"] is None else format_p(r["p_holm"]) + (" *" if r["significant"] else ""),
            "Vendi": num(r["vendi"], ".1f"), "pos. clusters": num(r["positive_coverage"], ".0%"),
            "precision": num(r["precision"]), "recall": num(r["recall"]), "density": num(r["density"]), "coverage": num(r["coverage"]),
        })
    return shown


def dose_figures(layout: StudyLayout, rows: list[dict[str, Any]], unit: str) -> None:
    """``dose/dose.png|svg`` (F1 against dose, a line and band per rule, the baseline as a
    horizontal band) and ``dose/gain.png|svg`` (ΔF1 against the set's Vendi score)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from smm4h_cli.analysis.plots import HEIGHT_IN, WIDTH_IN

    base, arms = rows[0], rows[1:]
    rules = list(dict.fromkeys(r["selection"] for r in arms))
    colours = dict(zip(rules, ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]))
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    doses = [0.0] + sorted({r["dose"] for r in arms})
    ax.axhspan(base["band_low"], base["band_high"], color="#1f77b4", alpha=0.15, label="baseline 95% band")
    ax.axhline(base["f1"], color="#1f77b4", lw=1.2, label="baseline (real data only)")
    for rule in rules:
        mine = sorted((r for r in arms if r["selection"] == rule), key=lambda r: r["dose"])
        x = [0.0] + [r["dose"] for r in mine]
        y = [base["f1"]] + [r["f1"] for r in mine]
        lo = [base["band_low"]] + [r["band_low"] for r in mine]
        hi = [base["band_high"]] + [r["band_high"] for r in mine]
        ax.plot(x, y, marker="o", color=colours[rule], label=rule)
        ax.fill_between(x, lo, hi, color=colours[rule], alpha=0.12)
    ax.set_xticks(doses)
    ax.set_xlabel("synthetic posts added, × the real positives" if unit == "multiple" else "synthetic posts added")
    ax.set_ylabel("test F1 of label 1 (mean over seeds)")
    ax.set_title("Dose-response: F1 against synthetic posts added (95% bootstrap bands)", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, layout, "dose")

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axhline(0, color="#555", lw=0.8)
    for rule in rules:
        mine = [r for r in arms if r["selection"] == rule]
        x = [r["vendi"] for r in mine]
        y = [r["delta_f1"] for r in mine]
        err = [[r["delta_f1"] - r["ci_low"] for r in mine], [r["ci_high"] - r["delta_f1"] for r in mine]]
        ax.errorbar(x, y, yerr=err, fmt="o", color=colours[rule], label=rule, capsize=3, alpha=0.85)
        for r in mine:
            ax.annotate(f"{r['dose']:g}", (r["vendi"], r["delta_f1"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("Vendi score of the arm's synthetic set (MiniLM)")
    ax.set_ylabel("ΔF1 against the baseline (95% CI)")
    ax.set_title("Diversity vs gain: does a more diverse set help more? (labels: dose)", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, layout, "gain")


def _save(fig, layout: StudyLayout, name: str) -> None:
    from smm4h_cli.analysis.plots import save_figure

    for suffix in ("png", "svg"):
        save_figure(fig, layout.dose_figure(name, suffix))


def spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def dose_conclusion(rows: list[dict[str, Any]], unit: str) -> str:
    """Names the best arm, whether its gain survives Holm's adjustment, and says so when nothing helps."""
    base, arms = rows[0], rows[1:]
    best = max(arms, key=lambda r: r["delta_f1"])
    what = f"{best['arm']} ({best['posts added']:,} synthetic posts)"
    head = (
        f"The baseline trained on the real data alone reaches F1 {base['f1']:.3f} on label 1. "
        f"Of the {len(arms)} arms, the best is {what}: F1 {best['f1']:.3f}, ΔF1 {best['delta_f1']:+.3f} "
        f"(95% CI [{best['ci_low']:+.3f}, {best['ci_high']:+.3f}], McNemar {p_clause(best['p_holm'])} Holm-adjusted across all {len(arms)} arms). "
    )
    # significant after Holm, and the F1 interval on the same side of 0 (helped, hurt) or not (mixed)
    helped = [r for r in arms if r["significant"] and r["delta_f1"] > 0 and r["ci_low"] > 0]
    hurt = [r for r in arms if r["significant"] and r["delta_f1"] < 0 and r["ci_high"] < 0]
    mixed_up = [r for r in arms if r["significant"] and r["delta_f1"] > 0 and r["ci_low"] <= 0]
    mixed_down = [r for r in arms if r["significant"] and r["delta_f1"] <= 0 and r["ci_high"] >= 0]
    names = lambda group: ", ".join(r["arm"] for r in group)  # noqa: E731
    if helped:
        verdict = (
            f"{len(helped)} arm(s) improve significantly after adjustment ({names(helped)}): here synthetic data helps."
        )
    elif mixed_up:
        verdict = (f"McNemar's test after Holm's adjustment finds {len(mixed_up)} arm(s) with a higher F1 erring on other "
                   f"posts than the baseline ({names(mixed_up)}), but their F1 interval includes 0: the evidence is mixed, "
                   "and no arm clearly helps; more test posts or seeds would settle it.")
    elif best["delta_f1"] > 0 and best["ci_low"] > 0:
        verdict = ("Its F1 interval excludes 0, but McNemar's test after Holm's adjustment does not confirm it: "
                   "no arm helps significantly; more test posts or seeds would settle it.")
    else:
        verdict = "No arm helps: no dose and no selection rule raises F1 significantly over the real data alone."
    if hurt:
        verdict += f" {len(hurt)} arm(s) significantly lower F1 ({names(hurt)})."
    if mixed_down:
        verdict += (f" {len(mixed_down)} arm(s) err on significantly other posts with an F1 no higher, whose interval "
                    f"includes 0 ({names(mixed_down)}).")
    rho = spearman([r["vendi"] for r in arms], [r["delta_f1"] for r in arms])
    tail = "" if rho is None else (
        f" Across the arms, ΔF1 and the set's Vendi score have Spearman ρ = {rho:+.2f} "
        f"({'more diverse sets gained more' if rho > 0.3 else 'more diverse sets gained less' if rho < -0.3 else 'no clear link between diversity and gain'})."
    )
    return head + verdict + tail


def write_dose_report(out: Path, options, paths: dict[str, Path], frames: dict[str, pl.DataFrame], pool: dict[str, Path], arms: list, positives: int):
    """Write the dose study's ``report.md``, ``report.html``, ``report.json``, tables and figures."""
    layout = StudyLayout(out)
    table2 = _load(layout.table("table2"))
    measures = _load(layout.table("dose_sets"))
    bands = f1_bands(layout, [ARM_BASELINE] + [a.name for a in arms], options.bootstrap, options.seed)
    posts_added = {a.name: measures["arms"][a.name]["posts"] for a in arms}
    rows = dose_rows(table2, measures, bands, arms, posts_added)
    write_json(layout.table("dose"), rows)
    write_records(pl.DataFrame(rows, infer_schema_length=None), layout.table("dose", "csv"), force=True)
    dose_figures(layout, rows, options.dose_unit)
    generation = _generation_rows(pool)
    data = _data_rows(layout, paths, frames, pool)
    for name, table in (("data", data), ("generation", generation)):
        write_records(pl.DataFrame(table), layout.table(name, "csv"), force=True)
    text = dose_conclusion(rows, options.dose_unit)
    short = [r for a, r in zip(arms, rows[1:]) if r["posts added"] < a.asked]
    unit = "× the real positives" if options.dose_unit == "multiple" else "posts"
    title = task_title(options)
    md = [
        *report_head(
            f"How many, and which, synthetic positives help? {title}",
            "A dose-response study made with `smm4h study --doses`: every dose of synthetic positives crossed with every "
            "selection rule, trained over the seeds and compared with the real data alone.",
            text, data,
        ),
        f"- **Grid**: doses {', '.join(f'{d:g}' for d in sorted(options.doses))} ({unit}; {positives:,} real positives in the training set); "
        f"selections {', '.join(options.selections)}; one pool of {options.n:,} posts asked for ({options.overgenerate:g} × the largest dose), "
        f"strategy {literal(options.strategies[0])}, generated by {', '.join(literal(g['model']) for g in generation)}.",
        "- **Selection at dose d**: each rule orders the pool once (none: seeded random order; dedup and confidence: the kept posts "
        "in the same seeded random order; diverse: k-center greedy pick order) and the arm takes its first d posts. "
        "confidence scores the pool with the baseline's model of the first seed (min probability 0.5).",
        f"- **Classifier**: {options.epochs} epochs; learning rate {options.lr:g}; batch {options.batch_size}; seeds {', '.join(map(str, options.seeds))}.",
        "- **Versions**: " + ", ".join(f"{literal(k)} {literal(v)}" for k, v in _versions().items()) + ".",
        "",
        "## F1 against dose",
        "",
        f"![F1 of label 1 against dose, one line per selection rule]({DOSE_FIGURE})",
        "",
        f"Test F1 of label 1 on {table2['test_posts']:,} posts ({table2['test_positives']:,} positive), mean over seeds; "
        f"bands: 95% paired bootstrap over test posts ({options.bootstrap:,} resamples, seeds pooled).",
        "",
        "## The arms",
        "",
        "ΔF1 against the baseline with its 95% paired-bootstrap CI; McNemar's exact test on the seeds' majority votes, "
        f"Holm-adjusted across all {len(arms)} arms (* significant at 0.05). The set's measures against the "
        f"{measures['real_positives']:,} real training positives in {literal(measures['model'])} space: Vendi score "
        f"(real positives: {measures['real_positives_vendi']:.1f}), share of the k-means clusters (k = {measures['k']}) holding real positives "
        "that the set reaches, and precision/recall/density/coverage (k = 5 nearest neighbours).",
        "",
        markdown_table(_shown_rows(rows)),
    ]
    if short:
        md += [f"Short of the dose (the rule kept fewer posts than asked): {', '.join(literal(r['arm']) for r in short)}.", ""]
    md += [
        "## Diversity vs gain",
        "",
        f"![ΔF1 of each arm against its synthetic set's Vendi score]({GAIN_FIGURE})",
        "",
        "## The pool: t-SNE of sentence embeddings",
        "",
        f"![t-SNE of sentence embeddings of label 0, label 1 and the synthetic pool]({FIGURE2})",
        "",
        "## Files",
        "",
        "`synthetic/` the pool, `synthetic/selections/` each rule's order, `synthetic/dose/` each arm's set, `tables/dose.csv` "
        "the table, `dose/` the figures, `runs/` the models and their test predictions, `steps.json` what each step was computed from.",
        "",
    ]
    markdown = "\n".join(md)
    write_text(layout.report_md, markdown)
    write_text(layout.report_html, render_html(markdown, layout.figures(), title=f"smm4h study: dose-response, {title}"))
    numbers = {"table2": table2, "dose": rows, "sets": measures, "generation": generation, "conclusion": text}
    write_json(layout.report_json, numbers)
    return layout.report_md, layout.report_html, numbers
