"""`python -m taskbroker.cli`: the `taskbroker` command without its console script."""

from taskbroker.cli import app

app()
