"""DockerEngine.remove against an engine that refuses a force-remove racing the container's own
exit, as podman does: the remove is tried again, and a refusal that lasts reaches the caller."""

from __future__ import annotations

import httpx
import pytest

from taskbroker.runtimes.docker_engine import REMOVE_ATTEMPTS, DockerEngine, EngineError

RACE = {"message": "cannot remove container abc as it could not be stopped: container state improper"}


def _engine(answers: list[httpx.Response], seen: list[str]) -> DockerEngine:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return answers.pop(0) if len(answers) > 1 else answers[0]

    engine = DockerEngine("unix:///nonexistent.sock")
    engine._client = httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://engine")
    return engine


async def test_a_remove_refused_while_the_container_stops_is_tried_again() -> None:
    seen: list[str] = []
    engine = _engine([httpx.Response(500, json=RACE), httpx.Response(204)], seen)

    await engine.remove("task-1")

    assert seen == ["DELETE /containers/task-1"] * 2


async def test_a_remove_refused_every_time_fails_after_a_few_tries() -> None:
    seen: list[str] = []
    engine = _engine([httpx.Response(500, json=RACE)], seen)

    with pytest.raises(EngineError, match="state improper"):
        await engine.remove("task-1")

    assert len(seen) == REMOVE_ATTEMPTS


async def test_a_remove_refused_for_another_reason_is_not_tried_again() -> None:
    seen: list[str] = []
    engine = _engine([httpx.Response(403, json={"message": "denied"})], seen)

    with pytest.raises(EngineError, match="denied"):
        await engine.remove("task-1")

    assert len(seen) == 1
