"""Representative and evaluation data, streamed in batches.

Sources: an image folder (with the recipe's preprocessing, optional labels), a `.npy` file (one
model input), a `.npz` file (one array per input name), or a Python function (`FILE.py:FUNCTION`)
that yields batches. Nothing is held in memory beyond one batch; `.npy` files are memory-mapped
(a `.npz` member is read whole when first used). With `shuffle`, files and rows are read in an
order drawn from `seed` (NumPy's PCG64, the same on every machine), before `samples` keeps the
first N. Every sample is checked against the model's declared inputs (shape, dtype, finite
values) and a problem names the file.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from modelc_build.errors import InputError
from modelc_build.feeds import data_inputs, sample_shape
from modelc_build.preprocess import Placement, preprocess_image
from modelc_build.recipe_types import Dataset, Preprocess, Recipe, TensorSpec


@dataclass(frozen=True)
class GroundTruthBox:
    class_id: int
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class Batch:
    """One batch: an array per model input, plus labels and where each sample came from."""

    inputs: dict[str, np.ndarray]
    sources: list[str]
    labels: list[Any] = field(default_factory=list)  # class ids, or lists of GroundTruthBox

    def __len__(self) -> int:
        return len(self.sources)


def _require_label_files(images: list[Path], text_of: Any, kind: str) -> None:
    """YOLO labels are one text file per image; a folder with none at all is a mistake in the
    recipe (an image without objects has an empty file), not a data set without objects."""
    if images and not any(text_of(image).is_file() for image in images):
        first = images[0]
        raise InputError(f"{first.parent}: labels: {kind}, but none of its {len(images)} images has a label file (for "
                         f"{first.name}, {text_of(first)}): add the label files, or set labels: none to judge the model by "
                         "agreement with the reference's own detections")


class DataReader:
    """Reads one dataset for one model; `batches()` may be called more than once."""

    def __init__(self, dataset: Dataset, inputs: tuple[TensorSpec, ...], preprocess: Preprocess | None,
                 class_names: tuple[str, ...] = (), *, materialized: Path | None = None, count: bool = True,
                 every: int = 1) -> None:
        """`materialized`: for a data function, the folder of batches its one run yielded (see
        modelc_build/fingerprint.py), read instead of calling it again. `count=False` only for
        `yielded()`: the samples are not counted up front."""

        self.dataset = dataset
        self.inputs = data_inputs(inputs)  # fixed values and carried state are not data
        self.preprocess = preprocess
        self.class_names = class_names
        self.materialized = materialized
        self.every = every  # keep every Nth sample (the last of each N): a split of the data set
        self._items = self._index() if count else []

    def __len__(self) -> int:
        return len(self._items)

    @classmethod
    def for_recipe(cls, dataset: Dataset, recipe: Recipe) -> DataReader:
        """The reader a build uses for one of the recipe's data sets; says on stderr when the
        data holds fewer samples than the recipe asks for, and goes on."""
        reader = cls(dataset, recipe.model.inputs, recipe.preprocess, recipe.task.classes)
        warning = reader.shortfall()
        if warning:
            print(warning, file=sys.stderr, flush=True)
        return reader

    # --- indexing ------------------------------------------------------------------------

    def _index(self) -> list[Any]:
        path = self.dataset.path
        if not path.exists():
            raise InputError(f"{path}: the data path does not exist: fix data.*.path in the recipe")
        if self.dataset.format == "images":
            items: list[Any] = self._index_images(path)
        elif self.dataset.format == "python":
            items = list(range(sum(len(next(iter(feed.values()))) for feed in self._function_feeds())))
        elif self.dataset.format == "tokens":
            items = list(range(len(self._read_token_file(path))))
        elif path.is_dir():  # a folder of .npy/.npz files, one sample each
            items = self.dataset.sample_files()
        else:
            items = list(range(self._array_length(path)))
        if self.dataset.shuffle:
            order = np.random.default_rng(self.dataset.seed).permutation(len(items))
            items = [items[i] for i in order]
        if not items:
            raise InputError(f"{path}: holds no samples ({'no .png/.jpg images' if self.dataset.format == 'images' else 'zero rows'}): "
                             "add data or point data.*.path at the right folder")
        if self.dataset.samples is not None:
            items = items[: self.dataset.samples]
        return items[self.every - 1::self.every]

    def shortfall(self) -> str | None:
        """A warning when the recipe asked for more samples than the data holds (the build goes on)."""
        asked = self.dataset.samples
        if asked is not None and len(self._items) < asked:
            return (f"warning: {self.dataset.path} holds {len(self._items)} samples, the recipe asked for {asked}: "
                    f"using {len(self._items)}")
        return None

    def _index_images(self, folder: Path) -> list[Any]:
        if not folder.is_dir():
            raise InputError(f"{folder}: an image dataset must be a folder of images; use format: npy/npz for arrays")
        if len(self.inputs) != 1:
            raise InputError(f"{folder}: an image folder feeds exactly one model input, the model has {len(self.inputs)}: "
                             "use an .npz file with one array per input")
        if self.preprocess is None:
            raise InputError(f"{folder}: an image folder needs data.preprocess in the recipe")
        files = self.dataset.sample_files()
        arrays = [kind for kind in ("npz", "npy") if replace(self.dataset, format=kind).sample_files()]
        if not files and arrays:
            raise InputError(f"{folder}: holds .{arrays[0]} files, not images: set format: {arrays[0]} on this data set")
        if self.dataset.labels in ("csv", "coco", "ultralytics"):
            from modelc_build.labels import LabelIndex

            self._labels = LabelIndex(self.dataset.labels, folder, self.dataset.labels_path, self.class_names)
            if self.dataset.labels == "csv":
                return [(p, self._labels.class_of(p)) for p in files]
            if self.dataset.labels == "ultralytics":
                _require_label_files(files, self._labels.yolo_text_of, "ultralytics")
            return [(p, None) for p in files]
        if self.dataset.labels == "yolo":
            _require_label_files(files, lambda image: image.with_suffix(".txt"), "yolo")
        if self.dataset.labels == "folders":
            names = self.class_names or tuple(sorted({p.parent.name for p in files if p.parent != folder}))
            index = {name: i for i, name in enumerate(names)}
            unknown = sorted({p.parent.name for p in files if p.parent.name not in index})
            if unknown:
                raise InputError(f"{folder}: class folder(s) {', '.join(unknown)} are not in task.classes "
                                 f"({', '.join(names)}): add them to task.classes or remove the folders")
            return [(p, index[p.parent.name]) for p in files]
        return [(p, None) for p in files]

    def _function(self) -> Any:
        from modelc_build.sources import resolve_factory

        assert self.dataset.function is not None
        return resolve_factory(f"{self.dataset.path.name}:{self.dataset.function}", self.dataset.path.parent,
                               key="data.*.path")

    def _function_feeds(self) -> Iterator[dict[str, np.ndarray]]:
        """A data function's batches: from its materialized output when there is one."""
        if self.materialized is None:
            yield from self.yielded()
            return
        for path in sorted(self.materialized.glob("batch-*.npz")):
            with np.load(path, allow_pickle=False) as archive:
                yield {spec.name: archive[spec.name] for spec in self.inputs}

    def yielded(self) -> Iterator[dict[str, np.ndarray]]:
        """The function's batches as dicts by input name, checked."""
        where = f"{self.dataset.path}:{self.dataset.function}"
        names = [spec.name for spec in self.inputs]
        try:
            produced = self._function()()
            for number, batch in enumerate(produced):
                if isinstance(batch, dict):
                    feed = dict(batch)
                elif len(names) == 1:
                    feed = {names[0]: batch}
                else:
                    raise InputError(f"{where}: batch {number} is a {type(batch).__name__}; the model has inputs "
                                     f"{names}: yield a dict of arrays by input name")
                if sorted(feed) != sorted(names):
                    raise InputError(f"{where}: batch {number} has inputs {sorted(feed)}, the model takes {sorted(names)}")
                yield {spec.name: self._check(spec, np.asarray(feed[spec.name]), f"{where} batch {number}")
                       for spec in self.inputs}
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{where}: the data function failed: {type(exc).__name__}: {exc}") from exc

    def _array_length(self, path: Path) -> int:
        if self.dataset.format == "npy":
            if len(self.inputs) != 1:
                raise InputError(f"{path}: a .npy file feeds one input, the model has {len(self.inputs)}: use .npz")
            self._arrays = {self.inputs[0].name: self._load_npy(path)}
        else:
            self._arrays = self._load_npz(path)
        lengths = {name: len(array) for name, array in self._arrays.items()}
        if len(set(lengths.values())) > 1:
            raise InputError(f"{path}: arrays have different sample counts {lengths}: give every input the same count")
        return next(iter(lengths.values()))

    @staticmethod
    def _load_npy(path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{path}: not a readable .npy file ({exc})") from exc

    def _load_npz(self, path: Path) -> dict[str, np.ndarray]:
        try:
            archive = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
        names = [spec.name for spec in self.inputs]
        missing = [n for n in names if n not in archive.files]
        if missing:
            raise InputError(f"{path}: has arrays {archive.files} but the model inputs are {names}: "
                             f"add array(s) named {', '.join(missing)}")
        unused = sorted(set(archive.files) - set(names))
        if unused and not getattr(self, "_said_unused", False):
            self._said_unused = True  # once per data set, not once per file
            print(f"warning: {path}: arrays {unused} are not model inputs ({names}) and are not read; "
                  "remove them, or name the input they are for in model.inputs", file=sys.stderr, flush=True)
        arrays = {}
        for name in names:
            try:
                arrays[name] = archive[name]
            except ValueError as exc:  # allow_pickle=False: an object array is pickled Python, never loaded
                raise InputError(f"{path}: array '{name}' holds Python objects (dtype object), which modelc does not "
                                 "load (it would run pickle): save it as a numeric array") from exc
        return arrays

    # --- reading -------------------------------------------------------------------------

    def feeds(self) -> Iterator[dict[str, np.ndarray]]:
        """The inputs of each batch only (what calibration consumes)."""
        return (batch.inputs for batch in self.batches())

    def batches(self, batch_size: int | None = None) -> Iterator[Batch]:
        if self.dataset.format == "python":
            yield from self._python_batches()
            return
        size = batch_size or self.dataset.batch_size
        for start in range(0, len(self._items), size):
            yield self._read(self._items[start:start + size])

    def _python_batches(self) -> Iterator[Batch]:
        """The function's own batches, cut at `samples` (and thinned to every Nth sample)."""
        wanted = set(self._items)
        where = f"{self.dataset.path}:{self.dataset.function}"
        start = 0
        for feed in self._function_feeds():
            count = len(next(iter(feed.values())))
            rows = [i for i in range(count) if start + i in wanted]
            if rows:
                kept = {name: array[rows] if len(rows) < count else array for name, array in feed.items()}
                yield Batch(inputs=kept, sources=[f"{where}[{start + i}]" for i in rows])
            start += count
            if start > max(wanted, default=-1):
                return

    def _read_token_file(self, path: Path) -> list[list[int]]:
        """One sample per non-empty line: token ids separated by spaces, cut to max_length."""
        fields = self.dataset.tokens
        assert fields is not None
        names = {spec.name for spec in self.inputs}
        self._token_inputs = {"ids": fields.ids or self.inputs[0].name, "mask": fields.mask, "type_ids": fields.type_ids}
        unfed = sorted(names - {name for name in self._token_inputs.values() if name})
        if unfed:
            raise InputError(f"{path}: a token file feeds {sorted(n for n in self._token_inputs.values() if n)}; the "
                             f"model also takes {unfed}: name them in data.*.tokens (mask, type_ids) or give them a value")
        ids_spec = next(spec for spec in self.inputs if spec.name == self._token_inputs["ids"])
        per_sample = sample_shape(ids_spec)
        fixed = per_sample[0] if per_sample and isinstance(per_sample[0], int) else None
        self._token_length: int | None = fixed
        limit = fields.max_length or fixed
        rows = []
        trailing: list[int] = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = [int(token) for token in line.split()]
            except ValueError:
                raise InputError(f"{path}:{number}: expected token ids separated by spaces, got {line[:60]!r}") from None
            if min(row) < 0:
                raise InputError(f"{path}:{number}: token ids are not negative; found {min(row)}")
            padded = 0
            while len(row) > 1 and row[-1] == fields.pad_id:
                row.pop()
                padded += 1
            if padded:
                trailing.append(number)
            rows.append(row[:limit] if limit else row)
        if trailing:
            print(f"warning: {path}: {len(trailing)} line(s) end in padding (pad_id {fields.pad_id}; first at line "
                  f"{trailing[0]}): those pad tokens are dropped, so the attention mask leaves them out; write the ids "
                  "without padding, or set data.*.tokens.pad_id if that id is a real token", file=sys.stderr, flush=True)
        self._token_rows = rows
        return rows

    def _read_tokens(self, items: list[Any]) -> Batch:
        """A batch of token rows, padded to the longest (or to the model's fixed length)."""
        fields = self.dataset.tokens
        assert fields is not None
        rows = [self._token_rows[i] for i in items]
        length = self._token_length or max(len(row) for row in rows)
        ids = np.full((len(rows), length), fields.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for index, row in enumerate(rows):
            ids[index, :len(row)] = row
            mask[index, :len(row)] = 1
        arrays = {self._token_inputs["ids"]: ids}
        if self._token_inputs["mask"]:
            arrays[self._token_inputs["mask"]] = mask
        if self._token_inputs["type_ids"]:
            arrays[self._token_inputs["type_ids"]] = np.zeros_like(ids)
        inputs = {spec.name: self._check(spec, arrays[spec.name], str(self.dataset.path)) for spec in self.inputs}
        return Batch(inputs=inputs, sources=[f"{self.dataset.path}[{i}]" for i in items])

    def _read(self, items: list[Any]) -> Batch:
        if self.dataset.format == "images":
            return self._read_images(items)
        if self.dataset.format == "tokens":
            return self._read_tokens(items)
        if self.dataset.path.is_dir():
            return self._read_sample_files(items)
        rows = np.asarray(items)
        contiguous = bool(np.all(np.diff(rows) == 1))
        inputs = {name: np.asarray(array[rows[0]:rows[-1] + 1] if contiguous else array[rows])
                  for name, array in self._arrays.items()}
        batch = Batch(inputs=inputs, sources=[f"{self.dataset.path}[{i}]" for i in items])
        for spec in self.inputs:
            inputs[spec.name] = self._check(spec, inputs[spec.name], str(self.dataset.path))
        return batch

    def _read_sample_files(self, files: list[Path]) -> Batch:
        """One sample per file: each input's array without the batch axis; stacked into a batch."""
        samples = [self._load_npz(path) if path.suffix == ".npz" else {self.inputs[0].name: self._load_npy(path)}
                   for path in files]
        if self.dataset.format == "npy" and len(self.inputs) != 1:
            raise InputError(f"{self.dataset.path}: .npy files feed one input, the model has {len(self.inputs)}: use .npz")
        inputs = {}
        for spec in self.inputs:
            shapes = {array.shape for array in (sample[spec.name] for sample in samples)}
            if len(shapes) > 1:
                raise InputError(f"{self.dataset.path}: the files {files[0].name} … {files[-1].name} of one batch hold "
                                 f"'{spec.name}' in shapes {sorted(shapes)}: give the samples of a batch one shape "
                                 "(or set batch_size: 1)")
            inputs[spec.name] = self._check(spec, np.stack([sample[spec.name] for sample in samples]), str(files[0]))
        return Batch(inputs=inputs, sources=[str(path) for path in files])

    def _read_images(self, items: list[Any]) -> Batch:
        from PIL import Image, UnidentifiedImageError

        assert self.preprocess is not None
        spec = self.inputs[0]
        tensors, sources, labels = [], [], []
        for path, class_id in items:
            try:
                with Image.open(path) as image:
                    tensor, placement = preprocess_image(image, self.preprocess)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot decode this image ({exc}): replace or remove the file") from exc
            tensors.append(tensor)
            sources.append(str(path))
            if self.dataset.labels in ("folders", "csv"):
                labels.append(class_id)
            elif self.dataset.labels == "yolo":
                labels.append(read_yolo_labels(path, placement, image.size))
            elif self.dataset.labels == "ultralytics":
                labels.append(read_yolo_labels(path, placement, image.size, self._labels.yolo_text_of(path)))
            elif self.dataset.labels == "coco":
                labels.append([GroundTruthBox(b.class_id, *placement.to_input(b.x0, b.y0, b.x1, b.y1))
                               for b in self._labels.boxes_of(path) or []])
        stacked = self._check(spec, np.stack(tensors), str(self.dataset.path))
        return Batch(inputs={spec.name: stacked}, sources=sources, labels=labels)

    @staticmethod
    def _check(spec: TensorSpec, array: np.ndarray, where: str) -> np.ndarray:
        expected = sample_shape(spec)
        got = array.shape[1:]
        if len(got) != len(expected) or any(isinstance(e, int) and e != g for e, g in zip(expected, got)):
            raise InputError(f"{where}: samples for input '{spec.name}' have shape {list(got)} but the model expects "
                             f"{list(expected)} per sample (its shape without the batch axis; data is sample-first): "
                             "fix the data or data.preprocess")
        if np.issubdtype(array.dtype, np.floating) != spec.dtype.startswith("float"):
            raise InputError(f"{where}: samples for input '{spec.name}' are {array.dtype} but the model input is "
                             f"{spec.dtype}: convert the data")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise InputError(f"{where}: samples for input '{spec.name}' contain NaN or Inf: clean the data")
        return np.ascontiguousarray(array, dtype=spec.dtype)


def read_yolo_labels(image_path: Path, placement: Placement, size: tuple[int, int],
                     label_path: Path | None = None) -> list[GroundTruthBox]:
    """Labels in the YOLO text format (beside the image unless `label_path` says where), mapped
    into model-input pixels."""
    label_path = label_path or image_path.with_suffix(".txt")
    if not label_path.exists():
        return []  # an image without objects
    width, height = size
    boxes = []
    for number, line in enumerate(label_path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            class_id = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:5])
            if len(parts) != 5:
                raise ValueError
        except ValueError:
            raise InputError(f"{label_path}:{number}: expected 'class cx cy w h' (normalised), got {line!r}") from None
        x0, y0, x1, y1 = placement.to_input((cx - w / 2) * width, (cy - h / 2) * height,
                                            (cx + w / 2) * width, (cy + h / 2) * height)
        boxes.append(GroundTruthBox(class_id, x0, y0, x1, y1))
    return boxes

