"""One refresh cycle through a real PostgreSQL, with respx only at the provider's HTTP edge."""

from __future__ import annotations

import contextlib
import logging
import uuid

import asyncpg
import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from statemachine.core.states import Event
from statemachine.providers.oauth import TokenGrant
from statemachine.services.cycle import run_cycle
from statemachine.services.operations import operator_action
from statemachine.services.reconnect import complete_reconnect
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.store import cycle_rows, queries
from statemachine.store.models import Mailbox
from statemachine.store.repository import UnknownMailboxError
from tests.database import CLIENT_SECRET
from tests.factories import add_mailbox

REFRESH_TOKEN = "1//refresh-token-SECRET-0001"
ACCESS = {"access_token": "ya29.access-SECRET", "expires_in": 3599, "token_type": "Bearer"}
INVALID_GRANT = httpx.Response(
    400, json={"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
)


async def cycle(runtime: Runtime, mailbox_id: int):
    return await run_cycle(runtime.cycle_deps(), mailbox_id, actor="test")


async def history_of(runtime: Runtime, mailbox_id: int) -> list[dict]:
    async with runtime.sessionmaker() as session:
        return await queries.history(session, mailbox_id)


async def outbox_kinds(runtime: Runtime, mailbox_id: int) -> list[str]:
    async with runtime.sessionmaker() as session:
        return [row["kind"] for row in await queries.outbox(session, mailbox_id)]


async def outcomes_of(runtime: Runtime, mailbox_id: int) -> list[str]:
    async with runtime.sessionmaker() as session:
        statement = text("select outcome from refresh_outcomes where mailbox_id = :id order by id")
        return list((await session.scalars(statement, {"id": mailbox_id})).all())


async def row(runtime: Runtime, mailbox_id: int) -> Mailbox:
    async with runtime.sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox


async def test_transient_failure_is_retried_three_times_within_a_cycle(runtime, provider) -> None:
    provider.side_effect = httpx.ConnectTimeout
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    result = await cycle(runtime, mailbox_id)
    assert provider.call_count == 3
    assert result.status == "failed"
    assert result.outcome.to_state == "retrying"


async def test_invalid_grant_is_tried_once(runtime, provider) -> None:
    provider.return_value = INVALID_GRANT
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    await cycle(runtime, mailbox_id)
    assert provider.call_count == 1


async def test_mailbox_inactive_after_the_third_failed_cycle_with_emails_at_each_rung(runtime, provider) -> None:
    provider.return_value = httpx.Response(503, text="<html>unavailable</html>")
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    seen = []
    for _ in range(3):
        result = await cycle(runtime, mailbox_id)
        seen.append((result.outcome.to_state, (await row(runtime, mailbox_id)).is_active, result.outcome.emails))
    assert seen == [
        ("retrying", True, ()),
        ("degraded", True, ("token_refresh_retry",)),
        ("disconnected", False, ("token_refresh_final_failure",)),
    ]
    mailbox = await row(runtime, mailbox_id)
    assert mailbox.token_refresh_attempt_count == 3
    assert mailbox.token_refresh_failed_at is not None
    assert mailbox.token_refresh_error.startswith("http_503")
    assert mailbox.next_refresh_at is not None  # transient disconnects are re-probed slowly


async def test_permanent_failure_confirmed_then_reconnect_email_naming_mailbox_and_reason(runtime, provider) -> None:
    provider.return_value = INVALID_GRANT
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    first = await cycle(runtime, mailbox_id)
    second = await cycle(runtime, mailbox_id)
    assert (first.outcome.to_state, second.outcome.to_state) == ("retrying", "disconnected")
    async with runtime.sessionmaker() as session:
        (mail,) = (
            await session.execute(text("select subject, body_text, body_html, recipient from notifications"))
        ).all()
    assert "ana@gmail.test" in mail.subject
    assert "revoked" in mail.body_text.lower()
    assert f"https://tokenwarden.test/mailboxes/{mailbox_id}/reconnect" in mail.body_html
    assert mail.recipient == "owner@example.test"
    assert (await row(runtime, mailbox_id)).next_refresh_at is None


async def test_success_stores_encrypted_tokens_and_schedules_before_expiry(runtime, provider) -> None:
    provider.return_value = httpx.Response(200, json=ACCESS)
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    result = await cycle(runtime, mailbox_id)
    assert result.status == "refreshed"
    mailbox = await row(runtime, mailbox_id)
    assert (
        runtime.cipher.decrypt(mailbox.access_token_ciphertext, mailbox_id=mailbox_id, role="access")
        == ACCESS["access_token"]
    )
    assert mailbox.last_refreshed_at is not None
    assert 0 < (mailbox.access_token_expires_at - mailbox.next_refresh_at).total_seconds() <= 3599 - 60
    assert await history_of(runtime, mailbox_id) == []  # routine refreshes are not history
    assert await outcomes_of(runtime, mailbox_id) == ["success"]  # but the incident guard counts them
    assert (mailbox.revision, mailbox.lease_owner, mailbox.lease_until) == (1, None, None)
    sent = provider.calls.last.request.content.decode()
    assert "grant_type=refresh_token" in sent


async def test_rotated_refresh_token_is_stored_and_a_missing_one_keeps_the_old(runtime, provider) -> None:
    provider.side_effect = [
        httpx.Response(200, json={**ACCESS, "refresh_token": "1//rotated-SECRET-0002"}),
        httpx.Response(200, json=ACCESS),
        httpx.Response(200, json=ACCESS),
    ]
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    for _ in range(3):
        await cycle(runtime, mailbox_id)
    bodies = [call.request.content.decode() for call in provider.calls]
    assert "refresh_token=1%2F%2Frefresh-token-SECRET-0001" in bodies[0]
    assert all("refresh_token=1%2F%2Frotated-SECRET-0002" in body for body in bodies[1:])


async def test_no_plaintext_token_or_secret_in_any_table_or_log(runtime, provider, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    provider.side_effect = [
        httpx.Response(200, json={**ACCESS, "refresh_token": "1//rotated-SECRET-0002"}),
        httpx.Response(400, json={"error": "invalid_grant", "error_description": "echo 1//rotated-SECRET-0002"}),
        httpx.Response(400, json={"error": "invalid_grant"}),
    ]
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    for _ in range(3):
        await cycle(runtime, mailbox_id)
    async with runtime.sessionmaker() as session:
        dump = (
            await session.execute(text("select string_agg(t::text, ' ') from (select * from mailboxes) t"))
        ).scalar()
        dump += (
            await session.execute(text("select string_agg(t::text, ' ') from mailbox_state_transitions t"))
        ).scalar()
        dump += (await session.execute(text("select string_agg(t::text, ' ') from notifications t"))).scalar()
    for secret in ("SECRET", CLIENT_SECRET, ACCESS["access_token"]):
        assert secret not in dump
        assert secret not in caplog.text


async def test_history_has_one_row_per_change_and_per_failed_cycle(runtime, provider) -> None:
    provider.side_effect = [httpx.Response(503), httpx.Response(503), httpx.Response(503)] * 2 + [
        httpx.Response(200, json=ACCESS)
    ]
    runtime_retry = runtime  # three requests per failed cycle (TOKENWARDEN_RETRY_TRIES default 3)
    mailbox_id = await add_mailbox(runtime_retry, REFRESH_TOKEN)
    for _ in range(3):
        await cycle(runtime, mailbox_id)
    rows = await history_of(runtime, mailbox_id)
    assert [(r["event"], r["from_state"], r["to_state"], r["actor"]) for r in rows] == [
        ("refresh_failed_transient", "healthy", "retrying", "test"),
        ("refresh_failed_transient", "retrying", "degraded", "test"),
        ("refresh_succeeded", "degraded", "healthy", "test"),
    ]
    assert [r["error_code"] for r in rows] == ["http_503", "http_503", None]
    assert await outbox_kinds(runtime, mailbox_id) == ["token_refresh_retry", "reconnected"]


async def test_outbox_rows_are_deduplicated_when_the_episode_repeats(runtime, provider) -> None:
    provider.return_value = INVALID_GRANT
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    await cycle(runtime, mailbox_id)
    await cycle(runtime, mailbox_id)
    await operator_action(runtime.sessionmaker, runtime.events, mailbox_id, Event.OPS_RETRY_NOW, "operator:t", None)
    again = await cycle(runtime, mailbox_id)
    assert again.outcome.to_state == "disconnected"
    assert again.outcome.emails == ()
    assert await outbox_kinds(runtime, mailbox_id) == ["token_refresh_permanent_failure"]


async def test_a_leased_mailbox_is_not_refreshed_twice(runtime, provider) -> None:
    provider.return_value = httpx.Response(200, json=ACCESS)
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(
            text("update mailboxes set lease_owner = :o, lease_until = now() + interval '5 minutes'"),
            {"o": uuid.uuid4()},
        )
    result = await cycle(runtime, mailbox_id)
    assert result.status == "busy"
    assert provider.call_count == 0


@pytest.mark.parametrize("answer", [INVALID_GRANT, httpx.Response(200, json=ACCESS)], ids=["failure", "success"])
async def test_an_outcome_is_dropped_when_the_mailbox_changed_during_the_call(runtime, provider, answer) -> None:
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)

    async def reconnect_meanwhile(request: httpx.Request) -> httpx.Response:
        async with runtime.sessionmaker() as session, session.begin():
            await session.execute(text("update mailboxes set revision = revision + 1"))
        return answer

    provider.side_effect = reconnect_meanwhile
    result = await cycle(runtime, mailbox_id)
    assert result.status == "stale"
    mailbox = await row(runtime, mailbox_id)
    assert (mailbox.state, mailbox.lease_owner, mailbox.token_refresh_attempt_count) == ("healthy", None, 0)
    assert (mailbox.access_token_ciphertext, mailbox.last_refreshed_at) == (None, None)


async def test_a_success_is_decided_on_the_row_as_it_is_not_as_it_was_leased(runtime, provider) -> None:
    """A writer that changes the lifecycle without bumping the revision (none should) still cannot be overwritten
    by the one-statement routine refresh: the cycle decides on the row as it is, with its history row."""
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)

    async def fail_meanwhile(request: httpx.Request) -> httpx.Response:
        async with runtime.sessionmaker() as session, session.begin():
            await session.execute(
                text(
                    "update mailboxes set state = 'retrying', failure_kind = 'transient', "
                    "token_refresh_attempt_count = 1, token_refresh_failed_at = now()"
                )
            )
        return httpx.Response(200, json=ACCESS)

    provider.side_effect = fail_meanwhile
    result = await cycle(runtime, mailbox_id)
    assert (result.status, result.outcome.from_state, result.outcome.to_state) == ("refreshed", "retrying", "healthy")
    history = await history_of(runtime, mailbox_id)
    assert [(h["event"], h["from_state"], h["to_state"]) for h in history] == [
        ("refresh_succeeded", "retrying", "healthy")
    ]
    mailbox = await row(runtime, mailbox_id)
    assert (mailbox.state, mailbox.token_refresh_attempt_count, mailbox.revision) == ("healthy", 0, 1)
    assert await outcomes_of(runtime, mailbox_id) == ["success"]  # recorded once, by the path that wrote


