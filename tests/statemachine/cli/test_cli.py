"""The operators' CLI end to end: real PostgreSQL, and the sandbox token endpoint over real HTTP (not respx).

Most tests call `main()` in-process (fast, output via capsys); a few run the installed console
script in a subprocess to prove that errors end in one line, without a traceback.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from devkit.serving import RunningServer
from statemachine.cli import commands
from tests.statemachine.cli.conftest import ACCOUNT, Cli

CASES = json.loads((Path(__file__).resolve().parents[4] / "shared" / "oauth-error-cases.json").read_text())
HTTP_CASES = [c for c in CASES if c["provider"] in ("google", "generic") and not c.get("transport")]
MICROSOFT_CASES = [c for c in CASES if c["provider"] == "microsoft" and not c.get("transport")]


def connect(cli: Cli, control: httpx.Client, address: str = "ana@gmail.test") -> tuple[int, str]:
    token = control.post("/_sandbox/tokens", json={"sub": ACCOUNT["sub"]}).json()["refresh_token"]
    out = cli("mailbox", "add", "--user", "owner@example.test", "--provider", "google", "--address", address,
              "--refresh-token", token)  # fmt: skip
    return int(out), token


def fault(control: httpx.Client, token: str, **spec: Any) -> None:
    response = control.post("/_sandbox/faults", json={"refresh_token": token, **spec})
    assert response.status_code == 201, response.text


def test_connect_refresh_and_inspect(cli: Cli, control: httpx.Client) -> None:
    mailbox_id, _ = connect(cli, control)
    assert "refresh_succeeded (healthy)" in cli("refresh", str(mailbox_id))
    shown = cli.json("mailbox", "show", str(mailbox_id))
    fields = ("id", "address", "provider", "state", "is_active", "token_refresh_attempt_count")
    assert {k: shown[k] for k in fields} == {
        "id": mailbox_id, "address": "ana@gmail.test", "provider": "google", "state": "healthy", "is_active": True,
        "token_refresh_attempt_count": 0,
    }  # fmt: skip
    assert shown["last_refreshed_at"] is not None
    assert {"token_refresh_failed_at", "token_refresh_error", "next_refresh_at"} <= shown.keys()
    assert cli.json("mailbox", "list") == [shown]
    assert cli.json("mailbox", "list", "--state", "disconnected") == []
    assert "SECRET" not in json.dumps(shown)


def test_revoked_grant_is_confirmed_then_disconnects_with_one_email(cli: Cli, control: httpx.Client) -> None:
    mailbox_id, token = connect(cli, control)
    fault(control, token, mode="revoke")
    first = cli.json("refresh", str(mailbox_id))
    second = cli.json("refresh", str(mailbox_id))
    assert (first["to_state"], second["to_state"]) == ("retrying", "disconnected")
    assert second["emails_queued"] == ["token_refresh_permanent_failure"]
    history = cli.json("history", str(mailbox_id))
    assert [(h["event"], h["from_state"], h["to_state"], h["actor"]) for h in history] == [
        ("refresh_failed_permanent", "healthy", "retrying", "cli"),
        ("refresh_failed_permanent", "retrying", "disconnected", "cli"),
    ]
    assert all(h["reason"] and h["at"] for h in history)
    (mail,) = cli.json("outbox")
    assert (mail["kind"], mail["mailbox_id"], mail["recipient"], mail["status"]) == (
        "token_refresh_permanent_failure", mailbox_id, "owner@example.test", "pending",
    )  # fmt: skip
    assert control.get("/_sandbox/requests").json()["by_refresh_token"][token] == 2  # one request per cycle


def test_server_errors_climb_the_ladder(cli: Cli, control: httpx.Client) -> None:
    mailbox_id, token = connect(cli, control)
    fault(control, token, mode="http_5xx", status=502)
    states = [cli.json("refresh", str(mailbox_id))["to_state"] for _ in range(3)]
    assert states == ["retrying", "degraded", "disconnected"]
    assert [m["kind"] for m in cli.json("outbox")] == ["token_refresh_retry", "token_refresh_final_failure"]
    assert control.get("/_sandbox/requests").json()["by_refresh_token"][token] == 9  # 3 tries per cycle
    assert cli.json("mailbox", "show", str(mailbox_id))["is_active"] is False


def test_wrong_client_secret_never_escalates_nor_emails(cli: Cli, control: httpx.Client, monkeypatch) -> None:
    mailbox_id, _ = connect(cli, control)
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", "rotated-away")
    states = [cli.json("refresh", str(mailbox_id))["to_state"] for _ in range(4)]
    assert states == ["retrying"] * 4
    assert cli.json("outbox") == []
    assert {h["error_code"] for h in cli.json("history", str(mailbox_id))} == {"invalid_client"}


def test_unreachable_token_endpoint_is_transient(cli: Cli, control: httpx.Client, monkeypatch) -> None:
    mailbox_id, _ = connect(cli, control)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("GOOGLE_TOKEN_URL", f"http://127.0.0.1:{closed_port}/token")
    result = cli.json("refresh", str(mailbox_id))
    assert (result["to_state"], result["error"].split(":")[0]) == ("retrying", "connect_error")


@pytest.fixture
def microsoft(cli: Cli, microsoft_sandbox: RunningServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    """The sandbox Microsoft, with one account, as the CLI's Microsoft token endpoint."""
    monkeypatch.setenv("MICROSOFT_TOKEN_URL", f"{microsoft_sandbox.url}/common/oauth2/v2.0/token")
    with httpx.Client(base_url=microsoft_sandbox.url, timeout=5) as client:
        client.post("/_sandbox/accounts", json={"email": "ana@contoso.test", "sub": ACCOUNT["sub"]}).raise_for_status()
        yield client


