"""Deterministic generator of synthetic 'shapes' images for the shipped example models.

Every image is a function of (split seed, index) only, so `python -m models.make_data` rewrites
byte-identical PNG files and label files on any machine with the same Pillow major version.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DETECTION_CLASSES = ("circle", "square", "triangle")
CLASSIFICATION_CLASSES = ("circle", "square", "triangle", "cross")

DETECTION_IMAGE_SIZE = (192, 144)  # width, height: 4:3, letterboxed to 128x128 by the recipe
CLASSIFICATION_IMAGE_SIZE = (72, 72)  # resized to 64x64 by the recipe


@dataclass(frozen=True)
class Box:
    """An object in pixel coordinates of the generated image."""

    class_id: int
    x0: float
    y0: float
    x1: float
    y1: float


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A two-colour linear gradient with faint clutter lines and blobs."""
    start = rng.integers(0, 256, size=3).astype(np.float32)
    end = rng.integers(0, 256, size=3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xs / width) * math.cos(angle) + (ys / height) * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    pixels = start[None, None, :] * (1 - t[..., None]) + end[None, None, :] * t[..., None]
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = rng.uniform(0, width), rng.uniform(0, height)
        draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 3)))
    return image


def _contrasting_colour(rng: np.random.Generator, image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    """A random colour far enough from the background under (x, y) to be visible."""
    width, height = image.size
    under = np.asarray(image.getpixel((min(int(x), width - 1), min(int(y), height - 1))), dtype=np.float32)
    for _ in range(32):
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - under).sum() > 200:
            break
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, size: float,
                colour: tuple[int, int, int], rotation: float) -> tuple[float, float, float, float]:
    """Draw one shape; return its tight bounding box."""
    half = size / 2
    if name == "circle":
        box = (cx - half, cy - half, cx + half, cy + half)
        draw.ellipse(box, fill=colour)
        return box
    if name == "square":
        corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
    elif name == "triangle":
        corners = [(0.0, -half), (half, half), (-half, half)]
    else:  # cross: two bars
        bar = size / 6
        for dx, dy in ((half, bar), (bar, half)):
            draw.rectangle((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour)
        return (cx - half, cy - half, cx + half, cy + half)
    cos_r, sin_r = math.cos(rotation), math.sin(rotation)
    points = [(cx + px * cos_r - py * sin_r, cy + px * sin_r + py * cos_r) for px, py in corners]
    draw.polygon(points, fill=colour)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def _overlaps(box: tuple[float, float, float, float], others: list[Box]) -> bool:
    for other in others:
        ix = min(box[2], other.x1) - max(box[0], other.x0)
        iy = min(box[3], other.y1) - max(box[1], other.y0)
        if ix > -2 and iy > -2:
            return True
    return False


def detection_image(seed: int, index: int) -> tuple[Image.Image, list[Box]]:
    """One image with 1-4 non-overlapping shapes of the detection classes."""
    rng = np.random.default_rng([seed, index])
    width, height = DETECTION_IMAGE_SIZE
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    boxes: list[Box] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            size = float(rng.uniform(18, 60))
            cx = float(rng.uniform(size / 2 + 1, width - size / 2 - 1))
            cy = float(rng.uniform(size / 2 + 1, height - size / 2 - 1))
            candidate = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
            if not _overlaps(candidate, boxes):
                break
        else:
            continue
        class_id = int(rng.integers(0, len(DETECTION_CLASSES)))
        colour = _contrasting_colour(rng, image, cx, cy)
        rotation = float(rng.uniform(-0.35, 0.35))
        x0, y0, x1, y1 = _draw_shape(draw, DETECTION_CLASSES[class_id], cx, cy, size, colour, rotation)
        boxes.append(Box(class_id, max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)))
    return image, boxes


def classification_image(seed: int, index: int) -> tuple[Image.Image, int]:
    """One image holding a single shape of the classification classes."""
    rng = np.random.default_rng([seed, index])
    width, height = CLASSIFICATION_IMAGE_SIZE
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    class_id = int(rng.integers(0, len(CLASSIFICATION_CLASSES)))
    size = float(rng.uniform(26, 56))
    cx = float(rng.uniform(size / 2 + 1, width - size / 2 - 1))
    cy = float(rng.uniform(size / 2 + 1, height - size / 2 - 1))
    colour = _contrasting_colour(rng, image, cx, cy)
    _draw_shape(draw, CLASSIFICATION_CLASSES[class_id], cx, cy, size, colour, float(rng.uniform(-0.6, 0.6)))
    return image, class_id


def yolo_label_lines(boxes: list[Box], width: int, height: int) -> str:
    """Boxes in the YOLO text format: `class cx cy w h`, normalised to the image size."""
    lines = []
    for box in boxes:
        cx = (box.x0 + box.x1) / 2 / width
        cy = (box.y0 + box.y1) / 2 / height
        lines.append(f"{box.class_id} {cx:.6f} {cy:.6f} {(box.x1 - box.x0) / width:.6f} {(box.y1 - box.y0) / height:.6f}")
    return "\n".join(lines) + "\n"


def write_detection_split(folder: Path, seed: int, count: int) -> None:
    """Write `count` PNG images with a YOLO label file each, plus `classes.txt`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(DETECTION_CLASSES) + "\n")
    for index in range(count):
        image, boxes = detection_image(seed, index)
        image.save(folder / f"{index:04d}.png", optimize=True)
        (folder / f"{index:04d}.txt").write_text(yolo_label_lines(boxes, *image.size))


def write_classification_split(folder: Path, seed: int, count: int) -> None:
    """Write `count` PNG images into one sub-folder per class (the ImageNet layout)."""
    for name in CLASSIFICATION_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, class_id = classification_image(seed, index)
        image.save(folder / CLASSIFICATION_CLASSES[class_id] / f"{index:04d}.png", optimize=True)
