"""torch -> TorchScript (trace or script, frozen, deterministic bytes): what the TorchScript
backend builds with."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from modelc_build.errors import CompileError, first_line
from modelc_build.feeds import example_inputs
from modelc_build.recipe_types import TensorSpec


def export_torchscript(model: Any, inputs: tuple[TensorSpec, ...], mode: str, destination: Path) -> None:
    """Trace (default) or script the model and save it."""
    import torch

    example = tuple(torch.from_numpy(a) for a in example_inputs(inputs, dynamic_size=1))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if isinstance(model, torch.jit.ScriptModule):
                module = model
            elif mode == "script":
                module = torch.jit.script(model)
            else:
                module = torch.jit.trace(model, example, check_trace=False)
            module = torch.jit.freeze(module.eval()) if not isinstance(model, torch.jit.ScriptModule) else module
            torch.jit.save(module, str(destination))
    except Exception as exc:
        first = first_line(exc, 400)
        other = "trace" if mode == "script" else "script"
        raise CompileError(f"TorchScript {mode} failed: {first}; try mode: {other} on the torchscript target") from exc
    pin_serialization_id(destination)


SERIALIZATION_ID_SUFFIX = "/.data/serialization_id"


def pin_serialization_id(archive: Path) -> None:
    """Make a TorchScript zip reproducible: torch writes a random `.data/serialization_id` on every
    save. Overwrite it in place (same length, CRCs fixed) with digits derived from the rest of the
    archive, so identical models give identical bytes and the zip layout torch wrote is kept."""
    import hashlib
    import struct
    import zipfile
    import zlib

    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        target = next((i for i in infos if i.filename.endswith(SERIALIZATION_ID_SUFFIX)), None)
        directory_start = zf.start_dir  # where the central directory begins
        if target is None or target.compress_type != zipfile.ZIP_STORED:
            return
        digest = hashlib.sha256()
        for info in infos:
            if info is not target:
                digest.update(f"{info.filename}:{info.CRC}:{info.file_size};".encode())
    digits = str(int(digest.hexdigest(), 16)).rjust(target.file_size, "0")[-target.file_size:].encode()
    crc = zlib.crc32(digits) & 0xFFFFFFFF
    data = bytearray(archive.read_bytes())
    offset = target.header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, offset + 26)
    start = offset + 30 + name_len + extra_len
    data[start:start + target.file_size] = digits
    struct.pack_into("<I", data, offset + 14, crc)
    name = target.filename.encode()
    position = directory_start
    while (position := data.find(b"PK\x01\x02", position)) != -1:
        entry_name_len = struct.unpack_from("<H", data, position + 28)[0]
        if data[position + 46:position + 46 + entry_name_len] == name:
            struct.pack_into("<I", data, position + 16, crc)
            break
        position += 4
    archive.write_bytes(bytes(data))
