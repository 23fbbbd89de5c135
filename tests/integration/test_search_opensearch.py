"""The search sink's randomized crash and redelivery schedules on a real OpenSearch 2.19 node.

The same schedules as the osmem tier (``tests/functional/test_search_scenario``):
crashes before a flush and between bulk chunks, lost responses, partial bulk
failures, restarts, replays from older checkpoints and from the archive, stale
redeliveries after deletes, a concurrent zombie writer, a shard hand-over.
Here they run on the real engine: its ``_seq_no``/``_primary_term``, its 409s,
its refresh (the check goes through ``SearchSink.report``, which refreshes) and
its dynamic mappings. ``REAL_SCHEDULES`` (default 200) sets the count; the
seeds are disjoint from the osmem run's first 400 so the two tiers together
cover more schedules. Split in parts so that xdist can spread them.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from tests.functional.test_search_scenario import run_schedule
from tests.integration.conftest import delete_index

pytestmark = pytest.mark.integration

SCHEDULES = int(os.environ.get("REAL_SCHEDULES", "200"))
FIRST_SEED = 100_001
PARTS = 2  # 100 schedules a part: enough for every kind, the rare archive replay included (5-6 a part)
KINDS = (
    *("ok", "crash-before-flush", "crash-mid", "transient", "replay", "stale", "archive", "zombie"),
    *("outage", "storm", "hung"),  # the fault kinds: outages of minutes, 429 storms, hung calls
)


@pytest.mark.parametrize("part", range(PARTS))
def test_random_schedules_leave_a_real_index_equal_to_the_table(opensearch_url, part):
    seeds = range(FIRST_SEED + part, FIRST_SEED + SCHEDULES, PARTS)
    seen: Counter[str] = Counter()
    for seed in seeds:
        index = f"sched-{os.getpid()}-{seed}"
        try:
            seen.update(run_schedule(seed, opensearch_url, index).counts)
        except AssertionError as exc:
            raise AssertionError(f"schedule seed {seed} (index {index}): {exc}") from exc
        finally:
            delete_index(opensearch_url, index)
    assert len(seeds) >= SCHEDULES // PARTS
    if len(seeds) >= 80:  # the part really went through every kind of delivery and fault
        for what in KINDS:
            assert seen[what] > 0, (what, seen)
