"""The demo's parts without the whole demo: the data folder, the mail catcher, the timings, the sandbox CLI's errors."""

from __future__ import annotations

import stat
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from devkit.demo.config import TIMINGS, demo_environment, timing_environment, timings_lines
from devkit.demo.datadir import DataDir, DemoError, RunInfo
from devkit.demo.mailcatcher import get_mail, list_mail, mail_catcher
from statemachine.cli.main import main
from statemachine.services.settings import load_settings

BAD_ARGUMENTS = [
    (["sandbox"], "the following arguments are required: ACTION"),
    (["sandbox", "explode"], "invalid choice: 'explode'"),
    (["sandbox", "fault", "abc", "--mode", "revoke"], "a mailbox id is a positive whole number, not 'abc'"),
    (["sandbox", "fault", "3"], "the following arguments are required: --mode"),
    (["sandbox", "fault", "3", "--mode", "melt"], "argument --mode: invalid choice: 'melt'"),
    (["sandbox", "fault", "3", "--mode", "5xx", "--count", "0"], "expected a whole number of at least 1, not '0'"),
    (["sandbox", "outage", "--minutes", "soon"], "expected a number of minutes, not 'soon'"),
    (["sandbox", "outage", "--minutes", "61"], "minutes must be above 0 and at most 60"),
    (["demo", "--port", "99999"], "a TCP port is a whole number from 1 to 65535, not '99999'"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGUMENTS)
def test_argument_errors_are_one_clear_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    if argv[0] == "sandbox":
        assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_without_a_running_demo_the_sandbox_cli_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sandbox", "requests", "--data-dir", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err == (
        f"tokenwarden: error: no demo in {tmp_path / 'none'}: start one with `make demo` (or pass --data-dir)\n"
    )
    DataDir(tmp_path).secrets()
    assert main(["sandbox", "clear", "--data-dir", str(tmp_path)]) == 1
    assert "no demo is running with the data folder" in capsys.readouterr().err


def test_secrets_are_generated_once_private_and_never_in_a_repr(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "demo-data")
    data.create()
    first = data.secrets()
    assert data.secrets() == first
    assert stat.S_IMODE((data.root / "secrets.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(data.root.stat().st_mode) == 0o700
    assert first.client_secret not in repr(first)
    assert first.encryption_key not in repr(first)
    settings = load_settings(first.environment())
    settings.require("encryption_keys", "secret_key")
    assert settings.providers["google"].configured


def test_run_info_exists_only_while_the_demo_runs(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    info = RunInfo(1, "http://127.0.0.1:8000", "http://127.0.0.1:9", None)
    with data.running(info):
        assert data.run_info() == info
    with pytest.raises(DemoError, match="no demo is running"):
        data.run_info()


def test_the_demo_timings_are_valid_settings_and_each_is_labelled() -> None:
    urls = {"DATABASE_URL": "postgresql://localhost/x"}
    settings = load_settings(demo_environment({}, urls, "http://127.0.0.1:9", "http://127.0.0.1:8000"))
    assert settings.policy.cycle_delays_seconds == (15.0, 30.0, 60.0)
    assert settings.policy.disconnect_min_age_seconds == 90.0
    assert settings.providers["google"].token_url == "http://127.0.0.1:9/token"
    assert [round(d * 1440) for d in settings.reminder_days] == [2, 5, 10]
    assert set(timing_environment()) >= {t.variable for t in TIMINGS if t.variable}
    text = "\n".join(timings_lines())
    assert text.startswith("demo timings")
    for timing in TIMINGS:
        assert f"{timing.label} {timing.demo} [{timing.production}]" in " ".join(text.split())


async def test_the_mail_catcher_keeps_each_message_for_dev_mail(tmp_path: Path) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "t@demo.test", "ana@demo.test", "Hello"
    message["Date"] = "Sat, 28 Nov 2026 14:00:05 +0000"
    message.set_content("plain words")
    message.add_alternative("<p>html words</p>", subtype="html")
    async with mail_catcher(tmp_path / "mail") as url:
        host, port = url.removeprefix("smtp://").split(":")
        await aiosmtplib.send(message, hostname=host, port=int(port))
    (stored,) = list_mail(tmp_path / "mail")
    assert (stored.subject, stored.recipient) == ("Hello", "ana@demo.test")
    assert stored.sent_label == "28 Nov 2026, 14:00:05 UTC"
    assert stored.text.strip() == "plain words"
    assert stored.html.strip() == "<p>html words</p>"
    assert get_mail(tmp_path / "mail", stored.key) == stored
    assert get_mail(tmp_path / "mail", "../secrets.json") is None
