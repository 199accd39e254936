"""modelc's build as a typed API: one options object in, one result object out.

`modelc build` (cli.py) and the GitHub Action (actions.py) are two faces of this function: they
turn their own arguments into a `BuildRequest`, call `build_recipe`, and present the `BuildResult`
(the CLI as lines and an exit code, the Action as annotations on the recipe's lines, step outputs
and the job summary). Neither reads the other's text.

```python
from modelc_build.api import BuildRequest, build_recipe

result = build_recipe(BuildRequest(Path("recipes/yolo.yaml"), store="artifacts"))
if not result.passed:
    for miss in result.missed_gates:
        print(miss.target, miss.gate, miss.observed, miss.threshold, miss.line)
```
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelc_build.errors import GateFailed, ModelcError, RecipeError, RecipeProblem, UsageError

if TYPE_CHECKING:
    from modelc_build.host import HostFacts
    from modelc_build.progress import BuildLog
    from modelc_build.report import Report
    from modelc_build.stores import Store


@dataclass(frozen=True)
class BuildRequest:
    """Everything one build of one recipe takes (`modelc build --help` says what each does)."""

    recipe: Path
    store: str = "artifacts"  # a folder, file:// URL or oci://HOST/REPOSITORY
    cache: Path = Path(".modelc/cache")
    reports_dir: Path = Path(".modelc/failed")  # where a failed build's report is kept
    timeout: float | None = None  # seconds one registry operation may take
    force: bool = False
    targets: tuple[str, ...] = ()  # only these targets' steps; no verification, no release
    stage: str | None = None  # a fanned-out pipeline's job: prepare | target (with targets) | release
    expect_class: str | None = None  # the CPU class the job was routed to: another one fails
    job_records: Path | None = None  # a fanned-out pipeline's job records: earlier jobs' keys and CPU read, this job's written
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_memory: int | None = None
    share_steps: bool = False
    push: bool = False  # publish to a registry store
    compare_to: str | None = None  # latest | a version: compare the release with it
    skip_unavailable: bool = False
    signing_key: Path | None = None  # or PEM text in MODELC_SIGNING_KEY
    certificate_chain: tuple[Path, ...] = ()
    sigstore: bool = False
    require_cpus: bool = False  # an emulated check that cannot run fails the artifact (verify.require_cpus)


class Outcome(Enum):
    RELEASED = "released"  # a new version is stored
    IDENTICAL = "identical"  # the version is stored already with these files: nothing to do
    UP_TO_DATE = "up to date"  # and every step came from the cache
    TARGETS_BUILT = "targets built"  # --target: steps built, nothing verified or released
    FAILED = "failed"  # see `error`


@dataclass(frozen=True)
class MissedGate:
    """A gate an artifact missed, and the recipe line that set it (the gate's own line, or the
    target's where a default gate applied)."""

    target: str
    gate: str
    observed: Any
    threshold: Any
    source: str  # recipe | default | relaxed
    output: str | None = None
    setting: str | None = None  # where it was measured when not as deployed (an emulated CPU, e.g. Haswell)
    line: int | None = None
    column: int | None = None

    def words(self) -> str:
        where = f" on {self.setting}" if self.setting else ""
        output = f" on output '{self.output}'" if self.output else ""
        return f"{self.target}{where}: {self.gate}{output} {self.observed} vs threshold {self.threshold} ({self.source} gate)"


@dataclass(frozen=True)
class Comparison:
    """The release against another stored version of it."""

    against: str | None  # NAME:VERSION, None when there is none
    changes: list[dict[str, Any]]
    markdown: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"against": self.against, "changes": self.changes}
        found.update({key: value for key, value in (("markdown", self.markdown), ("note", self.note)) if value is not None})
        return found


