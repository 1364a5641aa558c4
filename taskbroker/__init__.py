"""Shared core of taskbroker: the Task model, settings, the Redis task store and the queue adapters.

Every process (API, consumer, timeout daemon, schedule firer) imports from here; nothing here
imports a process but taskbroker.cli, the composition root (pyproject.toml's [tool.importlinter]).
"""
