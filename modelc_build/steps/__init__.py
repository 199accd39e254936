"""Steps: the units of work the engine runs, caches and plans.

Every step kind is one module here and has the same small interface:

- `id`, `kind`, `description` and `needs` (the ids of the steps whose outputs it reads);
- `material(inputs)`: the exact key material of its output, nothing else;
- `run(inputs, out)`: write its files into the folder `out`.

A step is a frozen dataclass of the typed values it reads (never the whole recipe), so it can be
pickled into a fresh process. `inputs` gives the cache entries of the steps it needs and the
build's `Fingerprints` (input digests computed once per build).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping

from modelc_build import __version__
from modelc_build.manifest import package_version

if TYPE_CHECKING:
    from modelc_build.cache import CacheEntry
    from modelc_build.data import Batch
    from modelc_build.fingerprint import DataSource, Fingerprints

# bump when the meaning of key material or the shape of step outputs changes. 5: exports without source
# locations (the same bytes from any folder); 6: a mixed graph's speed timed by its worth step, not in its compile notes
KEY_FORMAT = 6


@dataclass(frozen=True)
class StepInputs:
    """What a step may read: the outputs of the steps it needs, and the build's input digests."""

    entries: Mapping[str, CacheEntry]
    known: Fingerprints | None = None  # the build's input digests (None: a step that needs none, in a test)
    services: Mapping[str, str] = field(default_factory=dict)  # warm helpers by name (emulation), never key material
    threads: int | None = None  # threads its runtimes may use beside other steps (None: their defaults); never key material

    def entry(self, step_id: str) -> CacheEntry:
        return self.entries[step_id]

    def file(self, step_id: str, name: str) -> Path:
        return self.entries[step_id].file(name)

    def digest(self, step_id: str, name: str) -> str:
        return self.entries[step_id].files[name]

    @property
    def fingerprints(self) -> Fingerprints:
        assert self.known is not None, "this step needs the build's fingerprints"
        return self.known

    def batches(self, source: DataSource) -> Iterator[Batch]:
        """A data set's batches: decoded once by its decode step where this step needs it
        (steps/decode.py), else read here."""
        from modelc_build.steps.decode import decode_step_id, decoded_batches

        decoded = self.entries.get(decode_step_id(source))
        if decoded is not None:
            return decoded_batches(decoded.path)
        return self.fingerprints.batches(source)


class Step(ABC):
    """One node of the step graph. Subclasses are frozen dataclasses that provide `id` (unique in
    a plan, e.g. `compile:openvino-fp16`), `needs` (ids of the steps whose outputs it reads) and
    `description` (one line for people), as fields or properties."""

    kind: ClassVar[str] = ""
    fresh_process: ClassVar[bool] = False  # run in a new process (see modelc_build/engine.py)
    exclusive: ClassVar[bool] = False  # run with nothing beside it (timing)
    expected_seconds: ClassVar[float] = 1.0  # a rough relative cost, for the engine's order (see below)
    memory_hint: ClassVar[float] = 2.0  # its process's peak above a bare worker, in FP32 model sizes (engine: memory)

    id: str
    needs: tuple[str, ...]
    description: str

    @property
    def memory_peak_hint(self) -> float:
        """Its process's expected peak above a bare worker, in multiples of the FP32 model's size
        (export: ~5.5x, an INT8 calibration ~4.5x, a measurement ~2x). Only used to keep steps
        side by side within a memory limit (engine.py); a step may override it by what it does."""
        return self.memory_hint

    @property
    def cost_hint(self) -> float:
        """What this step is expected to cost relative to others (seconds on a small model, on 2
        cores). Only the order of work depends on it: the engine starts first the steps on the
        longest chain of expected work, so a slow check (an emulated CPU) does not start last."""
        return self.expected_seconds

    def crashed(self, exit_code: int | None) -> Exception:
        """The error for a fresh process that ended without an answer; steps that run the user's
        own code (a model factory) say so."""
        from modelc_build.errors import CompileError

        return CompileError(f"the {self.id} step's process ended with exit code {exit_code} before it finished "
                            "(a crash in a library): rerun with --debug, and report it if it repeats")

    @abstractmethod
    def material(self, inputs: StepInputs) -> dict[str, Any]:
        """The key material of this step's output: everything it depends on, listed explicitly."""

    @abstractmethod
    def run(self, inputs: StepInputs, out: Path) -> None:
        """Write this step's files into `out`."""


def tool_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions (read from package metadata: no heavy imports)."""
    return {"modelc": __version__, **{name: package_version(name) or "absent" for name in names}}
