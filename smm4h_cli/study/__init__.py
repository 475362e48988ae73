"""The whole study, end to end (``smm4h study``): see :mod:`smm4h_cli.study.run`."""

from smm4h_cli.study.run import StepEvent, StudyOptions, StudyResult, run_study

__all__ = ["StepEvent", "StudyOptions", "StudyResult", "run_study"]
