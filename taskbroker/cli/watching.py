"""What the CLI shows for live work: one readable line per task event, and a progress bar while
many tasks are scheduled."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from taskbroker.client import Client, TaskSpec
from taskbroker.event_models import EventKind, TaskEvent
from taskbroker.models import Task

STATE_STYLES = {
    EventKind.DELAYED: "bright_black",
    EventKind.PENDING: "cyan",
    EventKind.RUNNING: "yellow",
    EventKind.COMPLETE: "green",
    EventKind.FAILED: "red",
    EventKind.ABORTED: "magenta",
    EventKind.TIMEOUT: "red",
    EventKind.REQUEUED: "blue",
    EventKind.DELAYED: "blue",
    EventKind.RETRIED: "cyan",
}


def event_line(event: TaskEvent) -> Text:
    """``<time>  <task id>  <scheduler>  <state>  attempt <n>``: aligned, greppable, colored on a tty."""
    at = event.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    line = Text(f"{at}  {event.task_id}  {event.scheduler}  ")
    line.append(f"{event.state.value:<8}", style=STATE_STYLES.get(event.state, ""))
    line.append(f"  attempt {event.attempt}")
    if event.not_before is not None:
        due = event.not_before.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line.append(f"  {event.reason or 'delay'} until {due}")
    return line


def watch(client: Client, console: Console, *, scheduler: str | None) -> None:
    """Print every event as it happens, until interrupted (the client resumes dropped streams)."""
    for event in client.events(scheduler):
        console.print(event_line(event), highlight=False, soft_wrap=True)
        console.file.flush()


def schedule_with_progress(
    client: Client, specs: Iterable[TaskSpec], *, total: int, batch_size: int, console: Console
) -> list[Task]:
    """Schedule ``total`` tasks in batches, advancing a progress bar as each batch is stored."""
    columns = (
        TextColumn("scheduling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("scheduling", total=total)
        return client.schedule_many(
            specs, batch_size=batch_size, on_batch=lambda stored: progress.advance(bar, len(stored))
        )
