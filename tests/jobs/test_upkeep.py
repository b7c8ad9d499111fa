"""Housekeeping crons on real PostgreSQL: expired web rows are purged, outcomes rolled up and pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, text

from jobs.upkeep import prune_outcomes, purge_expired_web_rows, roll_up_outcomes
from jobs.worker import worker_settings
from statemachine.services.runtime import Runtime
from statemachine.store import outcome_minutes
from statemachine.store.models import RefreshOutcome, User
from tests.factories import add_mailbox
from web.tables import LoginToken, OAuthState, WebSession


async def count(runtime: Runtime, model: type) -> int:
    async with runtime.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_web_rows_a_day_past_expiry_are_purged_and_the_rest_kept(runtime: Runtime) -> None:
    mailbox_id = await add_mailbox(runtime, "1//refresh-SECRET")
    now = datetime.now(UTC)
    ages = {
        "long-gone": now - timedelta(days=2),
        "just-expired": now - timedelta(hours=1),
        "live": now + timedelta(hours=1),
    }
    async with runtime.sessionmaker() as session, session.begin():
        user_id = await session.scalar(select(User.id).limit(1))
        for name, expires_at in ages.items():
            session_id = await session.scalar(
                insert(WebSession)
                .values(token_hash=name, user_id=user_id, expires_at=expires_at)
                .returning(WebSession.id)
            )
            await session.execute(insert(LoginToken).values(token_hash=name, user_id=user_id, expires_at=expires_at))
            await session.execute(
                insert(OAuthState).values(
                    state_hash=name, session_id=session_id, mailbox_id=mailbox_id, provider="google",
                    verifier_ciphertext=b"x", expires_at=expires_at,
                )
            )  # fmt: skip
    assert await purge_expired_web_rows({"runtime": runtime}) == {
        "oauth_states": 1,
        "login_tokens": 1,
        "web_sessions": 1,
    }
    assert [await count(runtime, model) for model in (WebSession, LoginToken, OAuthState)] == [2, 2, 2]
    names = [job.name for job in worker_settings(runtime.settings)["cron_jobs"]]
    assert "purge_expired_web_rows" in names


async def test_the_rollup_job_counts_the_finished_minutes_and_pruning_keeps_48_hours_of_them(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    ages = (timedelta(hours=1), timedelta(hours=47), timedelta(hours=49))
    rows = [{"provider": "google", "mailbox_id": 1, "outcome": "success", "at": now - age} for age in ages]
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(insert(RefreshOutcome), rows)
    # a first run rolls up the retention's 48 hours, so an earlier one stands for a worker that ran two hours ago
    await outcome_minutes.roll_up(runtime.sessionmaker, now - timedelta(hours=2))
    assert (await roll_up_outcomes({"runtime": runtime}))["skipped"] == 0
    minutes = "select minute from refresh_outcome_minutes order by minute"
    async with runtime.sessionmaker() as session:
        assert len((await session.execute(text(minutes))).all()) == 3  # the hour-old one by the job
    assert await prune_outcomes({"runtime": runtime}) == {"deleted": 1, "minutes_deleted": 1}
    async with runtime.sessionmaker() as session:
        kept = [minute for (minute,) in await session.execute(text(minutes))]
    assert kept == [(now - age).replace(second=0, microsecond=0) for age in reversed(ages[:2])]
