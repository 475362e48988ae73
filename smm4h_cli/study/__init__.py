"""The whole study, end to end (``smm4h study``).

``run.py`` the pipeline, ``options.py`` its options, ``steps.py`` the fingerprinted step runner,
``layout.py`` every path of the study folder, ``report.py`` the report.
"""

from smm4h_cli.study.options import StudyOptions
from smm4h_cli.study.run import StudyResult, run_study
from smm4h_cli.study.steps import StepEvent

__all__ = ["StepEvent", "StudyOptions", "StudyResult", "run_study"]
