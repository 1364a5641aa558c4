"""deploy/ renders, and what it renders is what a cluster would accept and what our processes
read: every object against the Kubernetes API's own models (the official client's, which forbid
unknown fields), KEDA's ScaledObject by hand, and the references between objects, probes, CLI
arguments and settings that no schema sees.

``kubectl kustomize`` renders offline; CI installs kubectl (.ci/run). Without it here, skipped."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from pydantic import BaseModel, ValidationError

from taskbroker.settings import Settings
from tests.deploy.cli_args import check_accepted
from tests.deploy.rendering import (
    DEPLOY,
    ROOT,
    Obj,
    Rendering,
    kubectl,
    labels_match,
    render,
    rendered_folders,
)

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed (.ci/run installs it)")

MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("v1", "Namespace"): k8s.V1Namespace,
    ("v1", "ServiceAccount"): k8s.V1ServiceAccount,
    ("v1", "ConfigMap"): k8s.V1ConfigMap,
    ("v1", "Secret"): k8s.V1Secret,
    ("v1", "Service"): k8s.V1Service,
    ("apps/v1", "Deployment"): k8s.V1Deployment,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.V2HorizontalPodAutoscaler,
    ("policy/v1", "PodDisruptionBudget"): k8s.V1PodDisruptionBudget,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.V1Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.V1RoleBinding,
}
KEDA = ("keda.sh/v1alpha1", "ScaledObject")
"""A custom resource: no model in the client, so its fields are checked one by one below."""


SETTINGS = {f"TASKBROKER_{name.upper()}" for name in Settings.model_fields}
WORKER_CANCEL_WAIT = 10
"""Seconds a stopping worker waits for cancelled tasks after its shutdown grace
(scheduler_worker/consumer.py, ``_drain``): its pod must be given at least grace plus this."""


@pytest.fixture(scope="module", params=rendered_folders(), ids=lambda p: str(p.relative_to(DEPLOY)))
def rendering(request: pytest.FixtureRequest) -> Rendering:
    return Rendering(request.param, render(request.param))


def validate(obj: Obj) -> None:
    """Raise ValidationError unless ``obj`` is a valid object of its kind: no unknown field, and
    strictly typed (a port as "8000" is refused, as the API server refuses it)."""
    model = MODELS.get((obj["apiVersion"], obj["kind"]))
    assert model is not None, f"no model for {obj['apiVersion']} {obj['kind']}: add it to MODELS"
    model.model_validate(obj, strict=True)


def test_every_object_is_valid_for_the_kubernetes_api(rendering: Rendering) -> None:
    for obj in rendering.objects:
        if (obj["apiVersion"], obj["kind"]) == KEDA:
            continue
        try:
            validate(obj)
        except ValidationError as exc:
            pytest.fail(f"{rendering.name}: {obj['kind']} {obj['metadata']['name']}: {exc}")


def test_a_misspelled_or_mistyped_field_is_rejected() -> None:
    deployment = next(o for o in render(DEPLOY / "base") if o["kind"] == "Deployment")
    misspelled = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(ValidationError, match="replica"):
        validate(misspelled)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    mistyped = {**containers[0], "ports": [{"containerPort": "8000"}]}
    spec = {**deployment["spec"]["template"]["spec"], "containers": [mistyped]}
    template = {**deployment["spec"]["template"], "spec": spec}
    with pytest.raises(ValidationError, match="containerPort"):
        validate({**deployment, "spec": {**deployment["spec"], "template": template}})


def _scheduler_of(deployment: Obj) -> str:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return str(args[args.index("--scheduler") + 1])


def _concurrency_of(deployment: Obj) -> int:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return int(args[args.index("--concurrency") + 1])


def test_keda_scaled_objects_scale_a_worker_on_its_waiting_and_running_tasks_per_slot(
    rendering: Rendering,
) -> None:
    for scaled in rendering.of_kind("ScaledObject"):
        name = scaled["metadata"]["name"]
        assert scaled["apiVersion"] == "keda.sh/v1alpha1", name
        assert set(scaled) <= {"apiVersion", "kind", "metadata", "spec"}, name
        spec = scaled["spec"]
        target = rendering.named("Deployment", spec["scaleTargetRef"]["name"])
        assert target is not None, f"{name} scales a Deployment that is not rendered"
        assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert "replicas" not in target["spec"], f"{name}: the HPA owns the replicas, the Deployment must not"
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus", name
        metadata = trigger["metadata"]
        assert set(metadata) >= {"serverAddress", "query", "threshold"}, name
        assert metadata["serverAddress"].startswith(("http://", "https://")), name
        # Waiting + running tasks of this worker's own scheduler (not the queue length), per slot.
        scheduler = _scheduler_of(target)
        assert metadata["query"] == f'max(taskbroker_live_tasks{{scheduler="{scheduler}"}})', name
        assert int(metadata["threshold"]) == _concurrency_of(target), name
        assert target["metadata"]["labels"]["taskbroker.io/scheduler"] == scheduler


def _deployments(rendering: Rendering) -> list[tuple[str, Obj]]:
    return [(d["metadata"]["name"], d) for d in rendering.of_kind("Deployment")]


def test_every_selector_picks_the_pods_of_exactly_one_deployment(rendering: Rendering) -> None:
    pods = {d["metadata"]["name"]: spec for d, spec in rendering.pod_specs()}
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in _deployments(rendering)}
    for name, deployment in _deployments(rendering):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert [n for n, lab in labels.items() if labels_match(selector, lab)] == [name]
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in rendering.of_kind(kind):
            selector = obj["spec"]["selector"]
            selector = selector["matchLabels"] if kind == "PodDisruptionBudget" else selector
            selected = [n for n, lab in labels.items() if labels_match(selector, lab)]
            assert len(selected) == 1, f"{kind} {obj['metadata']['name']} selects {selected}"
            if kind == "Service":
                ports = {p.get("name") for c in pods[selected[0]]["containers"] for p in c["ports"]}
                for port in obj["spec"]["ports"]:
                    assert port["targetPort"] in ports, f"Service {obj['metadata']['name']}: {port}"


def test_every_deployment_has_a_disruption_budget_requests_and_two_replicas(rendering: Rendering) -> None:
    autoscaled = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
        for h in rendering.of_kind("HorizontalPodAutoscaler")
    } | {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"]["minReplicaCount"]
        for s in rendering.of_kind("ScaledObject")
    }
    budgets = [b["spec"]["selector"]["matchLabels"] for b in rendering.of_kind("PodDisruptionBudget")]
    for deployment, spec in rendering.pod_specs():
        name = deployment["metadata"]["name"]
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(labels_match(b, template_labels) for b in budgets), f"{name} has no PodDisruptionBudget"
        for container in spec["containers"]:
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        if name in autoscaled:
            assert "replicas" not in deployment["spec"], f"{name}: its autoscaler owns the replicas"
            if deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "api":
                assert autoscaled[name] >= 2, f"{name}: one API pod is no API during its restart"
        else:
            assert deployment["spec"]["replicas"] >= 2, name
    components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for _, d in _deployments(rendering)}
    assert {"api", "timeout-daemon", "schedule-firer"} <= components
    assert rendering.name == "base" or "worker" in components
    [api_autoscaler] = rendering.of_kind("HorizontalPodAutoscaler")
    assert [m["resource"]["name"] for m in api_autoscaler["spec"]["metrics"]] == ["cpu"]


def test_probes_ask_the_health_endpoints_on_a_declared_port(rendering: Rendering) -> None:
    for deployment, container in rendering.containers():
        where = f"{deployment['metadata']['name']}/{container['name']}"
        declared = {p["containerPort"] for p in container["ports"]} | {p["name"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert probe in container, f"{where} has no {probe}"
            assert container[probe]["httpGet"]["path"] == path, where
            assert container[probe]["httpGet"]["port"] in declared, f"{where}: {probe} on an undeclared port"
        args = container["args"]
        if "--metrics-port" in args:  # the health endpoints of a worker, daemon or firer
            assert int(args[args.index("--metrics-port") + 1]) in declared, where
            # The kubelet probes the pod's IP, not its loopback.
            assert args[args.index("--metrics-host") + 1] == "0.0.0.0", where


def test_every_variable_is_a_taskbroker_setting_or_used_by_the_command_line(rendering: Rendering) -> None:
    for deployment, container in rendering.containers():
        where = f"{deployment['metadata']['name']}/{container['name']}"
        environment = rendering.environment(container)
        referenced = set(re.findall(r"\$\((\w+)\)", " ".join(container["args"])))
        for name in environment:
            if name.startswith("TASKBROKER_"):
                assert name in SETTINGS, f"{where}: {name} is no setting"
            else:
                assert name in referenced, f"{where}: {name} is set but no argument uses $({name})"
        assert referenced <= set(environment), f"{where}: arguments use unset {referenced - set(environment)}"


def test_every_setting_the_pods_are_given_is_valid(rendering: Rendering) -> None:
    """Their values parse as the processes will parse them (the admin token file is not here:
    test_the_base_admin_token_makes_the_api_refuse_to_start reads it)."""
    for deployment, container in rendering.containers():
        values = {
            name.removeprefix("TASKBROKER_").lower(): value
            for name, value in rendering.environment(container).items()
            if name in SETTINGS and name != "TASKBROKER_ADMIN_TOKEN_FILE" and value is not None
        }
        try:
            Settings.model_validate(values)
        except ValidationError as exc:
            pytest.fail(f"{rendering.name}: {deployment['metadata']['name']}: {exc}")


def test_every_referenced_object_is_rendered(rendering: Rendering) -> None:
    for deployment, spec in rendering.pod_specs():
        name = deployment["metadata"]["name"]
        assert rendering.named("ServiceAccount", spec["serviceAccountName"]) is not None, name
        for container in spec["containers"]:
            rendering.environment(container)  # each envFrom source exists (asserts)
            mounts = {m["name"] for m in container.get("volumeMounts") or []}
            assert mounts <= {v["name"] for v in spec.get("volumes") or []}, name
        for volume in spec.get("volumes") or []:
            if "secret" in volume:
                assert rendering.named("Secret", volume["secret"]["secretName"]) is not None, name
    for autoscaler in rendering.of_kind("HorizontalPodAutoscaler"):
        assert rendering.named("Deployment", autoscaler["spec"]["scaleTargetRef"]["name"]) is not None
    for binding in rendering.of_kind("RoleBinding"):
        assert rendering.named(binding["roleRef"]["kind"], binding["roleRef"]["name"]) is not None
        for subject in binding["subjects"]:
            assert rendering.named("ServiceAccount", subject["name"]) is not None
            assert subject["namespace"] == binding["metadata"]["namespace"]


def test_the_kubernetes_runtime_has_a_role_for_each_call_it_makes(rendering: Rendering) -> None:
    role = rendering.named("Role", "taskbroker-kubernetes-runtime")
    assert role is not None
    allowed = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # What runtimes/kubernetes/cluster.py calls: resource, verbs.
    calls = {
        ("batch", "jobs"): ["create", "get", "list", "watch", "patch", "delete"],
        ("", "pods"): ["list"],
        ("", "pods/log"): ["get"],
        ("coordination.k8s.io", "leases"): ["create", "update", "list", "delete"],
    }
    assert {(g, r, v) for (g, r), verbs in calls.items() for v in verbs} <= allowed
    for _, spec in rendering.pod_specs():
        account = rendering.named("ServiceAccount", spec["serviceAccountName"])
        assert account is not None
        if account["metadata"]["name"] != "taskbroker-kubernetes-runtime":
            assert account.get("automountServiceAccountToken") is False, (
                "only the runtime's workers hold a token"
            )


def test_workers_are_given_their_shutdown_grace_and_the_cancel_wait_to_stop(rendering: Rendering) -> None:
    for deployment, container in rendering.containers():
        if container["args"][0] != "worker":
            continue
        configured = rendering.environment(container).get("TASKBROKER_SHUTDOWN_GRACE")
        grace = float(configured) if configured else Settings().shutdown_grace
        given = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        name = deployment["metadata"]["name"]
        assert given >= grace + WORKER_CANCEL_WAIT, f"{name}: {given} s for a grace of {grace} s"


def test_every_container_runs_the_one_image_with_a_command_the_cli_accepts(rendering: Rendering) -> None:
    images = {container["image"] for _, container in rendering.containers()}
    assert len(images) == 1, f"{rendering.name} runs several images: {images}"
    assert re.fullmatch(r"([^/]+/)*taskbroker:[\w.-]+", images.pop())
    for _, container in rendering.containers():
        check_accepted(container["args"])


def test_the_base_admin_token_makes_the_api_refuse_to_start(tmp_path: Path) -> None:
    base = Rendering(DEPLOY / "base", render(DEPLOY / "base"))
    [api] = [c for _, c in base.containers() if c["args"][0] == "api"]
    [secret] = [s for s in base.of_kind("Secret") if "admin-token" in (s.get("data") or {})]
    token_file = tmp_path / "admin-token"
    token_file.write_bytes(base64.b64decode(secret["data"]["admin-token"]))
    path = api["env"][0]["value"] if api["env"][0]["name"] == "TASKBROKER_ADMIN_TOKEN_FILE" else None
    assert path == "/run/secrets/taskbroker/admin-token"
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(admin_token_file=token_file)


def test_an_overlay_that_replaces_the_secrets_from_files_reaches_the_pods(tmp_path: Path) -> None:
    """What docs/kubernetes.md tells an operator to do, done: the files' text ends up in the
    Secrets, under the hashed names the pods refer to."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    site = tmp_path / "deploy" / "overlays" / "site"
    shutil.copytree(DEPLOY / "overlays" / "default", site)
    token = "t" * 40
    (site / "admin-token").write_text(token)
    (site / "connections.env").write_text("TASKBROKER_AMQP_URL=amqp://u:p@rabbit-a:5672/%2F\n")
    with (site / "kustomization.yaml").open("a") as kustomization:
        kustomization.write(
            "\nsecretGenerator:\n"
            "  - name: taskbroker-admin-token\n    behavior: replace\n    files: [admin-token]\n"
            "  - name: taskbroker-connections\n    behavior: replace\n    envs: [connections.env]\n"
        )
    site_render = Rendering(site, render(site))
    [api] = [c for _, c in site_render.containers() if c["args"][0] == "api"]
    assert site_render.environment(api)["TASKBROKER_AMQP_URL"] == "amqp://u:p@rabbit-a:5672/%2F"
    [deployment] = [d for d, c in site_render.containers() if c is api]
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "admin-token"]
    assert site_render.source_data("Secret", volume["secret"]["secretName"]) == {"admin-token": token}


