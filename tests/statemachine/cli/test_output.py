"""The one table printer every command uses (mailbox list, history, outbox, incidents)."""

from __future__ import annotations

import pytest

from statemachine.cli.output import print_table


def test_columns_line_up_and_a_missing_value_is_a_dash(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([{"id": 7, "status": "open", "cause": None}, {"id": 12, "status": "closed"}], ("id", "status", "cause"))
    assert capsys.readouterr().out.splitlines() == [
        "id  status  cause",
        "7   open    -",
        "12  closed  -",
    ]


def test_no_rows_prints_the_header_or_the_message_given(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([], ("id", "status"))
    print_table([], ("id", "status"), empty="no incidents")
    assert capsys.readouterr().out.splitlines() == ["id  status", "no incidents"]
