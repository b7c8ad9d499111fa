"""The OAuth providers: one module per provider (`google.py`, ...) declaring everything about it, the
registry of those that can be used (`registry.py`), and the token-endpoint adapter they share (`oauth.py`)."""
