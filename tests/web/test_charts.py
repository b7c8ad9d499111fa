"""The operator pages' SVG geometry (web/charts.py): what each box says and where the lines fall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from web import charts

NOW = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
HOUR = datetime(2026, 11, 30, 13, tzinfo=UTC)


def kinds(chart: charts.Chart) -> list[str]:
    return [box.kind for box in chart.boxes]


def test_the_day_is_the_24_hours_ending_with_the_current_one() -> None:
    hours = charts.hour_starts(NOW)
    assert (len(hours), hours[0], hours[-1]) == (24, datetime(2026, 11, 29, 15, tzinfo=UTC), NOW.replace(minute=0))


def test_an_hours_cycles_are_stacked_by_share_under_the_95_percent_line() -> None:
    chart = charts.cycles_chart(NOW, {HOUR: {"success": 90, "transient": 6, "config": 4}}, [])
    success, transient, config = chart.boxes
    assert kinds(chart) == ["success", "transient", "config"]  # permanent: none, so no box
    assert transient.title.endswith("; transient: 6")
    assert success.height == 150 * 0.9
    assert success.y + success.height == charts.TOP + 150  # from the bottom up
    assert config.y == charts.TOP  # the column is full height: shares of the hour's cycles
    assert success.title == "13:00 to 14:00 UTC: 90.0% of 100 cycles succeeded; success: 90"
    assert chart.target_y is not None
    assert success.y > chart.target_y  # 90 % stays under the line: the target was missed that hour
    assert abs(chart.target_y - (charts.TOP + 150 * 0.05)) < 1e-9


def test_incidents_are_shaded_spans_clipped_to_the_day() -> None:
    old = {"provider": "google", "cause": "503s", "opened_at": NOW - timedelta(days=3), "closed_at": HOUR}
    open_now = {"provider": "google", "cause": "invalid_client", "opened_at": NOW - timedelta(minutes=10),
                "closed_at": None}  # fmt: skip
    chart = charts.cycles_chart(NOW, {}, [old, open_now])
    first, second = chart.boxes
    assert kinds(chart) == ["incident", "incident"]
    assert first.x == charts.LEFT  # began before the day
    assert second.title == "google incident (invalid_client) from 14:20 UTC still open"
    assert second.x + second.width < chart.right  # ends now, before the end of the current hour


def test_mailboxes_per_state_are_worked_back_from_the_history() -> None:
    hours = charts.hour_starts(NOW)
    # at 13:xx one mailbox went healthy -> degraded; at 14:xx it was disconnected and a new one was connected
    changes = [(HOUR, "healthy", "degraded", 1), (NOW.replace(minute=0), "degraded", "disconnected", 1)]
    per_hour = charts.states_by_hour({"healthy": 3, "disconnected": 1}, changes, {NOW.replace(minute=0): 1}, hours)
    assert per_hour[-1] == {"healthy": 3, "retrying": 0, "degraded": 0, "disconnected": 1}
    assert per_hour[-2] == {"healthy": 2, "retrying": 0, "degraded": 1, "disconnected": 0}
    assert per_hour[-3] == {"healthy": 3, "retrying": 0, "degraded": 0, "disconnected": 0}
    chart = charts.states_chart(NOW, per_hour)
    assert chart.y_labels[-1] == (charts.TOP, "4")
    assert kinds(chart)[-2:] == ["healthy", "disconnected"]


def test_a_mailbox_timeline_has_a_segment_per_state_and_a_tick_per_history_row() -> None:
    created = NOW - timedelta(hours=4)
    history = [
        {"at": NOW - timedelta(hours=3), "event": "refresh_failed_transient", "from_state": "healthy",
         "to_state": "retrying"},
        {"at": NOW - timedelta(hours=2), "event": "refresh_failed_permanent", "from_state": "retrying",
         "to_state": "disconnected"},
        {"at": NOW, "event": "reconnected", "from_state": "disconnected", "to_state": "healthy"},
    ]  # fmt: skip
    chart = charts.timeline_chart(created, history, "healthy", NOW)
    assert kinds(chart) == ["healthy", "retrying", "disconnected", "healthy", "event", "event", "event"]
    healthy, retrying = chart.boxes[:2]
    assert (healthy.x, retrying.x) == (charts.LEFT, charts.LEFT + (chart.right - charts.LEFT) / 4)
    assert chart.boxes[3].width == 1.0  # reconnected this very moment: still drawn
    assert chart.x_labels[-1] == (chart.right, "now", "end")
