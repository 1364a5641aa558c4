"""deploy/ rendered by ``kubectl kustomize`` (offline), and the facts the tests check about it:
objects by kind and name, and what a container really gets in its environment."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

Obj = dict[str, Any]


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(folder: Path) -> list[Obj]:
    """The objects ``kubectl kustomize folder`` prints. Its deprecation warnings (newer
    kustomize, on fields kept for kustomize 2.0) go to stderr and are ignored."""
    binary = kubectl()
    assert binary is not None
    done = subprocess.run(
        [binary, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {folder} failed:\n{done.stderr}"
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def rendered_folders() -> list[Path]:
    """The base and every overlay: a new overlay is checked without being listed here."""
    return [DEPLOY / "base", *sorted(p for p in (DEPLOY / "overlays").iterdir() if p.is_dir())]


@dataclass(frozen=True)
class Rendering:
    folder: Path
    objects: list[Obj]

    @property
    def name(self) -> str:
        return str(self.folder.relative_to(DEPLOY))

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> Obj | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def pod_specs(self) -> list[tuple[Obj, Obj]]:
        """(Deployment, its pod spec) for every Deployment."""
        return [(d, d["spec"]["template"]["spec"]) for d in self.of_kind("Deployment")]

    def containers(self) -> list[tuple[Obj, Obj]]:
        """(Deployment, container) for every container of every Deployment."""
        return [(d, c) for d, spec in self.pod_specs() for c in spec["containers"]]

    def source_data(self, kind: str, name: str) -> dict[str, str]:
        """The text a ConfigMap or Secret holds (a Secret's data decoded)."""
        obj = self.named(kind, name)
        assert obj is not None, f"{kind} {name} is referenced but not rendered"
        if kind == "Secret":
            decoded = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            return decoded | dict(obj.get("stringData") or {})
        return dict(obj.get("data") or {})

    def environment(self, container: Obj) -> dict[str, str | None]:
        """The container's variables as the kubelet sets them: envFrom sources in order, then
        env, which wins. A value from a field or key reference is None (known only at run time)."""
        found: dict[str, str | None] = {}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                found |= self.source_data("ConfigMap", source["configMapRef"]["name"])
            if "secretRef" in source:
                found |= self.source_data("Secret", source["secretRef"]["name"])
        for variable in container.get("env") or []:
            found[variable["name"]] = variable.get("value")
        return found


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
