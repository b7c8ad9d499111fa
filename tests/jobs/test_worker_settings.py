"""The worker's and the incident guard's settings: defaults and one clear line per bad value."""

from __future__ import annotations

import dataclasses

import pytest

from jobs.worker import worker_settings
from statemachine.services.settings import Settings, SettingsError, load_settings


def test_defaults() -> None:
    settings = load_settings({})
    rules = settings.incidents
    assert (rules.window_seconds, rules.failure_ratio, rules.min_mailboxes) == (600.0, 0.5, 5)
    assert (settings.metrics_port, settings.worker_max_jobs, settings.scan_batch_size) == (9464, 40, 500)


def test_values_are_read() -> None:
    settings = load_settings(
        {
            "TOKENWARDEN_INCIDENT_WINDOW_SECONDS": "120",
            "TOKENWARDEN_INCIDENT_FAILURE_RATIO": "0.8",
            "TOKENWARDEN_INCIDENT_MIN_MAILBOXES": "20",
            "TOKENWARDEN_METRICS_PORT": "0",
        }
    )
    assert (settings.incidents.window_seconds, settings.incidents.failure_ratio) == (120.0, 0.8)
    assert (settings.incidents.min_mailboxes, settings.metrics_port) == (20, 0)


def test_bad_values_each_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "TOKENWARDEN_INCIDENT_FAILURE_RATIO": "1.5",
                "TOKENWARDEN_INCIDENT_MIN_MAILBOXES": "0",
                "TOKENWARDEN_METRICS_PORT": "70000",
                "TOKENWARDEN_WORKER_MAX_JOBS": "many",
            }
        )
    names = sorted(line.split(":")[0] for line in str(caught.value).splitlines())
    assert names == [
        "TOKENWARDEN_INCIDENT_FAILURE_RATIO",
        "TOKENWARDEN_INCIDENT_MIN_MAILBOXES",
        "TOKENWARDEN_METRICS_PORT",
        "TOKENWARDEN_WORKER_MAX_JOBS",
    ]


def schedules(settings: Settings) -> dict[str, tuple[object, object]]:
    """Each cron of the worker built from `settings`: its (minute, second) fields."""
    return {job.name: (job.minute, job.second) for job in worker_settings(settings)["cron_jobs"]}


def test_settings_given_in_code_set_every_schedule() -> None:
    """Not only the environment: a Settings built in code moves the scan, the outboxes and the reminders."""
    settings = dataclasses.replace(load_settings({}), scan_interval_seconds=15, outbox_interval_seconds=120)
    every_15_seconds, every_2_minutes = (None, {0, 15, 30, 45}), (set(range(0, 60, 2)), 0)
    assert schedules(settings) == {
        "scan_due": every_15_seconds,
        "check_incidents": every_15_seconds,
        "fold_mailbox_counts": every_15_seconds,
        "prune_outcomes": ({7}, 0),
        "roll_up_outcomes": (None, {5}),
        "purge_expired_web_rows": ({17}, 0),
        "sweep_outbox": every_2_minutes,
        "queue_reminders": every_2_minutes,
        "sweep_webhooks": every_2_minutes,
        "sweep_revocations": every_2_minutes,
    }
    quicker = schedules(dataclasses.replace(settings, outbox_interval_seconds=5))
    sweeps = ("sweep_outbox", "queue_reminders", "sweep_webhooks", "sweep_revocations")
    assert all(quicker[name] == (None, set(range(0, 60, 5))) for name in sweeps)
