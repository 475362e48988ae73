"""The study's report: ``report.md`` and a self-contained ``report.html`` built from the step files.

Every number in the report is read from the files the steps wrote (``tables/*.json``,
``figure2/metrics.json``, ``synthetic/*.meta.json``, ``runs/*/summary.json``; their paths come
from :mod:`smm4h_cli.study.layout`), so the report and the step files cannot disagree. The
report takes the study's settings as plain values (:class:`ReportSettings`) and knows nothing
of the pipeline. The HTML is the same Markdown rendered by markdown-it (which
Rich already depends on), with the figure embedded as a data URI so it opens offline.

Text that came from data or a model (posts, file and model names, group names, anything the
toolkit did not write itself) goes into the Markdown through :func:`literal`, so it shows as
written and is never read as Markdown or HTML. The HTML inlines the figures the study wrote,
by a fixed list (:data:`smm4h_cli.study.layout.FIGURES`), and nothing else: no image or link
found in the Markdown is followed.
"""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from smm4h_cli.analysis.cluster_outputs import table_rows
from smm4h_cli.tables import TABLE2_HEADERS, markdown_table, p_clause, table2_rows
from smm4h_cli.io import write_json, write_records, write_text
from smm4h_cli.study.layout import FIGURE2, StudyLayout
from smm4h_cli.study.markup import _literal_rows, literal, render_html, shown_path  # noqa: F401 (literal, shown_path: re-exported)

TASK_TITLES = {5: "Task 5: tweets reporting a child with ADHD, autism, delayed speech or asthma", 6: "Task 6: posts stating the user's exact age"}
PACKAGES = ("smm4h", "torch", "transformers", "sentence-transformers", "openai", "llama_cpp_python", "polars", "scikit-learn")



def task_title(options: Any) -> str:
    """What the study is about, for the title: the SMM4H task, or the user's ``--definitions``
    (its name and kind of post)."""
    if getattr(options, "definitions", None) is None:
        return f"SMM4H {TASK_TITLES[options.task]}"
    from smm4h_cli.generation.prompts import load_definitions

    task = load_definitions(options.definitions)
    return f"{literal(task.name)} ({literal(task.post_kind)})"


class ReportSettings(Protocol):
    """The settings the report states (the study's options have them all)."""

    task: int
    strategies: tuple[str, ...]
    n: int
    examples: int
    temperature: float | None
    classifier: str | None
    epochs: int
    lr: float
    batch_size: int
    seeds: tuple[int, ...]
    sample: int
    seed: int



def report_head(title: str, intro: str, conclusion_text: str, data: list[dict[str, Any]]) -> list[str]:
    """The Markdown lines every study report opens with: title, intro, the conclusion, the data table."""
    return [
        f"# {title}", "", intro, "", "## Conclusion", "", f"> {literal(conclusion_text)}", "",
        "## Setting", "", markdown_table(_literal_rows(data), digits=3),
    ]


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _data_rows(layout: StudyLayout, paths: dict[str, Path], frames: dict[str, pl.DataFrame], synthetic: dict[str, Path]) -> list[dict[str, Any]]:
    rows = []
    for split, frame in frames.items():
        pos = int(frame["label"].sum())
        rows.append({"data": split, "file": shown_path(paths[split]), "posts": frame.height, "label 1": pos, "share of label 1": pos / frame.height})
    for strategy, path in synthetic.items():
        n = sum(1 for _ in path.open(encoding="utf-8"))
        # inside the study folder: shown relative to it, where the report lies
        rows.append({"data": f"synthetic ({strategy})", "file": layout.shown(path), "posts": n, "label 1": n, "share of label 1": 1.0})
    return rows


def _generation_rows(synthetic: dict[str, Path]) -> list[dict[str, Any]]:
    rows = []
    for strategy, path in synthetic.items():
        meta = _load(StudyLayout.meta(path))
        parse = sum(meta.get("parse_issues", {}).values())
        dups = meta.get("duplicates", {})
        rows.append({
            "strategy": strategy,
            "model": meta["model"],
            "calls": meta["calls"],
            "failed": meta["calls_failed"],
            "posts kept": meta["posts_kept"],
            "parse issues": parse,
            "flagged duplicates": sum(dups.values()) if isinstance(dups, dict) else dups,
            "format · kept/request · repeats · copies": f"{meta.get('output_format', 'list')} · {meta.get('posts_per_request', '-')} · {meta.get('repeats', '-')} · {meta.get('copies', '-')}",
            "prompt tokens": meta["prompt_tokens"],
            "completion tokens": meta["completion_tokens"],
            "cost (US$)": "0 (local)" if meta["backend"] == "embedded" else ("unknown" if meta["cost_usd"] is None else f"{meta['cost_usd']:.2f}"),
            "seconds": meta["seconds"],
        })
    return rows


