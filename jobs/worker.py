"""The arq worker's configuration, built from the same environment as the CLI.

`worker_settings(settings)` is the wiring, every cron schedule included, so settings passed in code
configure the worker exactly as the environment does, and `lanes` splits it into the process's three arq
workers, one per queue. `tokenwarden worker` runs them (jobs/serve.py, which also survives Redis restarts);
arq's own command line runs one queue only, and would leave the batches and the urgent work unserved.
The arq traps this avoids: arq refuses to enqueue an id while that job or its kept result exists,
so refresh jobs, whose ids are deterministic (docs/transactions.md), keep no result (`keep_result=0`),
and failed jobs keep theirs only briefly (arq applies the worker's `keep_result` to every terminal
failure); `max_jobs`, and the slots that all batch jobs of the process share for their cycles
(`refresh_slots`, made at startup), stay under the database pool; SIGTERM lets running cycles finish for
`TOKENWARDEN_SHUTDOWN_GRACE_SECONDS`. arq holds a job that a killed worker was running "in progress" for its
longest timeout (a batch's, about 20 minutes by default): the scan and the sweeps give such work a fresh job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from typing import Any
from wsgiref.simple_server import WSGIServer

from arq.connections import RedisSettings
from arq.cron import CronJob, cron
from arq.worker import func
from prometheus_client import start_http_server

from jobs import mail, metrics, revocations, webhooks
from jobs.refresh import cycle_slots, refresh_batch, refresh_mailbox, refresh_timeout_seconds
from jobs.reminders import queue_reminders
from jobs.scan import REFRESH_BATCH_JOB, REFRESH_JOB, REFRESH_QUEUE, refresh_batch_size, scan_due
from jobs.timed import URGENT_QUEUE
from jobs.upkeep import check_incidents, fold_mailbox_counts, prune_outcomes, purge_expired_web_rows, roll_up_outcomes
from statemachine.services.runtime import open_runtime
from statemachine.services.settings import Settings, SettingsError, load_settings

FAILED_RESULT_SECONDS = 2  # a failed refresh's id is blocked this long (arq applies it to every terminal failure)
HEALTH_CHECK_SECONDS = 10
# arq starts at most `max_jobs` jobs per poll and then sleeps poll_delay: at its default (0.5 s) a worker
# with 10 slots does 20 quick refreshes a second, whatever the CPU. A poll is one cheap Redis query.
POLL_DELAY_SECONDS = 0.05
MAX_TRIES = 3
BATCH_TIMEOUT_MARGIN_SECONDS = 10  # for the batch's own work around its cycles: logs, gathering the results
# The quickest a lane's claims are used up: a cycle against a token endpoint on the same host, 10 at once, took 7 ms
# (1,430 cycles/s in one process, the note of issue 12); and the most refreshes a second one process does (one core
# at 0.29-0.35 ms each, `make bench`).
QUICKEST_CYCLE_SECONDS = 0.008
TOP_REFRESH_RATE = 3000
URGENT_MAX_JOBS = 4  # the urgent lane's own slots: confirming cycles and email deliveries (jobs/timed.py)


def cron_fields(seconds: float) -> dict[str, Any]:
    """arq cron fields for "at least every `seconds`": cron has no interval, only sets of seconds/minutes."""
    step = max(1, round(seconds))
    if step < 60:
        return {"second": set(range(0, 60, step))}
    minutes = step // 60
    if minutes < 60:
        return {"minute": set(range(0, 60, minutes)), "second": 0}
    return {"minute": 0, "second": 0}


def batch_jobs_in_flight(worker_max_jobs: int) -> int:
    """The batch lane's arq slots: enough claims to fill the process's cycle slots and to keep them busy until the
    lane polls again (5 batches of 40, 200 claims, for the default 40 slots; 4 batches of 20 for 10 slots).

    arq starts a lane's jobs only when it polls, every POLL_DELAY_SECONDS: with just enough batches to fill the
    slots and one more (2 of 20 for 10 slots), a worker whose cycles were quick ran its 40 claims and then sat
    idle until the next poll, 800 refreshes/s at most whatever its CPU (`make bench`: 790/s, and 1,390/s with 4
    batches). So the lane holds the slots' fill and what they can run in a poll delay, at the quickest cycle
    and at most at the process's top speed. No more than that: the other claims wait in Redis, where any worker
    may take them, rather than in one worker's memory behind its own slots.
    """
    top_rate = min(worker_max_jobs / QUICKEST_CYCLE_SECONDS, TOP_REFRESH_RATE)
    claims = worker_max_jobs + top_rate * POLL_DELAY_SECONDS
    return math.ceil(claims / refresh_batch_size(worker_max_jobs))


def batch_timeout_seconds(settings: Settings) -> float:
    """arq's timeout of a batch job: long enough that it never cuts a cycle short (each cycle has its own,
    `refresh_timeout_seconds`, under its lease), since cutting one could lose a rotated token before its commit.

    The batch's cycles share the process's `worker_max_jobs` slots with the cycles of the other batches its
    batch lane runs, `batch_jobs_in_flight` in all: that many times `refresh_batch_size` cycles for
    `worker_max_jobs` slots. In the worst case (every cycle taking its whole timeout, the slots served in
    order) that is their quotient, rounded up, in rounds before the batch's last cycle ends: 5 at the defaults.
    """
    slots = settings.worker_max_jobs
    cycles = batch_jobs_in_flight(slots) * refresh_batch_size(slots)
    return math.ceil(cycles / slots) * refresh_timeout_seconds(settings) + BATCH_TIMEOUT_MARGIN_SECONDS


async def startup(ctx: dict[str, Any]) -> None:
    """Open the process's resources once: the Runtime, the metrics server, the gauge refresher."""
    if "runtime" in ctx:
        return
    settings: Settings = ctx.get("settings") or load_settings(os.environ)
    stack = contextlib.AsyncExitStack()
    if settings.metrics_port:
        server, thread = _serve_metrics(settings.metrics_port)
        stack.callback(thread.join, 5)
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
    runtime = await stack.enter_async_context(open_runtime(settings, pre_ping=False))  # see make_engine
    if runtime.incidents is not None:
        runtime.incidents.listeners.append(metrics.record_incident_opened)
    webhook_http = webhooks.make_client(settings)
    stack.push_async_callback(webhook_http.aclose)
    gauges = asyncio.create_task(
        metrics.refresh_gauges(runtime.sessionmaker, settings.scan_interval_seconds), name="tokenwarden-gauges"
    )
    stack.push_async_callback(_cancel, gauges)
    ctx.update(runtime=runtime, exit_stack=stack, webhook_http=webhook_http, refresh_slots=cycle_slots(settings))


