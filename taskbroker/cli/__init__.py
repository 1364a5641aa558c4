"""The `taskbroker` command, and the composition root: the only code that imports the process
packages (api, scheduler_worker, timeout_daemon, schedule_firer) to start them. The layers
contract in pyproject.toml ([tool.importlinter]) keeps it that way.

Commands by concern: servers (api, worker, timeout-daemon, schedule-firer, dev), tasks
(schedule, task, task retry, schedulers, tasks watch|list|abort|retry), scheduler (pause,
resume), schedules, tokens. Listed
here in the order --help shows them."""

from __future__ import annotations

import typer

from taskbroker.cli import scheduler, schedules, servers, tasks, tokens

app = typer.Typer(
    help="taskbroker: a distributed task broker. Run `taskbroker dev` to try it on one machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.command()(servers.api)
app.command()(servers.worker)
app.command("timeout-daemon")(servers.timeout_daemon)
app.command()(servers.dev)
app.command()(tasks.schedule)
app.command()(tasks.task)
app.command()(tasks.schedulers)
app.add_typer(scheduler.scheduler_app, name="scheduler")
app.add_typer(tasks.tasks_app, name="tasks")
app.add_typer(tokens.token_app, name="token")
app.add_typer(schedules.schedules_app, name="schedules")
app.command("schedule-firer")(servers.schedule_firer)

__all__ = ["app"]
