"""Randomized schedules against osmem-server: the index always ends equal to the table.

Hundreds of schedules (see ``test_search_scenario`` for what one schedule does)
on one osmem clone, a fresh index each. ``SEARCH_SCHEDULES`` overrides the
count, ``SEARCH_SEED`` the first seed (a failure names its seed: rerun it with
``SEARCH_SEED=<seed> SEARCH_SCHEDULES=1``).
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from tests.functional.test_search_scenario import DELIVERIES, TRANSPORT_FAULTS, run_schedule

SCHEDULES = int(os.environ.get("SEARCH_SCHEDULES", "1000"))
FIRST_SEED = int(os.environ.get("SEARCH_SEED", "1"))
CHUNKS = 8  # spread over the test workers


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_schedules_leave_the_index_equal_to_the_table(osmem_url, chunk):
    seen: Counter[str] = Counter()
    seeds = range(FIRST_SEED + chunk, FIRST_SEED + SCHEDULES, CHUNKS)
    for seed in seeds:
        try:
            delivery = run_schedule(seed, osmem_url, f"sched-{seed}")
        except AssertionError as exc:
            raise AssertionError(f"schedule seed {seed}: {exc}") from exc
        seen.update(delivery.counts)
    print(f"search schedules {len(seeds)} (chunk {chunk}): {dict(sorted(seen.items()))}")
    # The run really went through every kind of delivery.
    if len(seeds) >= 100:
        for what in (*DELIVERIES, *TRANSPORT_FAULTS):
            assert seen[what] > 0, (what, seen)
