"""Tooling to develop, demonstrate and measure Tokenwarden: the demo, the sandbox providers, the simulator,

the embedded servers and the worker subprocess helper. It may import everything; nothing in statemachine/, jobs/
or web/ imports it (an import-linter contract checks it), and its servers come with the `devkit` extra.
"""