def _serve_metrics(port: int) -> tuple[WSGIServer, threading.Thread]:
    """Start the metrics server first, so a taken port stops the worker before it opens anything else."""
    try:
        return start_http_server(port)
    except OSError as err:
        raise SettingsError(
            f"TOKENWARDEN_METRICS_PORT: port {port} cannot be opened ({err.strerror or err}); "
            "give each worker on this host its own port, or 0 to turn its metrics off"
        ) from None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def shutdown(ctx: dict[str, Any]) -> None:
    stack: contextlib.AsyncExitStack | None = ctx.pop("exit_stack", None)
    ctx.pop("runtime", None)
    ctx.pop("webhook_http", None)
    ctx.pop("refresh_slots", None)
    if stack is not None:
        await stack.aclose()


def refresh_crons(settings: Settings) -> list[CronJob]:
    """The due-scan, the incident close check and the count fold (every scan interval), the outcomes' rollup
    (every minute), the hourly outcome pruning and the hourly purge of expired web sessions and OAuth states."""
    every_scan = cron_fields(settings.scan_interval_seconds)
    scan_timeout = settings.scan_interval_seconds + 30
    return [
        cron(scan_due, name="scan_due", run_at_startup=True, timeout=scan_timeout, **every_scan),
        cron(check_incidents, name="check_incidents", timeout=scan_timeout, **every_scan),
        cron(fold_mailbox_counts, name="fold_mailbox_counts", timeout=scan_timeout, **every_scan),
        cron(prune_outcomes, name="prune_outcomes", minute={7}, second=0, timeout=600),
        # every minute, a few seconds in: the minute that just ended is rolled up (a catch-up takes longer)
        cron(roll_up_outcomes, name="roll_up_outcomes", second={5}, timeout=600),
        cron(purge_expired_web_rows, name="purge_expired_web_rows", minute={17}, second=0, timeout=600),
    ]


def outbox_crons(settings: Settings) -> list[CronJob]:
    """The sweeps of the outboxes (emails, webhooks, revocations) and the reminders (outbox rows too), each every
    outbox interval: the net under the hand-over at commit and the retries of what failed."""
    every_sweep = cron_fields(settings.outbox_interval_seconds)
    return [
        cron(mail.sweep_outbox, name="sweep_outbox", run_at_startup=True, timeout=60, **every_sweep),
        cron(queue_reminders, name="queue_reminders", timeout=60, **every_sweep),
        cron(webhooks.sweep_webhooks, name="sweep_webhooks", run_at_startup=True, timeout=60, **every_sweep),
        cron(revocations.sweep_revocations, name="sweep_revocations", run_at_startup=True, timeout=300, **every_sweep),
    ]


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `arq.worker.Worker` (arq accepts a dict wherever it takes WorkerSettings)."""
    refresh = func(
        refresh_mailbox, name=REFRESH_JOB, keep_result=0, max_tries=MAX_TRIES, timeout=refresh_timeout_seconds(settings)
    )
    batch = func(
        refresh_batch,
        name=REFRESH_BATCH_JOB,
        keep_result=0,
        max_tries=MAX_TRIES,
        timeout=batch_timeout_seconds(settings),
    )
    return {
        "functions": [batch, refresh, *mail.functions, *webhooks.functions],
        "cron_jobs": [*refresh_crons(settings), *outbox_crons(settings)],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "keep_result": FAILED_RESULT_SECONDS,
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": POLL_DELAY_SECONDS,
        "max_tries": MAX_TRIES,
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }


def lanes(options: dict[str, Any]) -> list[dict[str, Any]]:
    """One process's arq workers, one per queue, from (possibly edited) `worker_settings`: the main lane (crons,
    sweeps, timed refreshes), the urgent lane (jobs/timed.py: a few slots of its own, no crons) and the batch
    lane (`refresh_batch` alone, `batch_jobs_in_flight` slots). Batches run only in theirs, so a burst of
    them never holds the slots the crons need (the due-scan included) and a worker takes no more of them than
    its cycle slots can run."""
    batch = [function for function in options["functions"] if function.name == REFRESH_BATCH_JOB]
    main = {**options, "functions": [function for function in options["functions"] if function not in batch]}
    return [
        main,
        {**main, "queue_name": URGENT_QUEUE, "cron_jobs": [], "max_jobs": URGENT_MAX_JOBS},
        {**options, "queue_name": REFRESH_QUEUE, "functions": batch, "cron_jobs": [],
         "max_jobs": batch_jobs_in_flight(options["max_jobs"])},
    ]  # fmt: skip
