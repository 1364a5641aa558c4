"""The two spellings of an idempotency key (the ``Idempotency-Key`` header and the ``key``
field) and the checks that keep them unambiguous; the semantics live in taskbroker.scheduling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header
from fastapi.exceptions import RequestValidationError

from taskbroker.api.schemas import MAX_KEY_LENGTH, ScheduleRequest

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="While a live task of this scheduler holds the key (scheduled by the same token), "
        "the request answers that task (200) instead of creating another.",
    ),
]
RefusedBatchKeyHeader = Annotated[
    str | None,
    # Read only to refuse it with a clear 422; not in the schema, which must not offer a header
    # the endpoint refuses.
    Header(alias="Idempotency-Key", include_in_schema=False),
]


def _invalid(loc: tuple[str, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


def with_header_key(body: ScheduleRequest, header: str | None) -> ScheduleRequest:
    """The request with the header's key; 422 if the header and the ``key`` field disagree."""
    if header is None:
        return body
    if body.key is not None and body.key != header:
        raise _invalid(
            ("header", "Idempotency-Key"), "the Idempotency-Key header and the key field differ: send one"
        )
    return body.model_copy(update={"key": header})


def refuse_batch_header_key(header: str | None) -> None:
    if header is not None:
        raise _invalid(
            ("header", "Idempotency-Key"),
            "a batch takes idempotency keys per task: set each task's key field instead of the header",
        )


def check_unique_keys(bodies: list[ScheduleRequest]) -> None:
    """422 for one key on two tasks of the same scheduler in one request: one would be the other."""
    seen: set[tuple[str, str]] = set()
    for index, body in enumerate(bodies):
        if body.key is None:
            continue
        if (body.scheduler, body.key) in seen:
            raise _invalid(
                ("body", "tasks", str(index), "key"),
                f"key {body.key!r} is given twice for scheduler {body.scheduler!r} in this batch",
            )
        seen.add((body.scheduler, body.key))