@dataclass(frozen=True)
class BuildResult:
    recipe: Path
    outcome: Outcome
    name: str = ""
    version: str = ""
    error: ModelcError | None = None
    location: str | None = None  # where the release is stored
    manifest: dict[str, Any] | None = None
    report: Report | None = None
    report_folder: Path | None = None  # a local folder holding report.json, report.md and report.html
    missed_gates: tuple[MissedGate, ...] = ()
    problems: tuple[RecipeProblem, ...] = ()  # the recipe's own errors, located
    comparison: Comparison | None = None
    steps_run: int = 0
    steps_cached: int = 0
    targets: tuple[str, ...] = ()
    manifest_digest: str | None = None  # sha256:… of the stored release's manifest (an OCI manifest digest in a registry)
    step_seconds: float = 0.0  # the wall seconds of the steps this build ran, summed
    peak_mib: float | None = None  # the largest peak of a step process it ran

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    @property
    def passed(self) -> bool:
        return self.error is None

    @property
    def created(self) -> bool:
        """A new version was stored by this build."""
        return self.outcome is Outcome.RELEASED

    @property
    def released(self) -> bool:
        return self.outcome in (Outcome.RELEASED, Outcome.IDENTICAL, Outcome.UP_TO_DATE)


def build_recipe(request: BuildRequest, log: BuildLog | None = None, host: HostFacts | None = None) -> BuildResult:
    """Build, check and store one recipe; every user error comes back in the result, never raised
    (KeyboardInterrupt and bugs are). `host`: the machine's facts (default: probed here)."""
    from modelc_build.progress import BuildLog

    identity = _identity(request.recipe)
    try:
        return _build(request, log or BuildLog(), host, identity)
    except GateFailed as error:
        from modelc_build.report import Report

        report = error.report if isinstance(error.report, Report) else None
        return BuildResult(request.recipe, Outcome.FAILED, *identity, error=error, report=report,
                           report_folder=Path(str(error.report_folder)) if error.report_folder else None,
                           missed_gates=missed_gates(request.recipe, report) if report is not None else ())
    except RecipeError as error:
        return BuildResult(request.recipe, Outcome.FAILED, *identity, error=error, problems=tuple(error.problems))
    except ModelcError as error:  # a release whose gates passed and that could not be stored keeps its report
        from modelc_build.report import Report

        return BuildResult(request.recipe, Outcome.FAILED, *identity, error=error,
                           report=error.report if isinstance(error.report, Report) else None,
                           report_folder=Path(str(error.report_folder)) if error.report_folder else None)


def _build(request: BuildRequest, log: BuildLog, host: HostFacts | None, identity: tuple[str, str]) -> BuildResult:
    from modelc_build.build import BuildOptions, build
    from modelc_build.cache import Cache
    from modelc_build.plan import probe_host
    from modelc_build.recipe import load_recipe
    from modelc_build.signing import signer_from_options
    from modelc_build.stores import open_store

    signer = signer_from_options(request.signing_key, request.certificate_chain, request.sigstore)
    _check_publishing(request, signer is not None)
    cache = Cache(request.cache)
    cache.ensure_writable()
    recipe = load_recipe(request.recipe, passed_schema_memo=request.cache / "schema-passed")
    if request.require_cpus:
        from dataclasses import replace

        recipe = replace(recipe, verify=replace(recipe.verify, require_cpus=True))
    store = open_store(request.store, request.timeout)
    options = BuildOptions(request.reports_dir, force=request.force, share_steps=request.share_steps,
                           only_targets=request.targets, jobs=request.jobs, signer=signer, stage=request.stage,
                           expect_class=request.expect_class, job_records=request.job_records,
                           skip_unavailable=request.skip_unavailable, max_memory=request.max_memory)
    run = build(recipe, store, log, cache, options, host or probe_host())
    if run.released is None:
        return BuildResult(request.recipe, Outcome.TARGETS_BUILT, *identity, steps_run=run.steps_run,
                           steps_cached=run.steps_cached, targets=request.targets, step_seconds=run.step_seconds,
                           peak_mib=run.peak_mib)
    released = run.released
    outcome = Outcome.RELEASED if released.created else Outcome.UP_TO_DATE if run.steps_run == 0 else Outcome.IDENTICAL
    comparison = compared(store, recipe.name, recipe.version, released.report, request.compare_to) if request.compare_to else None
    folder = Path(released.location) if (Path(released.location) / "report.json").is_file() else None
    return BuildResult(request.recipe, outcome, recipe.name, recipe.version, location=released.location,
                       manifest=released.manifest, report=released.report, report_folder=folder, comparison=comparison,
                       steps_run=run.steps_run, steps_cached=run.steps_cached, manifest_digest=released.digest,
                       step_seconds=run.step_seconds, peak_mib=run.peak_mib)


