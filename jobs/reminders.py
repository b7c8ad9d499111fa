"""Placeholder until the reminders jobs land: the worker imports `functions` and `cron_jobs` from here."""

functions: list = []
cron_jobs: list = []