def conclusion(table2: dict, table3: list[dict], metrics: dict, generation: list[dict]) -> str:
    """The paragraph that answers the study's question from its numbers, in the paper's terms."""
    sentences = []
    baseline = next(a for a in table2["arms"] if a["arm"] == "baseline")
    for pair in table2["pairs"]:
        if pair["a"] != "baseline" or not pair["b"].startswith("synthetic-"):
            continue
        arm = next(a for a in table2["arms"] if a["arm"] == pair["b"])
        strategy = pair["b"].removeprefix("synthetic-")
        gen = next((g for g in generation if g["strategy"] == strategy), None)
        what = f"{gen['posts kept']:,} synthetic positives ({strategy} strategy, {gen['model']})" if gen else f"the {strategy} synthetic positives"
        direction = "raised" if pair["f1_diff"] > 0 else "lowered" if pair["f1_diff"] < 0 else "left"
        interval_excludes_zero = pair["ci_low"] > 0 or pair["ci_high"] < 0
        if pair["significant"]:
            verdict = f"a significant difference, F1 {'higher' if pair['f1_diff'] > 0 else 'lower'} by {abs(pair['f1_diff']):.3f}."
            if not interval_excludes_zero:
                verdict += " The bootstrap interval of ΔF1 still includes 0: the models err on different posts more than their F1 differs."
            elif pair["f1_diff"] > 0:
                verdict += " Unlike in the paper, synthetic data helped here."
            else:
                verdict += " Synthetic data hurt here, beyond the paper's finding that it did not help."
        elif interval_excludes_zero:
            verdict = (
                "the evidence is mixed: the bootstrap interval of ΔF1 excludes 0, but McNemar's test finds "
                f"no significant difference in the errors the two models make ({p_clause(pair.get('p_adjusted', pair['mcnemar_p']))}); "
                "more test posts or more seeds would settle it."
            )
        else:
            verdict = (
                f"{pair['verdict']} — the paper's finding that LLM-generated texts did not significantly "
                "improve the classifier holds here."
            )
        sentences.append(
            f"Adding {what} to the training data {direction} the test F1 of the positive class "
            f"from {baseline['f1']:.3f} to {arm['f1']:.3f} (Δ = {pair['f1_diff']:+.3f}, "
            f"{table2['confidence']:.0%} CI [{pair['ci_low']:+.3f}, {pair['ci_high']:+.3f}], "
            f"McNemar {p_clause(pair['mcnemar_p'])}): {verdict}"
        )
    ngram = {r["group"]: r for r in table3}
    positives = [g for g in metrics["groups"] if g["role"] == "real positives"]
    ref_vendi = metrics["settings"].get("real_positives_vendi")
    for g in metrics["groups"]:
        if g["role"] != "synthetic":
            continue
        parts = []
        if ref_vendi is not None:
            parts.append(
                f"an effective number of distinct posts (Vendi score) of {g['vendi']:.1f} against {ref_vendi:.1f} "
                f"for the real positives at n = {metrics['settings']['vendi_n']:,}"
            )
        if g["positive_coverage"] is not None:
            parts.append(f"reach {g['positive_clusters_reached']} of the {g['positive_clusters']} k-means clusters that real positives occupy")
        real_pos = next((ngram[p["group"]] for p in positives if p["group"] in ngram), None)
        if real_pos and g["group"] in ngram:
            syn = ngram[g["group"]]
            parts.append(
                f"use {syn['unique_3grams']:,} unique trigrams against {real_pos['unique_3grams']:,} in as many real positives "
                f"(distinct-3, unique per trigram used: {syn['distinct_3']:.2f} against {real_pos['distinct_3']:.2f})"
            )
        if g["copy_share"] is not None:
            parts.append(f"{g['copy_share']:.1%} of them lie within cosine {metrics['settings']['copy_threshold']:g} of a real training post")
        verdict = ""
        if ref_vendi is not None:
            verdict = (
                " They are less diverse than the real positives, as the paper found for GPT-4's texts."
                if g["vendi"] < ref_vendi
                else " By this measure they are at least as diverse as the real positives, unlike the paper's GPT-4 texts."
            )
        sentences.append(f"The {g['group']} posts have " + "; ".join(parts) + "." + verdict)
    return " ".join(sentences)


