"""The recipe's vocabulary: the typed, frozen values a recipe becomes and every layer reads.

This module sits at the bottom of the package and imports nothing of it (tests/test_layers.py
checks that): the parser (`recipe.py`: YAML, JSON Schema, cross-field checks) builds these values,
and steps, backends, data readers and the release read them, never the parser. A backend's own
facts (its precisions, tools, runtimes) are not here: each backend owns them in its table
(`modelc_build/backends/`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Precision = str  # "fp32" | "fp16" | "int8" | "fp8" | "int4-wo" (tensorrt: FP8 Q/DQ; weight-only INT4 MatMuls)
CALIBRATED = ("int8", "fp8", "int4-wo")  # precisions made from representative data
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes one model input tensor (without the batch axis)."""

    height: int
    width: int
    resize: str = "stretch"  # stretch | letterbox
    pad_value: int = 114
    color: str = "rgb"  # rgb | bgr
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "nchw"  # nchw | nhwc


@dataclass(frozen=True)
class TensorSpec:
    """One model input (see modelc_build/feeds.py for how samples become calls)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    batch_axis: int | None = 0  # None: no batch axis (a scalar)
    value: Any = None  # a fixed value fed on every call (a number, a bool or nested tuples)
    state_from: str | None = None  # a recurrent state: the output it is carried from
    examples: tuple[tuple[str, int], ...] = ()  # sizes named non-batch axes take in example inputs

    def to_json(self) -> dict[str, Any]:
        """For files this process writes for another (an emulated run, a release's golden set)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        def frozen(value: Any) -> Any:
            return tuple(frozen(v) for v in value) if isinstance(value, list) else value

        return cls(str(data["name"]), tuple(data["shape"]), str(data.get("dtype", "float32")), data.get("batch_axis", 0),
                   frozen(data.get("value")), data.get("state_from"),
                   tuple((str(name), int(size)) for name, size in data.get("examples", ())))

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete_shape(self, dynamic_size: int = 1) -> tuple[int, ...]:
        """The shape with the batch axis at `dynamic_size` and other named axes at their example
        size (an image's height and width from data.preprocess, else one no fixed axis has)."""
        sizes = dict(self.examples)
        return tuple(d if isinstance(d, int) else dynamic_size if axis == self.batch_axis else sizes.get(d, dynamic_size)
                     for axis, d in enumerate(self.shape))


@dataclass(frozen=True)
class ModelSource:
    kind: str  # torch | onnx | torchscript
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    factory: str | None = None
    factory_args: tuple[tuple[str, Any], ...] = ()
    weights: Path | None = None
    path: Path | None = None
    base_dir: Path = Path(".")
    strict: bool = True  # torch: unexpected checkpoint entries are an error
    ignore_weights: tuple[str, ...] = ()  # torch: checkpoint entries dropped before loading (regexes)
    arguments: tuple[tuple[str, Any], ...] = ()  # torch/torchscript: Python values passed to forward by keyword

    @property
    def model_file(self) -> Path | None:
        """The file that holds the model: a torch source's weights, else the ONNX or TorchScript file."""
        return self.weights if self.kind == "torch" else self.path


@dataclass(frozen=True)
class ExportOptions:
    exporter: str = "auto"  # auto | dynamo | torchscript
    opset: int = 18
    simplify: bool = True


@dataclass(frozen=True)
class Dataset:
    path: Path
    format: str  # images | npy | npz | tokens | python
    labels: str = "none"
    samples: int | None = None
    batch_size: int = 16
    shuffle: bool = False
    seed: int = 0
    function: str | None = None  # python only: the function in `path` that yields batches
    labels_path: Path | None = None  # csv, coco, ultralytics: the labels file
    tokens: TokenFields | None = None  # tokens: which inputs the token file feeds

    def sample_files(self) -> list[Path]:
        """A folder's files that hold one sample each (its images, or its .npy/.npz files), in name
        order, sub-folders included; a file data set is its one file."""
        if not self.path.is_dir():
            return [self.path] if self.path.is_file() else []
        wanted = IMAGE_SUFFIXES if self.format == "images" else {f".{self.format}"}
        return sorted(p for p in self.path.rglob("*") if p.suffix.lower() in wanted and p.is_file())


@dataclass(frozen=True)
class TokenFields:
    """A tokenized text file's inputs: ids (and optionally a mask and zero type ids), padded per batch."""

    ids: str | None = None  # default: the model's first input
    mask: str | None = None
    type_ids: str | None = None
    pad_id: int = 0
    max_length: int | None = None


@dataclass(frozen=True)
class Task:
    type: str = "generic"
    output: str | None = None
    classes: tuple[str, ...] = ()
    confidence_threshold: float = 0.001
    nms_iou: float = 0.6
    match_iou: float = 0.5
    layout: str = "yolov5"  # detection: yolov5 | yolov8 | boxes | separate
    boxes_output: str | None = None  # detection, layout separate: [B, N, 4] x1, y1, x2, y2
    scores_output: str | None = None  # detection, layout separate: [B, N, classes]
    metric: str | None = None  # custom: FILE.py:FUNCTION, resolved against `base_dir`
    higher_is_better: bool = True
    base_dir: Path = Path(".")

    def settings(self) -> dict[str, Any]:
        """What the task judges by, without where the recipe lies (a moved checkout is the same task)."""
        return {key: value for key, value in asdict(self).items() if key != "base_dir"}


@dataclass(frozen=True)
class Target:
    backend: str
    precision: Precision
    mode: str | None = None
    gpus: tuple[str, ...] = ()  # tensorrt: the GPU generations engines are built for (sm86, …)
    max_batch: int = 32  # tensorrt: the optimization profile's batch range (min 1)
    opt_batch: int = 8
    verify_on_gpu: bool = False  # tensorrt: a build without a GPU that runs the engines fails
    flavour: str = "auto"  # tensorrt: who builds the engines (auto | tensorrt | tensorrt-rtx)
    isa: str | None = None  # aoti: the x86 ISA baseline the package is compiled for (x86-64-v3 | x86-64-v4 | native)

    @property
    def id(self) -> str:
        """The artifact folder name, e.g. `openvino-fp16`."""
        return f"{self.backend}-{self.precision}"

    def material(self) -> dict[str, Any]:
        """What of the target a step's key depends on (engine options only where they exist)."""
        found = asdict(self)
        if self.flavour == "auto":  # keys of recipes written before `flavour` existed stay as they were
            del found["flavour"]
        if self.isa is None:  # likewise `isa` (aoti targets only)
            del found["isa"]
        if not self.gpus:  # only GPU targets (TensorRT engines) have generations and engine options
            for key in ("gpus", "max_batch", "opt_batch", "verify_on_gpu", "flavour"):
                found.pop(key, None)
        return found


@dataclass(frozen=True)
class Gate:
    min_cosine: float | None = None
    max_abs_error: float | None = None
    max_mean_abs_error: float | None = None
    min_snr_db: float | None = None
    max_metric_drop: float | None = None
    min_metric: float | None = None
    min_top5_containment: float | None = None  # classification, percent
    min_reference_map50: float | None = None  # detection, percent


# Gates every recipe gets, per precision, unless it sets its own (docs/recipe.md). INT8: healthy
# artifacts of a real ImageNet classifier measured 0.97-0.99 output cosine, every broken one at or
# below 0.93; the reference's top-1 class within the artifact's top-5 for >= 95 % of samples.
DEFAULT_GATES: dict[str, Gate] = {
    "fp32": Gate(min_cosine=0.999, min_top5_containment=99.0, min_reference_map50=95.0),
    "fp16": Gate(min_cosine=0.99, min_top5_containment=98.0, min_reference_map50=90.0),
    "int8": Gate(min_cosine=0.95, min_top5_containment=95.0, min_reference_map50=60.0),
    "fp8": Gate(min_cosine=0.95, min_top5_containment=95.0, min_reference_map50=60.0),
    "int4-wo": Gate(min_cosine=0.95, min_top5_containment=95.0, min_reference_map50=60.0),
}
LOWER_IS_STRICTER = {"max_abs_error", "max_mean_abs_error", "max_metric_drop"}


@dataclass(frozen=True)
class Quantization:
    preset: str = "performance"
    subset_size: int = 300
    fast_bias_correction: bool = True
    model_type: str = "cnn"
    calibration_method: str = "entropy"  # Q/DQ graphs: how activation ranges are chosen
    sensitivity_layers: int = 0  # list this many of the most sensitive layers; 0: do not measure
    ignore_names: tuple[str, ...] = ()
    ignore_types: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = ()
    overflow_fix: str = "enable"  # openvino int8: enable | first_layer | disable
    onnxruntime_weights: str = "uint8"  # onnxruntime int8: uint8 (exact everywhere) | int8 (7-bit, faster)
    onnxruntime_vnni: bool = True  # onnxruntime int8: also a u8s8 variant for CPUs with VNNI (built on one)
    allow_unquantized: bool = False  # an int8 artifact with no INT8 layer is stored instead of failing
    float_input_layers: bool = True  # onnxruntime int8: layers reading a model input stay float
    float_output_head: bool = False  # nodes after the last Conv/Gemm/MatMul stay float (default: detection)
    fallback: str = "auto"  # int8: auto (mixed precision where full INT8 misses min_cosine) | off
    fallback_layers: int = 8  # the most layers the fallback keeps in float


@dataclass(frozen=True)
class VerifyOptions:
    openvino_inference_precision: str = "f32"  # the deploy setting the gates judge (see the schema)
    cpus: tuple[str, ...] = ("Haswell",)  # QEMU CPU models every onnxruntime/openvino int8 artifact is checked on
    emulated_samples: int = 16
    emulation_budget_s: float = 30.0
    emulate_host_class: bool = False
    require_cpus: bool = False  # no emulator: the emulated checks fail the artifact (a broken one always does)
    golden_samples: int = 8  # shipped with the release for `modelc verify --run`
    golden_max_mb: float = 4.0

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> VerifyOptions:
        return cls(**{**data, **({"cpus": tuple(data["cpus"])} if "cpus" in data else {})})


@dataclass(frozen=True)
class Latency:
    runs: int = 30
    warmup: int = 5


@dataclass(frozen=True)
class Recipe:
    path: Path
    digest: str  # sha256 of the recipe file's bytes
    name: str
    version: str
    description: str
    model: ModelSource
    export: ExportOptions
    preprocess: Preprocess | None
    calibration: Dataset | None
    evaluation: Dataset | None
    task: Task
    targets: tuple[Target, ...]
    gates: dict[str, Gate] = field(hash=False)
    latency: Latency
    quantization: Quantization = Quantization()
    explicit_gate_keys: dict[str, frozenset[str]] = field(default_factory=dict, hash=False)
    verify: VerifyOptions = VerifyOptions()
    validation: Dataset | None = None

    def gate_for(self, precision: Precision) -> Gate:
        """modelc's default gate for the precision, with the recipe's `default` and per-precision
        keys on top."""
        return Gate(**{key: value for key, (value, _, _) in self._gate_keys(precision).items()})

    def gate_sources(self, precision: Precision) -> dict[str, tuple[str, float | None]]:
        """Per gate key: recipe | default | relaxed (looser than modelc's default), and that default."""
        return {key: (source, default) for key, (_, source, default) in self._gate_keys(precision).items()
                if source != "unset"}

    def _gate_keys(self, precision: Precision) -> dict[str, tuple[float | None, str, float | None]]:
        default = DEFAULT_GATES.get(precision, Gate())
        chosen = self.gates.get(precision, self.gates.get("default", Gate()))
        explicit = self.explicit_gate_keys.get(precision, self.explicit_gate_keys.get("default", frozenset()))
        keys: dict[str, tuple[float | None, str, float | None]] = {}
        for name in Gate.__dataclass_fields__:
            ours, theirs = getattr(default, name), getattr(chosen, name)
            if name not in explicit:
                keys[name] = (ours, "default" if ours is not None else "unset", None)
                continue
            looser = ours is not None and theirs is not None and (
                theirs > ours if name in LOWER_IS_STRICTER else theirs < ours)
            keys[name] = (theirs, "relaxed" if looser else "recipe", ours if looser else None)
        return keys
