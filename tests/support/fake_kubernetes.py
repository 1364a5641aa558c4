"""A fake Kubernetes API server for the kubernetes runtime's tests: a real HTTP server on
127.0.0.1 that speaks the endpoints the runtime calls with the real JSON shapes.

It "runs" each Job by a script chosen by the Job's image (``scripts``; default: run until
deleted or until the test calls ``finish``), records what it was sent (``created``,
``deletions``, ``requests``), streams watch events as chunked newline-delimited JSON, and
honours deletion (foreground propagation removes the Job's pods first).
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

JOBS = re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs(?:/(?P<name>[^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$")
LEASES = re.compile(r"^/apis/coordination.k8s.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/]+))?$")


@dataclass(frozen=True)
class Script:
    """What the fake does with a new Job: ``succeed``, ``fail``, ``deadline`` or ``hang``."""

    outcome: str = "hang"
    log: str = ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKubernetes:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._rv = 0
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self._events: list[tuple[int, str, str, dict[str, Any]]] = []
        self.scripts: dict[str, Script] = {}
        self.created: list[dict[str, Any]] = []
        """Every Job body POSTed, as sent."""
        self.deletions: list[tuple[str, str, str | None]] = []
        """(namespace, name, propagationPolicy) of every Job DELETE."""
        self.requests: list[tuple[str, str]] = []
        self.stuck: set[str] = set()
        """Names of Jobs whose deletion never completes (a finalizer nobody removes)."""
        self.refuse_create: int | None = None
        """An HTTP status (e.g. 403) to answer Job creation with."""
        self.expire_next_watch = False
        """Answer the next watch with a 410 Gone ERROR event, as an API server does for an old
        resourceVersion."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-kubernetes", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubernetes:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._lock:
            self._rv += 1
            self._lock.notify_all()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                }
            )
        )
        return path

    # What tests control and inspect

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.jobs.get((namespace, name))
            return copy.deepcopy(found) if found else None

    def job_names(self, namespace: str = "default") -> list[str]:
        with self._lock:
            return sorted(name for ns, name in self.jobs if ns == namespace)

    def pods_of(self, namespace: str, job: str) -> list[str]:
        with self._lock:
            return sorted(
                n
                for (ns, n), p in self.pods.items()
                if ns == namespace and p["metadata"]["labels"].get("job-name") == job
            )

    def finish(self, namespace: str, name: str, outcome: str = "succeed", log: str = "") -> None:
        with self._lock:
            self._finish(namespace, name, Script(outcome, log))

    def add_job(self, job: dict[str, Any], *, outcome: str = "hang") -> None:
        """Store a Job as if someone (a consumer now dead) had created it."""
        with self._lock:
            self._create_job(job["metadata"]["namespace"], copy.deepcopy(job), Script(outcome))

    def add_lease(
        self, namespace: str, name: str, *, labels: dict[str, str], renewed: datetime, seconds: int
    ) -> None:
        with self._lock:
            self.leases[(namespace, name)] = self._stamp(
                namespace,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "holderIdentity": name,
                        "leaseDurationSeconds": seconds,
                        "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    },
                },
            )

    # The cluster's behaviour (called with the lock held)

    def _stamp(self, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace
        meta["resourceVersion"] = str(self._rv)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        return obj

    def _changed(self, namespace: str, kind: str, job: dict[str, Any]) -> None:
        self._events.append((self._rv, namespace, kind, copy.deepcopy(job)))
        self._lock.notify_all()

    def _create_job(self, namespace: str, job: dict[str, Any], script: Script) -> dict[str, Any]:
        name = job["metadata"]["name"]
        job["status"] = {}
        self.jobs[(namespace, name)] = self._stamp(namespace, job)
        self._changed(namespace, "ADDED", job)
        created = copy.deepcopy(job)
        pod_name = f"{name}-{secrets.token_hex(3)[:5]}"
        labels = {
            **job["spec"]["template"]["metadata"].get("labels", {}),
            "job-name": name,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": job["metadata"]["uid"],
        }
        self.pods[(namespace, pod_name)] = self._stamp(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name, "labels": labels},
                "spec": job["spec"]["template"]["spec"],
                "status": {"phase": "Running"},
            },
        )
        job["status"] = {"active": 1, "startTime": _now()}
        self._stamp(namespace, job)
        self._changed(namespace, "MODIFIED", job)
        if script.outcome != "hang":
            self._finish(namespace, name, script)
        return created

    def _finish(self, namespace: str, name: str, script: Script) -> None:
        job = self.jobs[(namespace, name)]
        for (ns, pod), body in self.pods.items():
            if ns == namespace and body["metadata"]["labels"].get("job-name") == name:
                self.logs[(ns, pod)] = script.log
                body["status"]["phase"] = "Succeeded" if script.outcome == "succeed" else "Failed"
        kind, reason, message = {
            "succeed": ("Complete", None, None),
            "fail": ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            "deadline": ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"),
        }[script.outcome]
        condition: dict[str, Any] = {
            "type": kind,
            "status": "True",
            "lastProbeTime": _now(),
            "lastTransitionTime": _now(),
        }
        if reason:
            condition |= {"reason": reason, "message": message}
        job["status"] = {
            "active": 0,
            "startTime": job["status"].get("startTime", _now()),
            "conditions": [condition],
            ("succeeded" if kind == "Complete" else "failed"): 1,
        }
        self._stamp(namespace, job)
        self._changed(namespace, "MODIFIED", job)

    def _delete_job(self, namespace: str, name: str, policy: str | None) -> dict[str, Any]:
        job = self.jobs[(namespace, name)]
        if policy == "Foreground":
            job["metadata"]["deletionTimestamp"] = _now()
            job["metadata"]["finalizers"] = ["foregroundDeletion"]
            self._stamp(namespace, job)
            self._changed(namespace, "MODIFIED", job)
        answer = copy.deepcopy(job)
        if name in self.stuck:
            job["metadata"].setdefault("deletionTimestamp", _now())
            return answer
        if policy != "Orphan":
            for key in [
                k
                for k, p in self.pods.items()
                if k[0] == namespace and p["metadata"]["labels"].get("job-name") == name
            ]:
                del self.pods[key]
        del self.jobs[(namespace, name)]
        self._stamp(namespace, job)
        self._changed(namespace, "DELETED", job)
        return answer

    # HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw else {}

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                fake.requests.append((method, parts.path))
                body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
                for pattern, handle in ((JOBS, self._jobs), (PODS, self._pods), (LEASES, self._leases)):
                    if match := pattern.match(parts.path):
                        handle(method, match["ns"], match["name"], query, body, match.groupdict())
                        return
                self._send(404, _status(404, "NotFound", f"the fake has no route for {parts.path}"))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def _jobs(
                self,
                method: str,
                ns: str,
                name: str | None,
                query: dict[str, str],
                body: Any,
                _: dict[str, Any],
            ) -> None:
                if name is None and method == "GET" and query.get("watch") == "true":
                    self._watch(ns, query)
                    return
                with fake._lock:
                    if name is None and method == "GET":
                        items = [
                            copy.deepcopy(j)
                            for (n, _), j in fake.jobs.items()
                            if n == ns
                            and _matches(j["metadata"].get("labels", {}), query.get("labelSelector"))
                        ]
                        self._send(
                            200,
                            {
                                "apiVersion": "batch/v1",
                                "kind": "JobList",
                                "metadata": {"resourceVersion": str(fake._rv)},
                                "items": items,
                            },
                        )
                    elif name is None and method == "POST":
                        fake.created.append(copy.deepcopy(body))
                        if fake.refuse_create is not None:
                            self._send(
                                fake.refuse_create,
                                _status(
                                    fake.refuse_create,
                                    "Forbidden",
                                    f'jobs.batch is forbidden: User "fake" cannot create resource '
                                    f'"jobs" in API group "batch" in the namespace "{ns}"',
                                ),
                            )
                        elif (ns, body["metadata"]["name"]) in fake.jobs:
                            self._send(
                                409,
                                _status(
                                    409,
                                    "AlreadyExists",
                                    f'jobs.batch "{body["metadata"]["name"]}" already exists',
                                ),
                            )
                        else:
                            script = fake.scripts.get(
                                body["spec"]["template"]["spec"]["containers"][0]["image"], Script()
                            )
                            self._send(201, fake._create_job(ns, copy.deepcopy(body), script))
                    elif name is None:
                        self._send(405, _status(405, "MethodNotAllowed", method))
                    elif (ns, name) not in fake.jobs:
                        self._send(404, _status(404, "NotFound", f'jobs.batch "{name}" not found'))
                    elif method == "GET":
                        self._send(200, fake.jobs[(ns, name)])
                    elif method == "PATCH":
                        job = fake.jobs[(ns, name)]
                        job["metadata"].setdefault("labels", {}).update(
                            body.get("metadata", {}).get("labels", {})
                        )
                        fake._stamp(ns, job)
                        fake._changed(ns, "MODIFIED", job)
                        self._send(200, job)
                    elif method == "DELETE":
                        policy = body.get("propagationPolicy") or query.get("propagationPolicy")
                        fake.deletions.append((ns, name, policy))
                        self._send(200, fake._delete_job(ns, name, policy))
                    else:
                        self._send(405, _status(405, "MethodNotAllowed", method))

            def _watch(self, ns: str, query: dict[str, str]) -> None:
                since = int(query.get("resourceVersion") or 0)
                field = query.get("fieldSelector", "")
                wanted = field.removeprefix("metadata.name=") if field.startswith("metadata.name=") else None
                give_up = time.monotonic() + float(query.get("timeoutSeconds") or 60)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in self._events_since(ns, since, wanted, give_up):
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _events_since(
                self, ns: str, since: int, wanted: str | None, give_up: float
            ) -> Iterator[dict[str, Any]]:
                with fake._lock:
                    if fake.expire_next_watch:
                        fake.expire_next_watch = False
                        yield {
                            "type": "ERROR",
                            "object": _status(
                                410, "Expired", f"too old resource version: {since} ({fake._rv})"
                            ),
                        }
                        return
                while True:
                    with fake._lock:
                        due = [
                            e
                            for e in fake._events
                            if e[0] > since
                            and e[1] == ns
                            and (wanted is None or e[3]["metadata"]["name"] == wanted)
                        ]
                        if not due:
                            left = give_up - time.monotonic()
                            if left <= 0 or not fake._thread.is_alive():
                                return
                            fake._lock.wait(timeout=min(left, 1.0))
                            continue
                    for rv, _, kind, obj in due:
                        since = rv
                        yield {"type": kind, "object": obj}

            def _pods(
                self,
                method: str,
                ns: str,
                name: str | None,
                query: dict[str, str],
                body: Any,
                groups: dict[str, Any],
            ) -> None:
                with fake._lock:
                    if name is None:
                        items = [
                            copy.deepcopy(p)
                            for (n, _), p in fake.pods.items()
                            if n == ns and _matches(p["metadata"]["labels"], query.get("labelSelector"))
                        ]
                        self._send(
                            200,
                            {
                                "apiVersion": "v1",
                                "kind": "PodList",
                                "metadata": {"resourceVersion": str(fake._rv)},
                                "items": items,
                            },
                        )
                    elif (ns, name) not in fake.pods:
                        self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
                    elif groups.get("log"):
                        lines = fake.logs.get((ns, name), "").splitlines(keepends=True)
                        tail = int(query.get("tailLines") or len(lines) or 1)
                        self._send(200, "".join(lines[-tail:]), "text/plain")
                    else:
                        self._send(200, fake.pods[(ns, name)])

            def _leases(
                self,
                method: str,
                ns: str,
                name: str | None,
                query: dict[str, str],
                body: Any,
                _: dict[str, Any],
            ) -> None:
                with fake._lock:
                    if name is None and method == "GET":
                        items = [
                            copy.deepcopy(lease)
                            for (n, _), lease in fake.leases.items()
                            if n == ns
                            and _matches(lease["metadata"].get("labels", {}), query.get("labelSelector"))
                        ]
                        self._send(
                            200,
                            {
                                "apiVersion": "coordination.k8s.io/v1",
                                "kind": "LeaseList",
                                "metadata": {"resourceVersion": str(fake._rv)},
                                "items": items,
                            },
                        )
                    elif name is None and method == "POST":
                        key = (ns, body["metadata"]["name"])
                        if key in fake.leases:
                            self._send(409, _status(409, "AlreadyExists", f"lease {key[1]} exists"))
                        else:
                            fake.leases[key] = fake._stamp(ns, body)
                            self._send(201, body)
                    elif name is None or (ns, name) not in fake.leases:
                        self._send(404, _status(404, "NotFound", f'leases "{name}" not found'))
                    elif method == "GET":
                        self._send(200, fake.leases[(ns, name)])
                    elif method == "PUT":
                        fake.leases[(ns, name)] = fake._stamp(ns, body)
                        self._send(200, body)
                    elif method == "DELETE":
                        del fake.leases[(ns, name)]
                        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                    else:
                        self._send(405, _status(405, "MethodNotAllowed", method))

        return Handler
