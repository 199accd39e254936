"""Write the shipped calibration and evaluation sets under `calibration/`.

    python -m models.make_data

Seeds differ from the training seeds, so evaluation images are never seen in training.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from models.shapes import write_classification_split, write_detection_split

ROOT = Path(__file__).resolve().parent.parent / "calibration"

DETECTION_CALIBRATION_SEED = 101
DETECTION_EVALUATION_SEED = 102
CLASSIFICATION_CALIBRATION_SEED = 201
CLASSIFICATION_EVALUATION_SEED = 202


def main() -> None:
    for folder in ("shapes-detect", "shapes-classify"):
        shutil.rmtree(ROOT / folder, ignore_errors=True)
    write_detection_split(ROOT / "shapes-detect" / "calibration", DETECTION_CALIBRATION_SEED, 64)
    write_detection_split(ROOT / "shapes-detect" / "evaluation", DETECTION_EVALUATION_SEED, 96)
    write_classification_split(ROOT / "shapes-classify" / "calibration", CLASSIFICATION_CALIBRATION_SEED, 64)
    write_classification_split(ROOT / "shapes-classify" / "evaluation", CLASSIFICATION_EVALUATION_SEED, 200)


if __name__ == "__main__":
    main()
