"""`tokenwarden demo` and `tokenwarden sandbox`: the whole service on one machine, for a newcomer to try.

Why a package of its own: the demo starts servers (embedded PostgreSQL and Redis, the sandbox Google,
an SMTP catcher, the web app, the worker), seeds a data set through real refresh cycles, and adds
demo-only pages (/dev/mail, /dev/sandbox) that must never be part of a real deployment. Keeping it
here keeps the production modules free of it. Like the rest of web/, it never imports jobs/: the
worker runs as a subprocess, exactly as an operator would run it.

    config       the demo timings and `DemoConfig` (what the web app needs to show the demo pages)
    datadir      the data folder: generated keys and secrets, the running demo's addresses, logs
    mailcatcher  the SMTP server that stores every message in a Maildir, and reading it back
    faults       the faults a visitor can pick (modes, words, limits)
    control      the sandbox's fault API, and mapping mailbox ids to their refresh tokens
    seed / stories  the demo data set, driven through real refresh cycles
    services     starting and stopping each server
    cli          the parsers of `tokenwarden demo` and `tokenwarden sandbox ...` (the code loads when they run)
    command      what `tokenwarden demo` runs
    sandbox_cli  what `tokenwarden sandbox ...` runs
    pages / panel   /dev/mail and /dev/sandbox
"""