def write_report(
    out: Path,
    options: ReportSettings,
    paths: dict[str, Path],
    frames: dict[str, pl.DataFrame],
    synthetic: dict[str, Path],
    arms: list[str],
) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``report.md``, ``report.html`` and the tables as CSV into the study folder ``out``;
    returns the paths and numbers.

    ``paths`` and ``frames`` are the input data files and their posts (train, validation, test),
    ``synthetic`` the generated posts by strategy, ``arms`` the trained arms.
    """
    layout = StudyLayout(out)
    table2 = _load(layout.table("table2"))
    table3 = _load(layout.table("table3"))
    metrics = _load(layout.figure2_metrics)
    generation = _generation_rows(synthetic)
    data = _data_rows(layout, paths, frames, synthetic)
    diversity = table_rows(metrics)
    for name, rows in (("data", data), ("generation", generation), ("diversity", diversity)):
        write_records(pl.DataFrame(rows), layout.table(name, "csv"), force=True)
    summaries = {arm: _load(layout.run_summary(arm)) for arm in arms}
    text = conclusion(table2, table3, metrics, generation)

    versions = _versions()
    table2_arms, table2_pairs = table2_rows(table2, ("**", "**"), ci_label="CI (paired bootstrap)")
    gen_models = sorted({g["model"] for g in generation})
    # what the runs used (the tuned value for the embedded model when --temperature was not given)
    metas = [_load(StudyLayout.meta(path)) for path in synthetic.values()]
    temperatures = sorted({m["temperature"] for m in metas if m.get("temperature") is not None}) or [options.temperature or 0.0]
    formats = sorted({m.get("output_format", "list") for m in metas})
    md: list[str] = [
        *report_head(
            f"Will LLM-generated positives help? {task_title(options)}",
            "A run of the study of Yamagishi & Nakamura (SMM4H 2024), \"Why LLM-Generated Texts Fail to Improve "
            "Text Classification Models\", made with `smm4h study`.",
            text, data,
        ),
        f"- **Generator**: {', '.join(map(literal, gen_models))}; strategies {', '.join(map(literal, options.strategies))}; {options.n:,} posts asked for per strategy "
        f"in calls of 10; {options.examples}+{options.examples} few-shot examples; temperature {', '.join(f'{t:g}' for t in temperatures)}; "
        f"answers as {', '.join(map(literal, formats))}.",
        f"- **Classifier**: {literal(summaries[arms[0]].get('model') or options.classifier or 'all-MiniLM-L6-v2 (embedded)')}; {options.epochs} epochs; "
        f"learning rate {options.lr:g} decaying linearly to 0; batch {options.batch_size}; best epoch by validation F1 of label 1; "
        f"seeds {', '.join(map(str, options.seeds))}.",
        f"- **Analyses**: samples of {options.sample:,} posts per group (or the smallest group); embeddings "
        f"{literal(metrics['settings']['model'])}; k-means k = {metrics['settings']['k']}; seed {options.seed}.",
        "- **Versions**: " + ", ".join(f"{literal(k)} {literal(v)}" for k, v in versions.items()) + ".",
        "",
        "## Table 2: test performance with and without synthetic data",
        "",
        f"F1, precision and recall of label 1 on the {table2['test_posts']:,} test posts ({table2['test_positives']:,} positive); "
        "**bold** marks the best of each column"
        + ("; with several seeds, mean ± standard deviation." if len(options.seeds) > 1 else "."),
        "",
        markdown_table(table2_arms, TABLE2_HEADERS),
        "Is the difference real? Paired bootstrap of the test posts "
        f"({table2['bootstrap']:,} resamples) and McNemar's exact test on the posts the two models label differently"
        + (" (p-values Holm-adjusted across pairs for the verdict)." if len(table2["pairs"]) > 1 else "."),
        "",
        markdown_table(table2_pairs),
        "## Table 3: unique n-grams",
        "",
        f"Equal-size samples of {table3[0]['posts']:,} posts per group; distinct-n = unique / total n-grams; "
        "gzip ratio = size / compressed size (higher is more repetitive).",
        "",
        markdown_table(_literal_rows(table3), headers={"unique_1grams": "n=1", "unique_2grams": "n=2", "unique_3grams": "n=3", "compression_ratio": "gzip ratio"}),
        "## Figure 2: t-SNE of sentence embeddings",
        "",
        f"![Figure 2: t-SNE of sentence embeddings of label 0, label 1 and the synthetic posts]({FIGURE2})",
        "",
        "## Diversity in embedding space",
        "",
        markdown_table(_literal_rows(diversity)),
    ]
    md += [f"- {literal(g['summary'])}" for g in metrics["groups"]]
    if metrics["closest_pairs"]:
        md += ["", "Synthetic posts closest to a real training post:", ""]
        md += [markdown_table(_literal_rows([
            {"similarity": round(p["similarity"], 3), "synthetic post": p["synthetic_text"], "nearest real post": p["real_text"]}
            for p in metrics["closest_pairs"][:5]
        ]))]
    md += [
        "",
        "## Cost of generation",
        "",
        markdown_table(_literal_rows(generation)),
        "## Files",
        "",
        "`synthetic/` generated posts with provenance, `tables/` every table as CSV and JSON, `figure2/` the figure, "
        "points and metrics, `runs/` the trained models with their metrics and test predictions, `steps.json` what each "
        "step was computed from.",
        "",
    ]
    markdown = "\n".join(md)
    write_text(layout.report_md, markdown)
    write_text(layout.report_html, render_html(markdown, layout.figures(), title=f"smm4h study: task {options.task}" if getattr(options, "definitions", None) is None else f"smm4h study: {task_title(options)}"))
    numbers = {"table2": table2, "table3": table3, "diversity": metrics["groups"], "generation": generation, "conclusion": text}
    write_json(layout.report_json, numbers)
    return layout.report_md, layout.report_html, numbers
