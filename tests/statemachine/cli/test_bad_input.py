"""Every command with empty, huge, non-UTF-8, negative and out-of-range values: one clear line, never a traceback.

`main()` runs in-process (a traceback would fail the test as an exception); an argv from a shell carries
non-UTF-8 bytes as surrogate escapes, which is how they are written here. NUL cannot be in an argv; the
import file and the web forms cover it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from statemachine.cli.main import main
from tests.database import TEST_KEY
from tests.statemachine.cli.conftest import Cli

HUGE = "x" * 100_000
NOT_UTF8 = b"caf\xe9@example.test".decode("utf-8", "surrogateescape")
ADD = ["mailbox", "add", "--user", "owner@example.test", "--provider", "google"]
BAD_IDS = ["", "0", "-1", "abc", "1.5", str(2**70), "١٢", HUGE]


def bad_id_commands() -> list[list[str]]:
    commands = []
    for bad in BAD_IDS:
        commands += [["refresh", bad], ["history", bad], ["mailbox", "show", bad], ["mailbox", "retry-now", bad]]
        commands += [["mailbox", "disconnect", bad], ["outbox", "--mailbox", bad], ["mailbox", "list", "--limit", bad]]
    return commands


VALUE_COMMANDS = [
    ["user", "add", ""],
    ["user", "add", HUGE],
    ["user", "add", NOT_UTF8],
    ["user", "add", "new@example.test", "--name", NOT_UTF8],
    ["user", "add", "big@example.test", "--name", HUGE],
    [*ADD, "--address", "", "--refresh-token", "1//t"],
    [*ADD, "--address", HUGE + "@gmail.test", "--refresh-token", "1//t"],
    [*ADD, "--address", NOT_UTF8, "--refresh-token", "1//t"],
    [*ADD, "--address", "a@gmail.test", "--refresh-token", ""],
    [*ADD, "--address", "a@gmail.test", "--refresh-token", HUGE],
    [*ADD, "--address", "a@gmail.test", "--refresh-token", "1//" + NOT_UTF8],
    # (a negative expires_in is a token of unknown lifetime, not bad input: core/access_tokens.py)
    [*ADD, "--address", "a@gmail.test", "--refresh-token", "1//t", "--access-token", "a", "--expires-in", "1e3"],
    [*ADD, "--address", "a@gmail.test", "--refresh-token", "1//t", "--access-token", "a", "--expires-in", str(2**70)],
    [*ADD, "--address", "a@gmail.test", "--refresh-token", "1//t", "--expires-in", "abc"],
    ["mailbox", "list", "--state", "bogus"],
    ["mailbox", "import", "/nonexistent/file.jsonl"],
    ["mailbox", "import", "/"],
    ["outbox", "retry", "--since", ""],
    ["outbox", "retry", "--since", "2026-13-45"],
    ["outbox", "retry", "--since", HUGE],
    ["migrate", "--downgrade", "no-such-revision"],
    ["login-link", "nobody@example.test"],
    ["login-link", NOT_UTF8],
    ["login-link", "owner@example.test", "--minutes", "0"],
    ["login-link", "owner@example.test", "--minutes", str(2**70)],
    ["refresh", "1", "--bogus-flag"],
]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        status = int(exit_.code or 0)
    return status, capsys.readouterr().err


@pytest.fixture
def sweep_env(cli: Cli, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENWARDEN_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("TOKENWARDEN_ENCRYPTION_KEYS", TEST_KEY)


@pytest.mark.parametrize("argv", bad_id_commands() + VALUE_COMMANDS, ids=lambda argv: " ".join(argv)[:60])
def test_bad_values_end_in_one_clear_line(sweep_env: None, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    status, err = run(capsys, argv)
    assert status in (1, 2), err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("tokenwarden"), err
    assert ": error: " in last, err
    assert "Traceback" not in err
    assert len(last) < 400  # a huge value is not echoed back whole
    if status == 1:
        assert err.count("\n") == 1, err


def test_an_import_of_garbage_keeps_every_good_line(sweep_env: None, cli: Cli, tmp_path: Path) -> None:
    good = b'{"user": "u@example.test", "provider": "google", "address": "ok%d@gmail.test", "refresh_token": "1//t%d"}'
    garbage = [b"", b"\x00", b"\xff\xfe", b"{}", b"[]", b"null", b'"x"', b"1e999", b'{"user": 5}', b"{" * 50_000,
               b'{"user": "u@example.test", "provider": "google", "address": "a@gmail.test", "refresh_token": 5}',
               b'{"user": "u@example.test", "provider": "google", "address": "a@gmail.test", "refresh_token": "1//t",'
               b' "expires_in": 1180591620717411303424, "access_token": "a"}', b"x" * 1_000_000]  # fmt: skip
    lines = [line for i, bad in enumerate(garbage) for line in (good % (i, i), bad)]
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    problems = cli("mailbox", "import", str(path), code=1)
    assert len(problems.splitlines()) == len(garbage) - 1  # the empty line is skipped silently
    assert all(len(line) < 200 for line in problems.splitlines())
    assert len(cli.json("mailbox", "list")) == len(garbage)
