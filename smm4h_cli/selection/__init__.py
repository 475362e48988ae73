"""Which synthetic posts to keep: deduplication, classifier confidence, diverse or random subsets.

``select(synthetic, train, options, run_dir=..., progress=...)`` applies the rules in the fixed
order dedup -> confidence -> diverse | random and returns a ``SelectionResult``; the rules
themselves are pure functions in ``rules.py``.
"""

from smm4h_cli.selection.pipeline import RULE_ORDER, SelectionResult, SelectOptions, check_request, select

__all__ = ["RULE_ORDER", "SelectOptions", "SelectionResult", "check_request", "select"]
