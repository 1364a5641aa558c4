"""The printed table: our figures, the peers', the ratios, and each target of issue 7 met or not."""

from __future__ import annotations

from typing import Any


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(ours: Any, theirs: Any) -> float | None:
    if not ours or not theirs:
        return None
    return round(float(ours) / float(theirs), 2)


def _cpu(figures: Any) -> str:
    if not isinstance(figures, dict):
        return "-"
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in figures.items())


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, what it came to, met?) for each target; None when it was not measured."""
    ours_e2e = _get(results, "ours", "end_to_end", "tasks_per_s")
    dramatiq = _ratio(ours_e2e, _get(results, "peers", "dramatiq", "tasks_per_s"))
    celery = _ratio(ours_e2e, _get(results, "peers", "celery_acks_late", "tasks_per_s"))
    # The median of the alternating rounds' ratios (bench/__main__.py, scheduling_rounds).
    single = _get(results, "ours", "single_vs_apply_async", "median")
    single_client = _get(results, "ours", "client_token_vs_apply_async", "median")
    p99 = _get(results, "ours", "latency", "p99_ms")
    offered = _get(results, "ours", "latency", "offered_per_s")
    memory = _get(results, "ours", "memory", "bytes_per_task")
    expire = _get(results, "timeout_daemon", "expire_seconds")
    expired = _get(results, "timeout_daemon", "expired")
    sweeps = _get(results, "timeout_daemon", "idle_sweep_ms") or {}
    flat = None
    if len(sweeps) >= 2:
        timings = [sweeps[k] for k in sorted(sweeps, key=int)]
        # "Flat": the largest index costs no more than twice the empty one plus a millisecond.
        flat = timings[-1] <= 2 * timings[0] + 1.0
    release = _get(results, "delayed_release", "release_seconds")
    release_floor = _get(results, "delayed_release", "rabbitmq_floor_seconds")
    release_cpu = _get(results, "delayed_release", "rabbitmq_floor_cpu_seconds")
    cores = _get(results, "delayed_release", "cores")
    released = _get(results, "delayed_release", "released")
    waiting = _get(results, "delayed_release", "idle_sweep_ms") or {}
    waiting_flat = None
    if len(waiting) >= 2:
        timings = [waiting[k] for k in sorted(waiting, key=int)]
        waiting_flat = timings[-1] <= 2 * timings[0] + 1.0
    return [
        (
            "1a. end to end >= 1.0x Dramatiq",
            f"{dramatiq}x" if dramatiq else "-",
            None if dramatiq is None else dramatiq >= 1.0,
        ),
        (
            "1b. end to end >= 2x Celery acks late",
            f"{celery}x" if celery else "-",
            None if celery is None else celery >= 2.0,
        ),
        (
            "2. single requests >= 1.0x Celery apply_async (median round)",
            f"{single}x (client token {single_client}x)" if single else "-",
            None if single is None else single >= 1.0,
        ),
        (
            f"3. p99 < 20 ms at {_num(offered)} req/s",
            f"{p99} ms" if p99 is not None else "-",
            None if p99 is None else p99 < 20,
        ),
        (
            "4. Redis memory per live task < 1 KiB",
            f"{memory} B" if memory else "-",
            None if memory is None else memory < 1024,
        ),
        (
            f"5a. expire {_num(expired)} due tasks < 2 s",
            f"{expire} s" if expire is not None else "-",
            None if expire is None else expire < 2,
        ),
        (
            "5b. idle sweep flat in live tasks",
            ", ".join(f"{k}: {v} ms" for k, v in sweeps.items()) or "-",
            flat,
        ),
        (
            f"7a. release {_num(released)} due delayed tasks < 2 s",
            "-"
            if release is None
            else f"{release} s (RabbitMQ alone: {release_floor} s, {release_cpu} CPU-s on {cores} cores)"
            if release_floor
            else f"{release} s",
            None if release is None else release < 2,
        ),
        (
            "7b. idle sweep flat in delayed tasks waiting",
            ", ".join(f"{k}: {v} ms" for k, v in waiting.items()) or "-",
            waiting_flat,
        ),
    ]


def _speed(speed: Any) -> str:
    if not isinstance(speed, dict):
        return "machine speed: not measured"
    return (
        f"machine speed: a Python loop of 1,000,000 additions {_num(speed.get('python_loop_1m_ms'), 1)} ms, "
        f"{_num(speed.get('redis_round_trips_per_s'))} Redis round trips/s (the ratios carry across "
        "machines; the absolute targets 3 and 5a do not)"
    )


def render(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    lines = [
        f"taskbroker benchmark, {results.get('started_at', '')}, commit {env.get('commit', '?')}",
        f"{env.get('machine', '')}; Python {env.get('python', '')}; Redis {env.get('redis', '')}; "
        f"RabbitMQ {env.get('rabbitmq', '')}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        _speed(env.get("speed")),
        "",
        "| system | end-to-end tasks/s | ours / theirs | CPU s per 1,000 tasks |",
        "| --- | ---: | ---: | --- |",
    ]
    ours_e2e = _get(results, "ours", "end_to_end")
    lines.append(
        f"| taskbroker (batches of 1,000, confirms, ack after claim) | {_num(_get(ours_e2e, 'tasks_per_s'))} "
        f"| 1.00 | {_cpu(_get(ours_e2e, 'cpu_s_per_1000'))} |"
    )
    peers = (
        ("dramatiq", "Dramatiq (RabbitMQ, 2 processes x 8 threads)"),
        ("celery_acks_late", "Celery (acks late, prefetch 1, Redis results, -c 2)"),
        ("celery_default", "Celery (defaults, -c 2)"),
    )
    for key, label in peers:
        peer = _get(results, "peers", key)
        if peer is None:
            continue
        ratio = _ratio(_get(ours_e2e, "tasks_per_s"), peer.get("tasks_per_s"))
        lines.append(
            f"| {label} | {_num(peer.get('tasks_per_s'))} | {ratio} | {_cpu(peer.get('cpu_s_per_1000'))} |"
        )
    single = _get(results, "ours", "single_requests") or {}
    client = _get(results, "ours", "single_requests_client_token") or {}
    batches = _get(results, "ours", "batches") or {}
    python_client = _get(results, "ours", "async_client_single_calls") or {}
    versus_raw = _get(results, "ours", "async_client_vs_raw", "median")
    latency = _get(results, "ours", "latency") or {}
    memory = _get(results, "ours", "memory") or {}
    s, c, b, lt, m = single.get, client.get, batches.get, latency.get, memory.get
    lines += [
        "",
        "| scheduling | tasks/s | notes |",
        "| --- | ---: | --- |",
        f"| taskbroker, one task per request, {s('clients', '-')} clients | {_num(s('tasks_per_s'))} "
        f"| p50 {s('p50_ms', '-')} ms; API CPU {s('api_cpu_s_per_1000', '-')} s per 1,000; admin token |",
        f"| taskbroker, the same with a client token | {_num(c('tasks_per_s'))} "
        f"| p50 {c('p50_ms', '-')} ms; API CPU {c('api_cpu_s_per_1000', '-')} s per 1,000 |",
        f"| taskbroker.client.AsyncClient, one task per schedule() call, "
        f"{python_client.get('clients', '-')} at once, client token "
        f"| {_num(python_client.get('tasks_per_s'))} "
        f"| {versus_raw if versus_raw is not None else '-'}x the raw loop above (median round); "
        "use schedule_many for bulk |",
        f"| taskbroker, batches of {b('batch', '-')} | {_num(b('tasks_per_s'))} "
        f"| API CPU {b('api_cpu_s_per_1000', '-')} s per 1,000 |",
    ]
    celery_publish = _get(results, "peers", "celery_publish")
    if celery_publish:
        lines.append(
            f"| Celery apply_async, one process | {_num(celery_publish.get('tasks_per_s'))} | no confirms |"
        )
    rounds = _get(results, "ours", "single_vs_apply_async", "per_round")
    if rounds:
        client_rounds = _get(results, "ours", "client_token_vs_apply_async", "per_round") or []
        lines += [
            "",
            f"Each figure above is the median of {len(rounds)} alternating rounds; ours / apply_async "
            f"per round (sorted): {', '.join(map(str, rounds))}; with a client token: "
            f"{', '.join(map(str, client_rounds))}.",
        ]
    lines += [
        "",
        f"Schedule latency at {_num(lt('offered_per_s'))} requests/s offered ({lt('requests', '-')} "
        f"requests): p50 {lt('p50_ms', '-')} ms, p99 {lt('p99_ms', '-')} ms, "
        f"max {lt('max_ms', '-')} ms (client fell behind by {lt('client_fell_behind_ms', '-')} ms)",
        f"Redis memory per live task ({m('attributes_bytes', '-')} bytes of attributes): "
        f"{m('bytes_per_task', '-')} B (hash {m('task_hash_bytes', '-')} B + attributes "
        f"{m('attributes_key_bytes', '-')} B + indexes "
        f"{m('index_bytes_per_task', '-')} B; INFO delta {m('used_memory_delta_per_task', '-')} B)",
    ]
    daemon = results.get("timeout_daemon")
    if daemon:
        sweeps = ", ".join(f"{k} live: {v} ms" for k, v in daemon.get("idle_sweep_ms", {}).items())
        lines.append(
            f"Timeout daemon: expired {_num(daemon.get('expired'))} due tasks in "
            f"{daemon.get('expire_seconds')} s; idle sweep {sweeps}"
        )
    delayed = results.get("delayed_release")
    if delayed:
        sweeps = ", ".join(f"{k} waiting: {v} ms" for k, v in delayed.get("idle_sweep_ms", {}).items())
        lines.append(
            f"Delayed tasks: released and published {_num(delayed.get('released'))} due tasks in "
            f"{delayed.get('release_seconds')} s (RabbitMQ alone took "
            f"{delayed.get('rabbitmq_floor_seconds')} s for as many messages: "
            f"{delayed.get('release_vs_rabbitmq_floor')}x); idle sweep {sweeps}"
        )
    lines += ["", "| target | came to | met |", "| --- | --- | --- |"]
    for name, value, met in targets(results):
        lines.append(f"| {name} | {value} | {'-' if met is None else 'yes' if met else 'NO'} |")
    return "\n".join(lines)
