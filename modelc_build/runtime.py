"""Deploy code's side of a release: load an artifact with the settings it was judged with, and
prove it on this machine with the release's golden set.

```python
from modelc_build import runtime

with runtime.load("deploy/", "openvino-int8", check=True) as model:   # check: the golden set, once
    outputs = model.infer({"images": batch})
```

`load` reads the release's manifest, checks the artifact's files against the sha256 it lists,
and compiles the artifact with the manifest's `runtime_config` (OpenVINO's inference precision…),
so deploy code never re-types a setting. The signature is `modelc verify`'s job (or `pull`'s); pass
`trust` to have `load` check it too. Needs the artifact's runtime and NumPy, never torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from modelc_build.errors import BackendUnavailable, GateFailed, InputError, VerificationError

if TYPE_CHECKING:
    import numpy as np

    from modelc_build.accuracy import OutputMetrics
    from modelc_build.backends import Runner
    from modelc_build.recipe_types import TensorSpec
    from modelc_build.signing import Trust



def runnable(backend: str) -> bool:
    """Whether modelc runs artifacts of `backend` (its table says; an unknown backend: no)."""
    from modelc_build.backends import backend_names, capabilities

    return backend in backend_names() and capabilities(backend).runnable


@dataclass(frozen=True)
class GoldenResult:
    """One artifact's golden-set check on this machine."""

    target: str
    cpu: str
    cpu_class: str
    samples: int
    outputs: list[OutputMetrics]
    tolerances: dict[str, dict[str, float]]  # per output
    misses: list[str]
    runtime: dict[str, str] = field(default_factory=dict)  # what the runtime really ran with

    @property
    def passed(self) -> bool:
        return not self.misses

    def describe(self) -> str:
        worst = min((m.cosine for m in self.outputs), default=1.0)
        verdict = "pass" if self.passed else "FAIL: " + "; ".join(self.misses)
        settings = ", ".join(f"{k} {v}" for k, v in self.runtime.items())
        return (f"{self.target} on {self.cpu} ({self.cpu_class}{', ' + settings if settings else ''}): "
                f"{self.samples} golden samples, lowest cosine {worst:.6f} [{verdict}]")


class Deployed:
    """A loaded artifact: `infer(feed)` as the runtime runs it with the release's settings."""

    def __init__(self, folder: Path, target: str, runner: Runner, config: dict[str, str]) -> None:
        self.folder = folder
        self.target = target
        self.runner = runner
        self.config = config

    def __enter__(self) -> Deployed:
        self.runner.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.runner.__exit__(kind, value, tb)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.infer(feed)

    def check(self) -> GoldenResult:
        """Run the golden set on this machine; GateFailed (exit 4) naming the artifact and CPU when
        it misses the tolerances its gates implied."""
        result = golden_check(self.folder, self.target, self.runner)
        if not result.passed:
            raise GateFailed(f"{result.describe()}: this artifact does not compute what was judged at build time "
                             "on this machine; do not deploy it here")
        return result


def artifact_entry(manifest: dict[str, Any], target: str) -> dict[str, Any]:
    artifacts = {a.get("target"): a for a in manifest.get("artifacts", []) if isinstance(a, dict)}
    if target not in artifacts:
        raise InputError(f"target {target!r}: the release holds {', '.join(sorted(str(t) for t in artifacts))}")
    return artifacts[target]


def load(folder: Path | str, target: str, check: bool = False, trust: Trust | None = None) -> Deployed:
    """The artifact `target` of the release in `folder`, ready to enter (`with ... as model:`)."""
    from modelc_build.manifest import read_manifest, safe_relative_path, sha256_file

    folder = Path(folder)
    if trust is not None:
        from modelc_build.deploy import verify_folder

        verify_folder(folder, trust)
    manifest = read_manifest(folder)
    entry = artifact_entry(manifest, target)
    backend = str(entry.get("backend"))
    if not runnable(backend):
        raise BackendUnavailable(f"{target}: modelc does not run {backend} artifacts; a {backend} artifact is "
                                 "loaded by its own runtime")
    gpu = _capabilities(backend).gpu
    if gpu:
        _gpu_here(target, entry)
    listed = {f["path"]: f["sha256"] for f in manifest.get("files", []) if isinstance(f, dict)}
    files = []
    for name in entry.get("files", []):
        path = folder / safe_relative_path(name)
        if gpu and not path.exists() and name.endswith((".engine", ".onnx")):
            continue  # a pull for one GPU (--gpu) brings that generation's engine only
        if not path.is_file() or sha256_file(path) != listed.get(name):
            raise VerificationError(f"{folder}: {name} is missing or differs from the sha256 the manifest lists: refused")
        files.append(path)
    inputs, outputs = model_interface(manifest)
    config = dict(entry.get("runtime_config") or {})
    runner = _backend(backend).runner(files, inputs, outputs, config)
    deployed = Deployed(folder, target, runner, config)
    if check:
        with deployed:
            deployed.check()
    return deployed


