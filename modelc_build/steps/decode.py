"""decode:<role>: a data set read, decoded and preprocessed once per build, for every step that
reads it.

Before this step, the reference, the golden set and every verification decoded and resized the
same evaluation images again in its own process (the shipped MobileNetV2: 0.7 s of JPEG decoding
each, twelve times a build). The output is one `.npy` file per batch and input, opened memory-mapped
(copy-on-write, so a runtime that writes into its input never touches the cache), plus the
batches' sample names and labels. Keyed like the data's own digest: the same files read the same
way are decoded once, in any build that shares the cache.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from modelc_build.fingerprint import DataSource
from modelc_build.steps import Step, StepInputs, tool_versions

if TYPE_CHECKING:
    from modelc_build.data import Batch

INDEX_FILE = "batches.json"


def decode_step_id(source: DataSource) -> str:
    return f"decode:{source.role}"


def decodes(source: DataSource) -> bool:
    """Whether a build decodes this data set once for the steps that read it: files are; a data
    function's output is already kept as it came (fingerprint.py), and seeded random inputs are
    made where they are read."""
    return source.dataset is not None and source.dataset.format != "python"


def decoded_needs(source: DataSource) -> tuple[str, ...]:
    """What a step that reads `source` needs for it: its decode step, where there is one."""
    return (decode_step_id(source),) if decodes(source) else ()


@dataclass(frozen=True)
class DecodeStep(Step):
    source: DataSource
    kind: ClassVar[str] = "decode"
    fresh_process: ClassVar[bool] = True  # Pillow and the preprocessing run apart from the build
    expected_seconds: ClassVar[float] = 0.5
    memory_hint: ClassVar[float] = 0.2
    needs: ClassVar[tuple[str, ...]] = ()  # type: ignore[misc]

    @property
    def id(self) -> str:  # type: ignore[override]
        return decode_step_id(self.source)

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"decode and preprocess {self.source.label} once for the steps that read it"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"data": inputs.fingerprints.data(self.source), "inputs": [asdict(s) for s in self.source.inputs],
                "tools": tool_versions(("numpy", "pillow"))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        import numpy as np

        index = []
        for number, batch in enumerate(inputs.fingerprints.batches(self.source)):
            files = {}
            for position, (name, array) in enumerate(batch.inputs.items()):
                files[name] = f"batch-{number:06d}-{position}.npy"
                np.save(out / files[name], np.ascontiguousarray(array))
            index.append({"files": files, "sources": list(batch.sources), "labels": [_label_to_json(v) for v in batch.labels]})
        (out / INDEX_FILE).write_text(json.dumps({"batches": index}) + "\n")


def decoded_batches(folder: Path) -> Iterator[Batch]:
    """The batches a decode step wrote, in order, each array memory-mapped copy-on-write."""
    import numpy as np

    from modelc_build.data import Batch

    for entry in json.loads((folder / INDEX_FILE).read_text())["batches"]:
        arrays = {name: np.load(folder / file, mmap_mode="c", allow_pickle=False) for name, file in entry["files"].items()}
        yield Batch(arrays, list(entry["sources"]), [_label_from_json(v) for v in entry["labels"]])


def _label_to_json(label: Any) -> Any:
    """A class id stays a number; a detection label (GroundTruthBox list) becomes lists of numbers."""
    from modelc_build.data import GroundTruthBox

    if isinstance(label, list):
        return {"boxes": [[box.class_id, box.x0, box.y0, box.x1, box.y1] for box in label if isinstance(box, GroundTruthBox)]}
    return label.item() if hasattr(label, "item") else label


def _label_from_json(value: Any) -> Any:
    from modelc_build.data import GroundTruthBox

    if isinstance(value, dict) and "boxes" in value:
        return [GroundTruthBox(int(c), float(x0), float(y0), float(x1), float(y1)) for c, x0, y0, x1, y1 in value["boxes"]]
    return value
