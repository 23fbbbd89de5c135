"""Shard lineage end to end on a FAKE rollover (moto's stream never closes a shard by itself; see
fake_rollover_moto.py): KCL's shard end, the SHARD_END checkpoint, and each child processed only
after its parent, through the real launcher, KCL, adapter and ``worker kcl`` children."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kcl.rig import Rig
from worker.leases import read_leases
from worker.runtime import local_kcl


@pytest.fixture
def rollover_rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, rollover_every=100)
    try:
        yield r
    finally:
        r.close()


def test_shard_end_checkpoints_and_children_after_parents(rollover_rig: Rig) -> None:
    rig = rollover_rig
    rig.write(250)
    content = rig.stream()
    sizes = [len(s) for s in content.sequences.values()]
    assert sizes[:2] == [100, 100] and 0 < sizes[2] < 100, sizes  # two closed shards, one open
    proc = rig.start()
    checkpoints = rig.wait_checkpointed(proc)
    leases = {lease.shard: lease for lease in read_leases(rig.ddb, rig.cfg.kcl.application_name)}
    # Not asserted: the exit code. With consumers of ended shards in its map, KCL 3.1.3's graceful
    # shutdown may not report clean within shutdownGraceMillis (the SIGTERM scenarios assert it).
    local_kcl.stop_daemon(proc, grace=60)
    rig.assert_exact()

    first, second, third = content.sequences
    assert checkpoints == {first: "SHARD_END", second: "SHARD_END", third: str(content.sequences[third][-1])}
    # KCL deletes a parent's lease once its child reached SHARD_END; the child leases name their parent.
    assert leases[third].parents == (second,)
    assert second not in leases or leases[second].parents == (first,)

    # Parent before child: each child's shard process started after its parent's last batch.
    files = {m["shard"]: m for m in rig.metric_files()}
    assert set(files) == {first, second, third}
    assert files[second]["started"] >= files[first]["last_batch_at"]
    assert files[third]["started"] >= files[second]["last_batch_at"]
