"""Image preprocessing as the recipe declares it: resize or letterbox, colour order, scale, mean/std, layout.

Kept free of heavy imports (NumPy and Pillow only) so that training scripts and the data loaders
share exactly one implementation: what the model saw in training is what calibration and
evaluation feed it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelc_build.recipe_types import Preprocess

if TYPE_CHECKING:  # image work loads NumPy and Pillow when it runs
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class Placement:
    """Where the original image landed in the model input: input = original * gain + pad."""

    gain_x: float
    gain_y: float
    pad_x: float
    pad_y: float

    def to_input(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (x0 * self.gain_x + self.pad_x, y0 * self.gain_y + self.pad_y,
                x1 * self.gain_x + self.pad_x, y1 * self.gain_y + self.pad_y)


def resize_image(image: Image.Image, spec: Preprocess) -> tuple[Image.Image, Placement]:
    """Resize (stretch) or letterbox `image` to the spec's size."""
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    if spec.resize == "letterbox":
        gain = min(spec.width / width, spec.height / height)
        new_w, new_h = max(1, round(width * gain)), max(1, round(height * gain))
        pad_x, pad_y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
        canvas = Image.new("RGB", (spec.width, spec.height), (spec.pad_value,) * 3)
        canvas.paste(image.resize((new_w, new_h), Image.Resampling.BILINEAR), (pad_x, pad_y))
        return canvas, Placement(new_w / width, new_h / height, float(pad_x), float(pad_y))
    if (width, height) == (spec.width, spec.height):
        return image, Placement(1.0, 1.0, 0.0, 0.0)
    resized = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    return resized, Placement(spec.width / width, spec.height / height, 0.0, 0.0)


def to_tensor(image: Image.Image, spec: Preprocess) -> np.ndarray:
    """A resized RGB image -> float32 array in the spec's layout, scaled and normalised."""
    import numpy as np

    pixels: np.ndarray = np.asarray(image, dtype=np.float32)
    if spec.color == "bgr":
        pixels = pixels[..., ::-1]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    pixels = (pixels * np.float32(spec.scale) - mean) / std
    if spec.layout == "nchw":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def preprocess_image(image: Image.Image, spec: Preprocess) -> tuple[np.ndarray, Placement]:
    resized, placement = resize_image(image, spec)
    return to_tensor(resized, spec), placement
