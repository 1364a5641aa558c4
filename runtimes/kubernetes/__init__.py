"""The Kubernetes runtime: one ``batch/v1`` Job per task attempt (see runtime.py)."""

from taskbroker.runtimes.kubernetes.runtime import KubernetesRuntime

__all__ = ["KubernetesRuntime"]
