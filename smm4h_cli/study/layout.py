"""Every path of a study folder, in one place: the pipeline writes there and the report reads there.

::

    study/
      synthetic/<strategy>.jsonl      generated posts (+ .meta.json summary, .cache.jsonl call cache)
      synthetic/selections/<rule>.jsonl  the dose study: the pool in each selection rule's order (+ .meta.json)
      synthetic/dose/<rule>-<dose>.jsonl the dose study: each arm's synthetic set
      dose/dose.png|svg, gain.png|svg    the dose study's figures; tables/dose.json|csv, dose_sets.json
      tables/table2.json|csv, table2_pairs.csv, table3.json|csv, data.csv, generation.csv, diversity.csv
      figure2/tsne.png|svg, points.parquet, metrics.json
      runs/<arm>/                     a training run folder per arm (seed-N/, summary.json)
      steps.json                      what each step was computed from (study.steps)
      report.md, report.html, report.json
      .cache/embeddings/              sentence embeddings of the posts
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smm4h_cli.study.steps import STATE_FILE
from smm4h_cli.training.run_dir import SUMMARY

#: The figures the report shows, as written in its Markdown (relative to the study folder): the
#: only files the HTML embeds.
FIGURE2 = "figure2/tsne.png"
#: The dose study's figures: F1 against dose, and each arm's gain against its set's diversity.
DOSE_FIGURE = "dose/dose.png"
GAIN_FIGURE = "dose/gain.png"
FIGURES = (FIGURE2, DOSE_FIGURE, GAIN_FIGURE)


@dataclass(frozen=True)
class StudyLayout:
    """The paths of the study folder ``out``."""

    out: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))

    # -- generation: the posts, with the summary and call cache beside them as `smm4h generate` writes them
    def synthetic(self, strategy: str) -> Path:
        return self.out / "synthetic" / f"{strategy}.jsonl"

    @staticmethod
    def meta(posts: Path) -> Path:
        """The generation summary beside a file of generated posts."""
        return posts.with_suffix(".meta.json")

    @staticmethod
    def call_cache(posts: Path) -> Path:
        return posts.with_suffix(".cache.jsonl")

    # -- the dose study
    def selection(self, rule: str) -> Path:
        return self.out / "synthetic" / "selections" / f"{rule}.jsonl"

    def dose_set(self, name: str) -> Path:
        return self.out / "synthetic" / "dose" / f"{name}.jsonl"

    def dose_figure(self, name: str, suffix: str = "png") -> Path:
        """``dose/<name>.<suffix>``: dose (F1 against dose) and gain (ΔF1 against Vendi)."""
        return self.out / "dose" / f"{name}.{suffix}"

    # -- tables
    @property
    def tables(self) -> Path:
        return self.out / "tables"

    def table(self, name: str, suffix: str = "json") -> Path:
        """``tables/<name>.<suffix>``: table2, table2_pairs, table3, data, generation, diversity."""
        return self.tables / f"{name}.{suffix}"

    # -- Figure 2 and the embedding analysis
    @property
    def figure2(self) -> Path:
        return self.out / "figure2"

    @property
    def figure2_metrics(self) -> Path:
        return self.figure2 / "metrics.json"

    @property
    def figure2_plot(self) -> Path:
        return self.out / FIGURE2

    @property
    def embedding_cache(self) -> Path:
        return self.out / ".cache" / "embeddings"

    def figures(self) -> dict[str, Path]:
        """The figures the HTML may embed: their source as written in the Markdown, and the file."""
        return {name: self.out / name for name in FIGURES}

    # -- training
    def run(self, arm: str) -> Path:
        return self.out / "runs" / arm

    def run_summary(self, arm: str) -> Path:
        return self.run(arm) / SUMMARY

    # -- bookkeeping and the report
    @property
    def steps(self) -> Path:
        return self.out / STATE_FILE

    @property
    def report_md(self) -> Path:
        return self.out / "report.md"

    @property
    def report_html(self) -> Path:
        return self.out / "report.html"

    @property
    def report_json(self) -> Path:
        return self.out / "report.json"

    def shown(self, path: Path) -> str:
        """A path inside the study folder as the report shows it: relative to the folder, where the report lies."""
        return Path(path).relative_to(self.out).as_posix()