def _check_publishing(request: BuildRequest, signed: bool) -> None:
    remote = request.store.startswith("oci://")
    if remote and not request.push and not request.targets and request.stage in (None, "release"):
        raise UsageError(f"--store {request.store} is a registry: add --push to publish there")
    if request.push and not remote:
        raise UsageError("--push publishes to a registry: give --store oci://HOST/REPOSITORY")
    if request.push and not signed and not request.targets:
        raise UsageError("--push publishes signed releases only: give --signing-key FILE (or MODELC_SIGNING_KEY), "
                         "or --sigstore in GitHub Actions; `modelc keygen` makes a key pair")


def _identity(recipe: Path) -> tuple[str, str]:
    """The recipe's name and version as written, for a result whose recipe did not load."""
    import yaml

    try:
        data = yaml.safe_load(recipe.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "", ""
    return (str(data.get("name", "")), str(data.get("version", ""))) if isinstance(data, dict) else ("", "")


def compared(store: Store, name: str, version: str, report: Report, against: str) -> Comparison:
    """The new release against another version of it in the store (`latest`: the newest older one)."""
    from modelc_build.compare import changes, markdown, previous_version, report_of
    from modelc_build.report import to_json

    other = previous_version(store, name, version) if against == "latest" else against
    if other is None:
        return Comparison(None, [], note=f"no older version of {name} in the store to compare with")
    before, after = report_of(store, name, other), to_json(report)
    return Comparison(f"{name}:{other}", [c.to_json() for c in changes(before, after)], markdown(before, after))


def missed_gates(recipe_path: Path, report: Report) -> tuple[MissedGate, ...]:
    """Every missed gate of a report, located on the recipe line that set it."""
    import yaml

    from modelc_build.recipe import key_locations
    from modelc_build.report import to_json

    data = yaml.safe_load(recipe_path.read_text()) or {}
    marks = key_locations(recipe_path)
    found = []
    for artifact in to_json(report).get("artifacts", []):
        checks = [(g, None) for g in artifact.get("gates") or []]
        checks += [(g, m.get("emulate") or m.get("setting")) for m in artifact.get("measurements") or [] if m.get("gated")
                   for g in m.get("gates") or []]
        for gate, setting in checks:
            if gate["passed"]:
                continue
            line, column = gate_location(marks, data, artifact["target"], gate["gate"]) or (None, None)
            found.append(MissedGate(artifact["target"], gate["gate"], gate["observed"], gate["threshold"],
                                    gate.get("source", "recipe"), gate.get("output"), setting, line, column))
    return tuple(found)


def gate_location(marks: dict[tuple[Any, ...], tuple[int, int]], recipe: dict[str, Any], target: str,
                  gate: str) -> tuple[int, int] | None:
    """The line of the gate that was missed: gates.<precision>.<gate>, gates.default.<gate>, or —
    for a default gate the recipe does not write — the target's entry."""
    backend, _, precision = target.rpartition("-")
    for section in (precision, "default"):
        if ("gates", section, gate) in marks:
            return marks[("gates", section, gate)]
    for index, entry in enumerate(recipe.get("targets") or []):
        if entry.get("backend") == backend and precision in (entry.get("precisions") or []):
            return marks.get(("targets", index, "backend")) or marks.get(("targets",))
    return marks.get(("targets",))