def test_every_value_of_the_base_is_documented() -> None:
    page = (ROOT / "docs" / "kubernetes.md").read_text()
    base = Rendering(DEPLOY / "base", render(DEPLOY / "base"))
    names: set[str] = set()
    for obj in base.of_kind("ConfigMap") + base.of_kind("Secret"):
        names |= set(obj.get("data") or {})
    names |= {str(p.relative_to(ROOT)) for p in [DEPLOY / "base", *DEPLOY.glob("*/*")] if p.is_dir()}
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"docs/kubernetes.md does not mention {missing}"


def _dockerfile_sources() -> set[str]:
    """What the Dockerfile's COPY lines copy (each word but the destination)."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return {source for line in lines if line.startswith("COPY ") for source in line.split()[1:-1]}


def test_the_image_the_manifests_run_copies_every_process_folder() -> None:
    copied = _dockerfile_sources()
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    linked = {p.name for p in (ROOT / "taskbroker").iterdir() if p.is_symlink()}
    assert linked <= copied, f"the image lacks {sorted(linked - copied)}"


KUSTOMIZE_2_FIELDS = {
    "apiVersion", "kind", "namespace", "namePrefix", "nameSuffix", "commonLabels",
    "commonAnnotations", "resources", "bases", "configMapGenerator", "secretGenerator",
    "generatorOptions", "patchesStrategicMerge", "patchesJson6902", "images", "vars",
    "configurations", "crds",
}  # fmt: skip
"""What kustomize 2.0 (kubectl 1.20, Debian's kubernetes-client, which .ci/run installs where
kubectl is missing) reads: it refuses `labels`, inline `patches`, components, replacements."""


@pytest.mark.parametrize(
    "kustomization",
    sorted(DEPLOY.rglob("kustomization.yaml")),
    ids=lambda p: str(p.parent.relative_to(DEPLOY)),
)
def test_every_kustomization_renders_with_kustomize_2_too(kustomization: Path) -> None:
    fields = set(yaml.safe_load(kustomization.read_text()))
    assert fields <= KUSTOMIZE_2_FIELDS, f"kustomize 2.0 refuses {sorted(fields - KUSTOMIZE_2_FIELDS)}"
    for patch in yaml.safe_load(kustomization.read_text()).get("patchesJson6902") or []:
        assert "path" in patch, "kustomize 2.0 reads a JSON patch from a file only"
