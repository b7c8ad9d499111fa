"""The session's PostgreSQL and Redis answer: if this fails, every database or queue test would too."""

import redis.asyncio as redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.services import MakeDatabase


async def test_fresh_database_and_redis_answer(make_database: MakeDatabase, redis_url: str) -> None:
    engine = create_async_engine(make_database("smoke"), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("select 1"))).scalar_one() == 1
            assert (await conn.execute(text("select current_database()"))).scalar_one().startswith("tw_smoke_")
    finally:
        await engine.dispose()

    client = redis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()
