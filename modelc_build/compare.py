"""Two releases side by side: what a change did to accuracy, latency and size, artifact by artifact.

`modelc diff NAME:VERSION NAME:VERSION`, `modelc build --compare-to latest` and the pull-request
comment of the GitHub Action all print this. It reads each release's `report.json` (signed with the
release; here it is read, not re-verified: a comparison informs a reviewer, a pull deploys).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelc_build.errors import StoreError
from modelc_build.stores import Store, version_order

MARKER = "<!-- modelc-report -->"  # finds the one pull-request comment modelc keeps up to date


@dataclass(frozen=True)
class Change:
    """One figure of one artifact in two releases."""

    target: str
    figure: str  # metric | cosine | latency_ms | size_bytes
    before: float | None
    after: float | None
    higher_is_better: bool
    beyond_gate: bool = False  # the new value misses the gate the old one met

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before

    @property
    def worse(self) -> bool:
        delta = self.delta
        return delta is not None and ((delta < 0) if self.higher_is_better else (delta > 0))

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "figure": self.figure, "before": self.before, "after": self.after,
                "delta": self.delta, "worse": self.worse, "beyond_gate": self.beyond_gate}


def report_of(store: Store, name: str, version: str) -> dict[str, Any]:
    """A stored release's report.json."""
    with tempfile.TemporaryDirectory(prefix="modelc-report-") as scratch:
        folder = Path(scratch) / "release"
        store.fetch(name, version, folder, lambda manifest: {"report.json"})
        report: dict[str, Any] = json.loads((folder / "report.json").read_text())
        return report


def older_versions(store: Store, name: str, version: str | None = None) -> list[str]:
    """The stored versions of `name` released before `version` (every other one where `version`
    is None or no PEP 440 version), oldest first."""
    versions = [v for n, v in store.list(name) if n == name and v != version]
    if version is not None:
        from packaging.version import InvalidVersion, Version

        try:
            current = Version(version)
            versions = [v for v in versions if Version(v) < current]
        except InvalidVersion:
            pass
    return version_order(versions)


def previous_version(store: Store, name: str, version: str | None = None) -> str | None:
    """The latest stored version of `name` before `version` (PEP 440 order), or None."""
    try:
        ordered = older_versions(store, name, version)
    except StoreError:
        return None
    return ordered[-1] if ordered else None


def _worst_cosine(artifact: dict[str, Any]) -> float | None:
    cosines = [o["cosine"] for o in artifact.get("outputs") or [] if o.get("cosine") is not None]
    return min(cosines) if cosines else None


def _gate_missed(artifact: dict[str, Any], gate: str) -> bool:
    return any(g["gate"] == gate and not g["passed"] for g in artifact.get("gates") or [])


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Per artifact present in either report: task metric, worst output cosine, p50 latency, size."""
    old = {a["target"]: a for a in before.get("artifacts", [])}
    new = {a["target"]: a for a in after.get("artifacts", [])}
    found = []
    for target in sorted(set(old) | set(new)):
        a, b = old.get(target, {}), new.get(target, {})
        metric_a, metric_b = (a.get("task_metric") or {}), (b.get("task_metric") or {})
        higher = bool(metric_b.get("higher_is_better", metric_a.get("higher_is_better", True)))
        drop_missed = _gate_missed(b, "max_metric_drop") or _gate_missed(b, "min_metric")
        found += [
            Change(target, "metric", metric_a.get("value"), metric_b.get("value"), higher,
                   drop_missed and not (_gate_missed(a, "max_metric_drop") or _gate_missed(a, "min_metric"))),
            Change(target, "cosine", _worst_cosine(a), _worst_cosine(b), True,
                   _gate_missed(b, "min_cosine") and not _gate_missed(a, "min_cosine")),
            Change(target, "latency_ms", a.get("latency_ms"), b.get("latency_ms"), False),
            Change(target, "size_bytes", a.get("size_bytes"), b.get("size_bytes"), False),
        ]
    return found


def _cell(change: Change) -> str:
    def shown(value: float | None) -> str:
        if value is None:
            return "—"
        if change.figure == "size_bytes":
            return f"{value / 2**20:.2f} MiB"
        if change.figure == "cosine":
            return f"{value:.6f}"
        return f"{value:.2f}" + (" ms" if change.figure == "latency_ms" else "")

    delta = change.delta
    if delta is None:
        text = f"{shown(change.before)} → {shown(change.after)}"
    else:
        arrow = "▲" if delta > 0 else "▼" if delta < 0 else "="
        size = abs(delta) / 2**20 if change.figure == "size_bytes" else abs(delta)
        unit = " MiB" if change.figure == "size_bytes" else ""
        digits = 6 if change.figure == "cosine" else 2
        text = f"{shown(change.after)} ({arrow} {size:.{digits}f}{unit})" if delta else f"{shown(change.after)} (=)"
        if change.worse:
            text += " ⚠️"
    return f"**{text}**" if change.beyond_gate else text


def markdown(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A table a reviewer reads: each artifact's figures now, with the change against the older release."""
    head = (f"{MARKER}\n### modelc: {after.get('name')} {after.get('version')} against {before.get('name')} "
            f"{before.get('version')}\n\n{'✅ every gate passed' if after.get('passed') else '❌ gates missed'}; a "
            "change beyond a gate is in bold, a change for the worse marked ⚠️.\n\n"
            "| artifact | metric % | lowest output cosine | latency p50 | size |\n|---|---:|---:|---:|---:|\n")
    by_target: dict[str, dict[str, Change]] = {}
    for change in changes(before, after):
        by_target.setdefault(change.target, {})[change.figure] = change
    rows = [f"| `{target}` | " + " | ".join(_cell(figures[f]) for f in ("metric", "cosine", "latency_ms", "size_bytes")) + " |"
            for target, figures in by_target.items()]
    return head + "\n".join(rows) + "\n"
