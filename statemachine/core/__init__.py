"""Pure rules: states, the machine, the escalation policy, error classification, incident rules, the token cipher.

Nothing here does I/O (an import-linter contract in pyproject.toml checks it), so all of it is tested without a
database or network.
"""
