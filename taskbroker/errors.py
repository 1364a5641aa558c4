"""One exception type per failure a caller can act on; the API maps each to a status code."""


class TaskbrokerError(Exception):
    """Base of every error taskbroker raises on purpose."""


class StoreUnavailable(TaskbrokerError):
    """Redis could not be reached or did not answer in time: retry later."""


class NotReplicated(StoreUnavailable):
    """A write reached the Redis primary, but fewer replicas than TASKBROKER_REDIS_MIN_REPLICAS
    confirmed it in time: it may be lost if the primary fails now. Retry with the same
    idempotency key (a retry finds the task if it survived, or creates it again)."""


class BrokerUnavailable(TaskbrokerError):
    """RabbitMQ could not be reached, or did not confirm a publish: retry later."""


class QueueMissing(TaskbrokerError):
    """A scheduler's queue does not exist in RabbitMQ: register the scheduler again to declare it."""


class QueueUnavailable(BrokerUnavailable):
    """A scheduler's queue exists but its RabbitMQ node is down (a classic queue lives on one
    node): retry later, it is back with its node; registering again changes nothing. A kind of
    BrokerUnavailable, so whatever backs off on an outage backs off on this."""


class PriorityUnsupported(TaskbrokerError):
    """A task asked for a priority its scheduler's queue cannot honour (a quorum queue on
    RabbitMQ 3.x has no priorities): schedule it at priority 0, or on a classic scheduler."""


class UnknownScheduler(TaskbrokerError):
    """No scheduler of that name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"scheduler {name!r} is not registered: register it with POST /scheduler first")
        self.name = name


class SchedulerConflict(TaskbrokerError):
    """A scheduler of that name is registered with a different definition."""


class SchedulerBusy(TaskbrokerError):
    """The scheduler still has live tasks."""


class TaskNotFound(TaskbrokerError):
    """No such task, or it finished longer ago than the retention time."""


class TaskAlreadyFinished(TaskbrokerError):
    """The task is already in a final state."""


class InvalidCursor(TaskbrokerError):
    """A listing cursor that this API did not hand out."""


class InvalidTrigger(TaskbrokerError):
    """A schedule's trigger arguments are not valid; ``argument`` names the one at fault."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


class ScheduleNotFound(TaskbrokerError):
    """No recurring schedule has that id."""


class ScheduleNameTaken(TaskbrokerError):
    """Another recurring schedule already has that name."""


class TaskExists(TaskbrokerError):
    """A task with that id is already stored (a schedule's run created by another firer)."""


class QueueIncompatible(TaskbrokerError):
    """A scheduler's queue exists in RabbitMQ with other arguments (no ``x-max-priority``)."""


class IdempotencyKeyPending(TaskbrokerError):
    """The idempotency key names a task whose message has not been confirmed yet (``holder``)."""

    def __init__(self, message: str, *, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class IncompatibleLibrary(TaskbrokerError):
    """An installed library lacks a private part that taskbroker's fast path is built on: the
    process refuses to start rather than run without it. Install the version pyproject.toml
    allows (its bounds name each library whose internals are used, and why)."""

    def __init__(self, library: str, version: str, missing: str, purpose: str) -> None:
        super().__init__(
            f"{library} {version} {missing}, which taskbroker uses to {purpose}: install the "
            f"{library} version taskbroker's pyproject.toml allows"
        )
        self.library = library
        self.version = version


class TaskNotRetryable(TaskbrokerError):
    """Only a failed, timed-out or aborted task can be re-run by hand: this one is live or complete."""
