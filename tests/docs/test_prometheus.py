"""docs/prometheus/: the alert rules pass their `promtool test rules` unit tests, and every rule has some.

Debian's `prometheus` package provides promtool; `.ci/run` installs it, so in CI (CI=true) a missing
promtool fails the test instead of skipping it. That the metrics the rules and the Grafana dashboard
name are really exported is checked against live processes in tests/test_procfile.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.web.support import ROOT

PROMETHEUS = ROOT / "docs" / "prometheus"
RULES, RULE_TESTS = PROMETHEUS / "alerts.yml", PROMETHEUS / "alerts_test.yml"
DASHBOARD = PROMETHEUS / "grafana-dashboard.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but promtool is missing: .ci/run installs Debian's prometheus package")
    pytest.skip("alert rule tests skipped: no promtool on PATH (install it: apt-get install prometheus)")


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    run = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], cwd=PROMETHEUS, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.MULTILINE))
    tested = RULE_TESTS.read_text()
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", tested)
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    assert "TokenwardenWebhookEndpointDisabled" in alerts  # the rules, webhooks included, are all there
    assert len(alerts) == 7
    assert alerts == firing == quiet


def test_the_dashboard_queries_only_tokenwarden_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    assert all("tokenwarden_" in expr for expr in exprs)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
