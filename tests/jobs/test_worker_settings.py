"""The worker's and the incident guard's settings: defaults and one clear line per bad value."""

from __future__ import annotations

import pytest

from statemachine.services.settings import SettingsError, load_settings


def test_defaults() -> None:
    settings = load_settings({})
    rules = settings.incidents
    assert (rules.window_seconds, rules.failure_ratio, rules.min_mailboxes) == (600.0, 0.5, 5)
    assert (settings.metrics_port, settings.worker_max_jobs, settings.scan_batch_size) == (9464, 10, 500)


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
