"""The use cases: a refresh cycle, one event in one transaction, reconnect, operator actions, import, settings."""