def connect_microsoft(cli: Cli, control: httpx.Client) -> tuple[int, str]:
    token = control.post("/_sandbox/tokens", json={"sub": ACCOUNT["sub"]}).json()["refresh_token"]
    out = cli("mailbox", "add", "--user", "owner@example.test", "--provider", "microsoft", "--address",
              "ana@contoso.test", "--refresh-token", token)  # fmt: skip
    return int(out), token


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c["id"] for c in HTTP_CASES])
def test_any_documented_response_lands_where_design_says(cli: Cli, control: httpx.Client, case: dict) -> None:
    mailbox_id, token = connect(cli, control)
    _lands_where_design_says(cli, control, case, mailbox_id, token)


@pytest.mark.parametrize("case", MICROSOFT_CASES, ids=[c["id"] for c in MICROSOFT_CASES])
def test_any_documented_microsoft_response_lands_where_design_says(
    cli: Cli, microsoft: httpx.Client, case: dict
) -> None:
    mailbox_id, token = connect_microsoft(cli, microsoft)
    _lands_where_design_says(cli, microsoft, case, mailbox_id, token)


def _lands_where_design_says(cli: Cli, control: httpx.Client, case: dict, mailbox_id: int, token: str) -> None:
    fault(control, token, mode="raw", status=case["status"], headers=case["headers"], body=case["body"])
    first = cli.json("refresh", str(mailbox_id))
    second = cli.json("refresh", str(mailbox_id))
    expected = {"transient": ("retrying", "degraded"), "permanent": ("retrying", "disconnected"),
                "config": ("retrying", "retrying")}[case["expected"]]  # fmt: skip
    assert (first["to_state"], second["to_state"]) == expected
    assert len(cli.json("history", str(mailbox_id))) == 2
    kinds = [m["kind"] for m in cli.json("outbox")]
    assert kinds == {"transient": ["token_refresh_retry"], "permanent": ["token_refresh_permanent_failure"],
                     "config": []}[case["expected"]]  # fmt: skip


def import_file(cli: Cli, tmp_path: Path, lines: list[bytes], code: int = 0) -> str:
    """`mailbox import` of a file with these lines; returns what it printed (stderr when it failed)."""
    path = tmp_path / "mailboxes.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return cli("mailbox", "import", str(path), code=code)


def test_bulk_import_reports_bad_lines_and_keeps_the_rest(cli: Cli, tmp_path: Path) -> None:
    good = [{"user": f"u{i}@example.test", "provider": "google", "address": f"m{i}@gmail.test",
             "refresh_token": f"1//imported-{i}"} for i in range(1500)]  # fmt: skip
    lines = [json.dumps(line) for line in good]
    lines[10] = "{not json"
    lines[20] = json.dumps({**good[20], "provider": "yahoo"})
    lines[30] = json.dumps({k: v for k, v in good[30].items() if k != "refresh_token"})
    lines.append(json.dumps(good[0]))  # a duplicate of line 1
    problems = import_file(cli, tmp_path, [line.encode() for line in lines], code=1)
    assert problems.splitlines() == [
        "line 11: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "line 21: provider must be one of: google, microsoft",
        "line 31: missing key(s): refresh_token",
        "line 1501: m0@gmail.test is already connected for u0@example.test",
    ]
    assert len(cli.json("mailbox", "list", "--limit", "5000")) == 1497
    assert "imported-" not in problems


