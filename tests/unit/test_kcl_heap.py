"""The shard process's garbage collector settings (``worker.sources.kcl.settle_heap``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from worker.sources.kcl import GC_THRESHOLDS, settle_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_the_start_up_heap_is_frozen_and_young_generations_are_collected_less_often() -> None:
    survivor = Node()
    settle_heap((12_345, 7, 3))
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (12_345, 7, 3)
    assert survivor.other is None  # what existed at start-up is untouched


@pytest.mark.usefixtures("restore_gc")
def test_cyclic_garbage_made_after_start_up_is_still_collected() -> None:
    settle_heap()
    assert gc.get_threshold() == GC_THRESHOLDS
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
