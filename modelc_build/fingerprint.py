"""The digests of a build's inputs, each computed once per build and shared by every step's key.

A model source is identified by its files (weights, factory source, ONNX or TorchScript file) and
its declared I/O; a data set by the digest of its files, or, for a Python data function, by the
data it yields. A data function runs once per build: what it yields is written, checked, into the
cache as a folder of batches (content-addressed by its digest), and every step reads that folder.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from modelc_build.errors import InputError
from modelc_build.manifest import sha256_file, tree_digest
from modelc_build.recipe_types import Dataset, ModelSource, Preprocess, Task, TensorSpec

if TYPE_CHECKING:
    from modelc_build.cache import Cache
    from modelc_build.data import Batch, DataReader

RANDOM_EVALUATION_SAMPLES = 8


@dataclass(frozen=True)
class DataSource:
    """One data set as a model reads it: the files, plus how they become model inputs."""

    role: str  # calibration | validation | evaluation
    dataset: Dataset | None  # None: seeded random inputs (evaluation only)
    inputs: tuple[TensorSpec, ...]
    preprocess: Preprocess | None
    classes: tuple[str, ...] = ()
    every: int = 1  # read every Nth sample only (a validation split of the calibration set)
    note: str = ""  # said in the report, e.g. where a split came from

    @property
    def label(self) -> str:
        return self.dataset.path.name if self.dataset else "seeded random inputs (no data.evaluation)"


class Fingerprints:
    """Memoised digests for one build; picklable, so steps in fresh processes read the same."""

    def __init__(self, cache: Cache | None = None, run_code: bool = True) -> None:
        """`run_code=False` (`modelc plan`): never run the recipe's data functions; a key that
        needs one raises CodeNotRun."""
        self._cache = cache
        self._run_code = run_code
        self._sources: dict[str, dict[str, Any]] = {}  # by repr: factory arguments may be lists
        self._data: dict[DataSource, dict[str, Any]] = {}
        self._materialized: dict[tuple[Dataset | None, tuple[TensorSpec, ...]], tuple[str, Path]] = {}  # a function's output
        self._files: dict[Path, str] = {}  # sha256 of each data file, read once per build

    def __getstate__(self) -> dict[str, Any]:
        return {"_cache": None, "_run_code": self._run_code, "_sources": self._sources, "_data": self._data,
                "_materialized": self._materialized, "_files": self._files}

    # --- the model -------------------------------------------------------------------------

    def source(self, model: ModelSource) -> dict[str, Any]:
        if repr(model) not in self._sources:
            self._sources[repr(model)] = source_material(model)
        return self._sources[repr(model)]

    def file_digest(self, path: Path) -> str:
        """sha256 of a data file, read once per build (the overlap check and the keys share it)."""
        if path not in self._files:
            self._files[path] = sha256_file(path)
        return self._files[path]

    def task(self, task: Task) -> dict[str, Any]:
        """Key material of a task: its settings, and a custom metric's source file by digest."""
        material = task.settings()
        if task.metric is not None:
            location = task.base_dir / task.metric.rsplit(":", 1)[0]
            if not location.is_file():
                raise InputError(f"{location}: the metric file does not exist: fix task.metric")
            material["metric_code"] = sha256_file(location)
        return material

    # --- data ------------------------------------------------------------------------------

    def data(self, source: DataSource) -> dict[str, Any]:
        """Key material of a data set: its digest and every setting that changes what is read."""
        if source not in self._data:
            self._data[source] = self._data_material(source)
        return self._data[source]

    def _data_material(self, source: DataSource) -> dict[str, Any]:
        dataset = source.dataset
        if dataset is None:
            return {"random_samples": RANDOM_EVALUATION_SAMPLES, "inputs": [asdict(s) for s in source.inputs]}
        if not dataset.path.exists():
            raise InputError(f"{dataset.path}: the data path does not exist: fix data.{source.role}.path in the recipe")
        if dataset.format == "python":
            digest = self._materialized_output(source)[0]
        else:
            digest = tree_digest(dataset.path, self.file_digest)
        return {"digest": digest, "format": dataset.format, "labels": dataset.labels, "function": dataset.function,
                "samples": dataset.samples, "batch_size": dataset.batch_size, "shuffle": dataset.shuffle,
                "seed": dataset.seed, "preprocess": asdict(source.preprocess) if source.preprocess else None,
                "classes": list(source.classes), "every": source.every,
                "tokens": asdict(dataset.tokens) if dataset.tokens else None,
                "labels_file": sha256_file(dataset.labels_path) if dataset.labels_path and dataset.labels_path.is_file() else None}

    def _materialized_output(self, source: DataSource) -> tuple[str, Path]:
        """Digest and cache folder of a data function's output; the function runs once per build,
        whichever roles and splits read it."""
        key = (source.dataset, source.inputs)
        if key not in self._materialized:
            if not self._run_code:
                from modelc_build.errors import CodeNotRun

                raise CodeNotRun(f"data.{source.role} is a Python data function; plan does not run recipe code")
            self._materialized[key] = self._materialize(source)
        return self._materialized[key]

    def _materialize(self, source: DataSource) -> tuple[str, Path]:
        """Run a data function once, keep what it yields in the cache, return its digest."""
        import tempfile

        import numpy as np

        from modelc_build.cache import cache_key
        from modelc_build.data import DataReader

        assert source.dataset is not None and self._cache is not None
        reader = DataReader(source.dataset, source.inputs, source.preprocess, source.classes, count=False)
        digest = hashlib.sha256()
        self._cache.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="data-", dir=self._cache.root) as folder:
            for number, feed in enumerate(reader.yielded()):
                for name in sorted(feed):
                    array = feed[name]
                    digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
                    digest.update(array.tobytes())
                np.savez(Path(folder) / f"batch-{number:06d}.npz", **feed)  # type: ignore[arg-type]
            hexdigest = digest.hexdigest()
            key = cache_key({"data": hexdigest})
            entry, _ = self._cache.get(key)
            if entry is None:
                entry = self._cache.put(key, f"data:{source.role}", Path(folder))
        return hexdigest, entry.path

    def reader(self, source: DataSource) -> DataReader:
        """A reader of the data set; a data function's output is read from the cache."""
        from modelc_build.data import DataReader

        assert source.dataset is not None
        dataset = source.dataset
        if dataset.format == "python":
            return DataReader(dataset, source.inputs, source.preprocess, source.classes,
                              materialized=self._materialized_output(source)[1], every=source.every)
        return DataReader(dataset, source.inputs, source.preprocess, source.classes, every=source.every)

    def samples(self, source: DataSource) -> int:
        """How many samples a role reads; image folders are counted without decoding (or NumPy)."""
        dataset = source.dataset
        if dataset is None:
            return RANDOM_EVALUATION_SAMPLES
        if dataset.format != "images":
            return len(self.reader(source))
        count = len(dataset.sample_files())
        if dataset.samples is not None:
            count = min(count, dataset.samples)
        return count // source.every

    def batches(self, source: DataSource) -> Iterator[Batch]:
        """The data set's batches, or seeded random inputs when the recipe has no evaluation data."""
        if source.dataset is not None:
            return self.reader(source).batches()
        return _random_batches(source.inputs)