async def test_unknown_mailbox_id_is_a_clear_error(runtime, provider) -> None:
    with pytest.raises(UnknownMailboxError, match="no mailbox with id 999"):
        await cycle(runtime, 999)


async def test_a_token_copied_from_another_row_does_not_decrypt_and_is_a_config_failure(runtime, provider) -> None:
    first = await add_mailbox(runtime, REFRESH_TOKEN)
    second = await add_mailbox(runtime, "1//other-SECRET", address="bob@gmail.test")
    async with runtime.sessionmaker() as session, session.begin():
        stolen = await session.scalar(select(Mailbox.refresh_token_ciphertext).where(Mailbox.id == first))
        await session.execute(
            text("update mailboxes set refresh_token_ciphertext = :c where id = :id"), {"c": stolen, "id": second}
        )
    result = await cycle(runtime, second)
    assert provider.call_count == 0
    assert (result.status, result.verdict.code, result.outcome.to_state) == (
        "failed",
        "token_undecryptable",
        "retrying",
    )
    assert result.outcome.emails == ()


async def test_a_reconnect_during_a_refresh_keeps_the_newer_grant(runtime, provider) -> None:
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    mailbox = await row(runtime, mailbox_id)
    consent = TokenGrant(
        access_token="ya29.new-SECRET", expires_in=3599, refresh_token="1//newer-grant-SECRET", subject="42",
        email=mailbox.address, email_verified=True,
    )  # fmt: skip

    async def reconnect_meanwhile(request: httpx.Request) -> httpx.Response:
        result = await complete_reconnect(
            runtime.sessionmaker, runtime.cipher, runtime.events, mailbox_id, mailbox.user_id, consent, "user:test"
        )
        assert result.accepted
        return httpx.Response(200, json={**ACCESS, "refresh_token": "1//old-grant-rotated-SECRET"})

    provider.side_effect = reconnect_meanwhile
    assert (await cycle(runtime, mailbox_id)).status == "stale"
    stored = await row(runtime, mailbox_id)
    token = runtime.cipher.decrypt(stored.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
    assert token == "1//newer-grant-SECRET"
    assert stored.lease_owner is None


async def test_a_rotated_token_survives_the_database_cutting_its_connections(settings, provider) -> None:
    async with open_runtime(settings, pre_ping=False) as runtime:  # as the worker runs: no pre-ping
        mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)

        async def restart_meanwhile(request: httpx.Request) -> httpx.Response:
            outsider = create_async_engine(settings.database_url, poolclass=NullPool)  # not one of the pool's
            async with outsider.begin() as connection:
                await connection.execute(
                    text(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where datname = current_database() and pid <> pg_backend_pid()"
                    )
                )
            await outsider.dispose()
            return httpx.Response(200, json={**ACCESS, "refresh_token": "1//rotated-SECRET-0003"})

        provider.side_effect = restart_meanwhile
        with contextlib.suppress(DBAPIError):  # the outcome's own transaction may meet a cut connection too
            await cycle(runtime, mailbox_id)
    async with open_runtime(settings) as reader:  # the worker's pool may still hold a cut connection
        stored = await row(reader, mailbox_id)
    token = runtime.cipher.decrypt(stored.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
    assert token == "1//rotated-SECRET-0003"  # the provider killed the old one: losing this would lose the mailbox


async def test_a_rotated_token_survives_a_pooled_connection_found_cut_when_used(runtime, provider, monkeypatch) -> None:
    """The server cut a connection while it sat idle in the pool; asyncpg reports it when the commit uses it."""
    mailbox_id = await add_mailbox(runtime, REFRESH_TOKEN)
    provider.respond(200, json={**ACCESS, "refresh_token": "1//rotated-SECRET-0004"})
    store = cycle_rows.store_rotated_refresh_token
    attempts: list[int] = []

    async def cut_once(*args: object) -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
        return await store(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cycle_rows, "store_rotated_refresh_token", cut_once)
    assert (await cycle(runtime, mailbox_id)).status == "refreshed"
    stored = await row(runtime, mailbox_id)
    token = runtime.cipher.decrypt(stored.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
    assert (len(attempts), token) == (2, "1//rotated-SECRET-0004")
