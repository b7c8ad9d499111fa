"""The sweep's job id: stable while a row is freshly due, a new one per stale period after."""

from __future__ import annotations

from jobs.sweep_ids import sweep_job_id


def test_the_id_is_the_base_until_a_stale_period_has_passed() -> None:
    assert sweep_job_id("webhook:7:2", 0.0, 25.0) == "webhook:7:2"
    assert sweep_job_id("webhook:7:2", 24.9, 25.0) == "webhook:7:2"
    assert sweep_job_id("webhook:7:2", -3.0, 25.0) == "webhook:7:2"  # clocks: never a negative generation


def test_each_stale_period_gives_a_fresh_id() -> None:
    ids = [sweep_job_id("deliver:7:0", waited, 25.0) for waited in (25.0, 49.0, 50.0)]
    assert ids == ["deliver:7:0:1", "deliver:7:0:1", "deliver:7:0:2"]
