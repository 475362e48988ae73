"""The whole study, end to end (``smm4h study``): the paper's pipeline as library calls.

1. generate synthetic positives with each strategy (``generation``),
2. n-gram analysis, Table 3 (``analysis.ngrams``) and embedding analysis, Figure 2 and the
   diversity numbers (``analysis.clustering``) of label 0, label 1 and each synthetic set,
3. train the classifier without and with each synthetic set (and the classic imbalance
   baselines), over the seeds, predicting the test set with every model (``training``),
4. compare the arms, Table 2 with confidence intervals and significance tests,
5. write ``report.md`` and a self-contained ``report.html``.

Every step writes its files into the study folder as the standalone command would and records
a fingerprint of what it was computed from (options and the content of its input files) in
``steps.json``. A re-run skips the steps whose fingerprint is unchanged, continues an
interrupted one (generation from its call cache, training from its last checkpoint), and redoes
only the steps that a changed option or file reaches.
"""
from __future__ import annotations

from dataclasses import asdict

from smm4h_cli.io import check_writable, read_records
from smm4h_cli.progress import ProgressFn
from smm4h_cli.study.executors import open_executor
from smm4h_cli.study.layout import StudyLayout
from smm4h_cli.study.options import ARM_BASELINE, IMBALANCE_BASELINES, StudyOptions, arms_of
from smm4h_cli.study.pipeline import (
    StudyResult,
    _analysis_steps,
    _check_options,
    _compare_step,
    _generation_steps,
    _Study,
    _training_steps,
)
from smm4h_cli.study.steps import EventFn, StepEvent, Steps, file_digest

__all__ = ["ARM_BASELINE", "IMBALANCE_BASELINES", "StepEvent", "StudyOptions", "StudyResult", "arms_of", "run_study"]


def run_study(options: StudyOptions, on_event: EventFn | None = None, progress: ProgressFn | None = None) -> StudyResult:
    """Run (or resume) the study in ``options.out``; returns where the report is and its numbers.

    ``on_event`` hears each step start, finish or be skipped; ``progress`` how far the running
    step has got (:class:`smm4h_cli.progress.ProgressEvent`, the step's name as the stage).
    """
    from smm4h_cli.study.report import write_report
    from smm4h_cli.training.hf import set_threads

    layout = StudyLayout(options.out)
    # before any work: a file where the folder (or a parent) should be, a read-only location
    check_writable(layout.out, folder=True)
    paths = {split: options.data_path(split) for split in ("train", "validation", "test")}
    frames = {split: read_records(p, options.columns, require_label=True) for split, p in paths.items()}
    digests = {split: file_digest(p) for split, p in paths.items()} | {"columns": asdict(options.columns)}
    generator = _check_options(options, layout, frames)
    # for every step that runs torch (embedding, training, prediction), as train does for its own
    set_threads(options.threads)

    # the Ray executor connects and checks the cluster here, before any work
    if options.doses:
        from smm4h_cli.study.dose import run_dose_study

        with open_executor(options) as executor:
            return run_dose_study(options, layout, paths, frames, digests, generator, on_event, progress, executor)
    arms = arms_of(options)
    with open_executor(options) as executor:
        steps = Steps(layout.out, len(options.strategies) + 3 + len(arms), options.force, on_event)
        study = _Study(options, layout, steps, paths, frames, digests, progress, executor)
        synthetic = _generation_steps(study, *generator)
        syn_frames = {s: read_records(p) for s, p in synthetic.items()}
        syn_digests = {s: file_digest(p) for s, p in synthetic.items()}
        _analysis_steps(study, syn_frames, syn_digests)
        _training_steps(study, arms, syn_frames, syn_digests)
    _compare_step(study, arms)

    report_md, report_html, numbers = write_report(layout.out, options, paths, frames, synthetic, arms)
    return StudyResult(layout.out, report_md, report_html, steps.ran, steps.skipped, numbers)