def test_import_reports_unreadable_lines_by_number_and_keeps_every_good_line(cli: Cli, tmp_path: Path) -> None:
    good = [json.dumps({"user": "u@example.test", "provider": "google", "address": f"m{i}@gmail.test",
                        "refresh_token": f"1//imported-{i}"}).encode() for i in range(6)]  # fmt: skip
    nul = json.dumps({"user": "u@example.test", "provider": "google", "address": "n\u0000@gmail.test",
                      "refresh_token": "1//imported-nul"}).encode()  # fmt: skip
    lines = [good[0], b"[" * 100000, good[1], b"\xff", good[2], nul, good[3], b'{"user": "\xc3"}', good[4]]
    problems = import_file(cli, tmp_path, lines, code=1)
    assert problems.splitlines() == [
        "line 2: not valid JSON (nested too deeply)",
        "line 4: not valid UTF-8 (byte 0xff at column 1)",
        "line 6: address must be an email address",
        "line 8: not valid UTF-8 (byte 0xc3 at column 11)",
    ]
    assert sorted(m["address"] for m in cli.json("mailbox", "list")) == [f"m{i}@gmail.test" for i in range(5)]


def test_an_imported_access_token_about_to_expire_is_refreshed_at_once(cli: Cli, tmp_path: Path) -> None:
    line = {"user": "u@example.test", "provider": "google", "address": "soon@gmail.test",
            "refresh_token": "1//imported", "access_token": "ya29.imported", "expires_in": 30}  # fmt: skip
    import_file(cli, tmp_path, [json.dumps(line).encode()])
    (listed,) = cli.json("mailbox", "list")
    assert datetime.fromisoformat(listed["next_refresh_at"]) <= datetime.now(UTC)  # due now, not in 1-2 minutes


async def _execute(url: str, statement: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def test_outbox_retry_requeues_failed_emails_since_a_time(cli: Cli, control: httpx.Client, cli_env) -> None:
    for address in ("ana@gmail.test", "ana.work@gmail.test"):
        mailbox_id, token = connect(cli, control, address)
        fault(control, token, mode="revoke")
        cli("refresh", str(mailbox_id))
        cli("refresh", str(mailbox_id))  # disconnected: one email each
    failed = "update notifications set status = 'failed', attempts = 40, last_error = 'SMTP 535 auth failed'"
    asyncio.run(_execute(cli_env["DATABASE_URL"], failed))
    asyncio.run(_execute(cli_env["DATABASE_URL"], f"{failed}, created_at = '2026-01-01' where id = 1"))
    assert "re-queued 1 failed email(s)" in cli("outbox", "retry", "--since", "2026-06-01")
    assert sorted(m["status"] for m in cli.json("outbox")) == ["failed", "pending"]
    assert "re-queued 1 failed email(s)" in cli("outbox", "retry")
    assert [m["status"] for m in cli.json("outbox")] == ["pending", "pending"]
    with pytest.raises(SystemExit):
        cli("outbox", "retry", "--since", "yesterday")
    assert "expected a time like 2026-11-30T10:00, not 'yesterday'" in cli.capsys.readouterr().err


def test_rotate_keys_moves_every_token_to_the_new_key(cli: Cli, control: httpx.Client, cli_env, monkeypatch) -> None:
    ids = [connect(cli, control, address)[0] for address in ("ana@gmail.test", "ana.work@gmail.test")]
    old, new = cli_env["TOKENWARDEN_ENCRYPTION_KEYS"], Fernet.generate_key().decode()
    monkeypatch.setenv("TOKENWARDEN_ENCRYPTION_KEYS", f"{new},{old}")
    monkeypatch.setattr(commands, "ROTATE_BATCH", 1)  # one transaction per row: the batches must chain
    assert "tokens of 2 mailbox(es)" in cli("rotate-keys")
    monkeypatch.setenv("TOKENWARDEN_ENCRYPTION_KEYS", new)
    assert [cli.json("refresh", str(i))["status"] for i in ids] == ["refreshed", "refreshed"]
    monkeypatch.setenv("TOKENWARDEN_ENCRYPTION_KEYS", old)
    assert cli.json("refresh", str(ids[1]))["error"].startswith("token_undecryptable")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["refresh", "424242"], "no mailbox with id 424242"),
        (["history", "424242"], "no mailbox with id 424242"),
        (
            [
                "mailbox",
                "add",
                "--user",
                "owner@example.test",
                "--provider",
                "yahoo",
                "--address",
                "a@b.test",
                "--refresh-token",
                "x",
            ],
            "provider must be one of: google",
        ),
        (
            [
                "mailbox",
                "add",
                "--user",
                "nobody@example.test",
                "--provider",
                "google",
                "--address",
                "a@b.test",
                "--refresh-token",
                "x",
            ],
            "no user 'nobody@example.test'",
        ),
        (["user", "add", "owner@example.test"], "exists already"),
        (["mailbox", "disconnect", "424242"], "no mailbox with id 424242"),
    ],
)
def test_bad_input_is_one_clear_line(cli: Cli, args: list[str], message: str) -> None:
    error = cli(*args, code=1)
    assert error.count("\n") == 1
    assert message in error


def with_url_part(url: str, **parts: Any) -> str:
    return make_url(url).set(**parts).render_as_string(hide_password=False)