def _gpu_here(target: str, entry: dict[str, Any]) -> str:
    """The local GPU an engine of this artifact runs on, or BackendUnavailable saying why none does."""
    from modelc_build.gpus import not_run_reason, runnable_here

    built = tuple(e["gpu"] for e in (entry.get("engines") or {}).get("engines", []))
    here = runnable_here(built)
    if here is None:
        raise BackendUnavailable(f"{target}: engines for {', '.join(built) or 'no GPU'}; {not_run_reason(built)}")
    return here


def model_interface(manifest: dict[str, Any]) -> tuple[tuple[TensorSpec, ...], tuple[str, ...]]:
    """The model's inputs (names, shapes, dtypes, how they are fed) and outputs, as the manifest records them."""
    from modelc_build.recipe_types import TensorSpec

    model = manifest.get("model")
    if not isinstance(model, dict):
        raise InputError("the manifest records no model inputs and outputs (a release of an older modelc): rebuild it")
    return tuple(TensorSpec.from_json(spec) for spec in model["inputs"]), tuple(model["outputs"])


def _capabilities(backend: str) -> Any:
    from modelc_build.backends import capabilities

    return capabilities(backend)


def _backend(name: str) -> Any:
    """The backend that runs `name` artifacts, or BackendUnavailable naming the deploy extra."""
    import importlib.util

    from modelc_build.backends import get_backend

    table = _capabilities(name)
    missing = [module for module in table.runtime_modules if importlib.util.find_spec(module) is None]
    if missing:
        raise BackendUnavailable(f"the {name} runtime is not installed here ({', '.join(missing)} missing): "
                                 f"pip install 'modelc-build[{table.deploy_extra}]'")
    return get_backend(name)


def _golden(folder: Path) -> Any:
    from modelc_build.golden import DESCRIPTION, FOLDER, GoldenSet

    return GoldenSet.load(folder / FOLDER) if (folder / FOLDER / DESCRIPTION).is_file() else None


def golden_check(folder: Path, target: str, runner: Runner) -> GoldenResult:
    """`runner` (entered) on the golden set, against the tolerances the release lists for `target`."""
    import json

    from modelc_build.golden import FOLDER, TOLERANCES, measure, misses
    from modelc_build.host import cpu_info

    golden = _golden(folder)
    if golden is None or not golden.samples:
        raise InputError(f"{folder}: the release carries no golden set (built with verify.golden_samples: 0, or by an "
                         "older modelc), so it cannot be proved here")
    try:
        limits = json.loads((folder / FOLDER / TOLERANCES).read_text())["artifacts"][target]["tolerances"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{folder / FOLDER / TOLERANCES}: no tolerances for {target}") from exc
    metrics = measure(runner.infer, golden)
    host = cpu_info()
    return GoldenResult(target, str(host["cpu"]), str(host["kernel_class"]), golden.samples, metrics, limits,
                        misses(metrics, limits), runner.effective_settings())


def check_release(folder: Path, targets: list[str] | None = None) -> tuple[list[GoldenResult], list[str]]:
    """Each artifact (or those named) proved on this machine; returns the results and, for the
    artifacts that could not run here (their runtime is not installed, a GPU engine), why."""
    from modelc_build.manifest import read_manifest

    manifest = read_manifest(folder)
    names = targets or [a["target"] for a in manifest.get("artifacts", []) if runnable(str(a.get("backend")))]
    results, skipped = [], []
    for name in names:
        try:
            with load(folder, name) as deployed:
                results.append(golden_check(folder, name, deployed.runner))
        except BackendUnavailable as exc:
            if targets:  # asked for by name: it must run
                raise
            skipped.append(f"{name}: not run here: {exc.message}")
    return results, skipped
