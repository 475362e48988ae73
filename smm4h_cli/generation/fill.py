"""``--fill``: how many calls the next round makes, from how many posts the calls so far kept.

A ``--fill`` run asks for ``n`` posts *kept* (parsed, and not dropped by ``--dedup drop``). Its
first round is the ``ceil(n / per_call)`` calls of a plain run (at most ``max_calls``); each later round makes enough
calls for the posts still missing at the yield measured so far (posts kept per post asked, at
least 1 in 4 so that a bad start does not plan a huge round), never past ``max_calls`` in all.
The calls themselves are those of the one deterministic plan (call ``i`` depends only on the
seed and ``i``), so a resumed run replays the same rounds from its cache and makes only the
calls the first run did not finish: it never over-generates.
"""

from __future__ import annotations

import math

#: The lowest yield a round is planned with.
MIN_YIELD = 0.25


def next_round(n: int, kept: int, made: int, per_call: int, max_calls: int) -> int:
    """Calls of the next round (0: the run is done, or has reached ``max_calls``)."""
    missing = n - kept
    if missing <= 0 or made >= max_calls:
        return 0
    rate = max(MIN_YIELD, kept / (made * per_call)) if made else 1.0
    return min(max_calls - made, math.ceil(missing / (per_call * rate)))