def with_query(url: str, **query: str) -> str:
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda url: url.replace("://", "://app:p@ss:SECRETPW@", 1), "password with @, : or / in it"),
        (lambda url: "postgresql://app:pw@127.0.0.1:notaport/x", "the port is not a number"),
        (lambda url: with_query(url, sslmode="sometimes"), "sslmode must be one of: disable, allow, prefer, require"),
        (lambda url: with_url_part(url, database="nosuchdb"), 'database "nosuchdb" does not exist'),
        (lambda url: with_url_part(url, username="nosuchrole"), 'role "nosuchrole" does not exist'),
    ],
)
def test_bad_database_url_is_one_clear_line_without_the_password(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, change, message
) -> None:
    monkeypatch.setenv("DATABASE_URL", change(cli_env["DATABASE_URL"]))
    error = Cli(capsys)("mailbox", "list", code=1)
    assert error.count("\n") == 1
    assert message in error
    assert "SECRETPW" not in error


def test_libpq_sslmode_is_understood(cli: Cli, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in ("disable", "require"):  # asyncpg needs no TLS on the test server's unix socket
        monkeypatch.setenv("DATABASE_URL", with_query(cli_env["DATABASE_URL"], sslmode=mode))
        assert cli.json("mailbox", "list") == []


def test_an_id_beyond_bigint_is_a_usage_error(cli: Cli) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("mailbox", "show", str(2**70))
    assert exit_.value.code == 2
    assert (
        f"a mailbox id is a positive whole number, not '{2**70}' (at most 9223372036854775807)"
        in cli.capsys.readouterr().err
    )


def run_console(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("tokenwarden")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_console_script_errors_have_no_traceback(cli_env: dict[str, str]) -> None:
    unknown = run_console(cli_env, "mailbox", "show", "424242")
    assert (unknown.returncode, unknown.stderr) == (1, "tokenwarden: error: no mailbox with id 424242\n")
    bad_id = run_console(cli_env, "refresh", "abc")
    assert bad_id.returncode == 2
    assert "a mailbox id is a positive whole number" in bad_id.stderr
    no_db = run_console({"PATH": cli_env.get("PATH", "/usr/bin")}, "mailbox", "list")
    assert (no_db.returncode, no_db.stderr) == (1, "tokenwarden: error: DATABASE_URL is not set\n")
    for result in (unknown, bad_id, no_db):
        assert "Traceback" not in result.stderr


def test_unmigrated_database_says_to_migrate(make_database, cli_env: dict[str, str]) -> None:
    result = run_console({**cli_env, "DATABASE_URL": make_database("empty")}, "mailbox", "list")
    assert (result.returncode, result.stderr) == (
        1,
        "tokenwarden: error: the database schema is missing or old: run `tokenwarden migrate`\n",
    )


def test_an_imported_microsoft_mailbox_refreshes_and_keeps_the_newest_token(
    cli: Cli, microsoft: httpx.Client, tmp_path: Path
) -> None:
    token = microsoft.post("/_sandbox/tokens", json={"sub": ACCOUNT["sub"]}).json()["refresh_token"]
    line = {
        "user": "owner@example.test",
        "provider": "microsoft",
        "address": "ana@contoso.test",
        "refresh_token": token,
    }
    path = tmp_path / "mailboxes.jsonl"
    path.write_text(json.dumps(line) + "\n")
    cli("mailbox", "import", str(path))
    [listed] = cli.json("mailbox", "list")
    assert (listed["provider"], listed["address"]) == ("microsoft", "ana@contoso.test")
    for _ in range(3):
        assert cli.json("refresh", str(listed["id"]))["to_state"] == "healthy"
    sent = microsoft.get("/_sandbox/requests").json()["by_refresh_token"]
    assert len(sent) == 3  # each refresh sent the token the one before it stored
    assert next(iter(sent)) == token


def test_adding_a_removed_mailbox_again_says_it_was_removed_and_how_to_bring_it_back(
    cli: Cli, control: httpx.Client, cli_env: dict[str, str], tmp_path: Path
) -> None:
    mailbox_id, _ = connect(cli, control)
    removed = f"update mailboxes set removed_at = '2026-11-02' where id = {mailbox_id}"
    asyncio.run(_execute(cli_env["DATABASE_URL"], removed))
    args = ("--user", "owner@example.test", "--provider", "google", "--address", "ana@gmail.test")
    err = cli("mailbox", "add", *args, "--refresh-token", "1//again", code=1)
    why = "ana@gmail.test was removed for owner@example.test on 2026-11-02; connect it again from the dashboard"
    assert why in err
    assert "1//again" not in err
    line = {"user": "owner@example.test", "provider": "google", "address": "ana@gmail.test", "refresh_token": "1//x"}
    assert why in import_file(cli, tmp_path, [json.dumps(line).encode()], code=1)
