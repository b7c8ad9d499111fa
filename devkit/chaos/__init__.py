"""`make chaos`: the real processes over a few thousand mailboxes while faults are injected on a schedule.

Everything runs on this machine and is the suite's own: embedded PostgreSQL and Redis, the sandbox
provider in strict rotation mode behind a TCP proxy that can reset connections, an SMTP server that can
drop connections after DATA, three `tokenwarden worker`s and `tokenwarden serve`. At the end it checks
the promises of README's "Reliability" section and prints them as a table (exit status 1 if one fails).
"""