def _random_batches(inputs: tuple[TensorSpec, ...]) -> Iterator[Batch]:
    from modelc_build.data import Batch
    from modelc_build.feeds import random_samples

    arrays = random_samples(inputs, RANDOM_EVALUATION_SAMPLES, seed=1)
    yield Batch(arrays, [f"random[{i}]" for i in range(RANDOM_EVALUATION_SAMPLES)])


def source_material(model: ModelSource) -> dict[str, Any]:
    """What identifies the model itself: file digests, factory and its arguments, declared I/O."""
    material: dict[str, Any] = {"kind": model.kind, "inputs": [asdict(s) for s in model.inputs],
                                "outputs": list(model.outputs)}
    if model.kind == "torch":
        assert model.weights is not None and model.factory is not None
        if not model.weights.is_file():
            raise InputError(f"{model.weights}: the weights file does not exist: fix model.weights")
        material["weights"] = sha256_file(model.weights)
        location = model.factory.rsplit(":", 1)[0]
        factory_file = (model.base_dir / location) if location.endswith(".py") else None
        if factory_file is not None and not factory_file.is_file():
            raise InputError(f"{factory_file.resolve()}: the model factory file does not exist: fix model.factory")
        material["factory"] = {"function": model.factory.rsplit(":", 1)[1],
                               "code": sha256_file(factory_file) if factory_file else location,
                               "args": [list(kv) for kv in model.factory_args]}
    else:
        assert model.path is not None
        if not model.path.is_file():
            raise InputError(f"{model.path}: the {model.kind} file does not exist: fix model.path")
        material["file"] = sha256_file(model.path)
    return material



def check_disjoint(sources: list[DataSource], facts: Fingerprints) -> None:
    """Calibration, validation and evaluation share no sample: the same file content in two roles
    is an error naming the files (a gate measured on data that tuned the artifact is optimistic)."""
    seen: dict[str, tuple[str, Path]] = {}
    clashes: list[str] = []
    for source in sources:
        if source.dataset is None or source.every != 1 or not source.dataset.path.exists():
            continue
        for path in source.dataset.sample_files():
            digest = facts.file_digest(path)
            if digest in seen and seen[digest][0] != source.role:
                role, first = seen[digest]
                clashes.append(f"{_shown(path)} ({source.role}) = {_shown(first)} ({role})")
            seen.setdefault(digest, (source.role, path))
    if clashes:
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise InputError(f"the same data is in two roles: {'; '.join(clashes[:5])}{more}: calibration, validation and "
                         "evaluation must be disjoint; remove the duplicates from one of the sets")


def _shown(path: Path) -> str:
    """Relative to the working folder when inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


