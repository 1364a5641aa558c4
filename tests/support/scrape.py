"""Read a Prometheus scrape the way Prometheus does: with prometheus_client's own text parser."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Scrape:
    """One scrape's samples, looked up by sample name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = [sample for family in self.families.values() for sample in family.samples]

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` whose labels include ``labels``; None if absent. Fails if several
        samples match, so a test never reads an arbitrary one."""
        found = [s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()]
        assert len(found) <= 1, f"{len(found)} samples of {name} match {labels}"
        return found[0] if found else None

    def label_values(self) -> set[str]:
        return {value for sample in self.samples for value in sample.labels.values()}

    def label_sets(self, name: str) -> list[dict[str, str]]:
        return [dict(s.labels) for s in self.samples if s.name == name]

    def assert_labels_bounded(self) -> None:
        """No task id (nor any UUID) in any label: label sets must not grow with tasks."""
        leaked = {value for value in self.label_values() if UUID_PATTERN.search(value)}
        assert not leaked, f"task ids in metric labels: {sorted(leaked)[:5]}"
