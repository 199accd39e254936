"""torch -> TorchScript (trace or script, frozen, deterministic bytes) and PyTorch FX
post-training INT8 quantization: what the TorchScript backend builds with."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from compiler.data import example_inputs
from compiler.errors import CompileError, InputError, ModelcError
from compiler.recipe import Quantization, TensorSpec


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
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
        other = "trace" if mode == "script" else "script"
        raise CompileError(f"TorchScript {mode} failed: {first}; try mode: {other} on the torchscript target") from None
    pin_serialization_id(destination)


def quantize_torch_model(model: Any, inputs: tuple[TensorSpec, ...],
                         calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
                         options: Quantization = Quantization()) -> tuple[Any, int]:
    """x86 INT8 post-training quantization (torch.ao FX graph mode): observers calibrated on the
    representative data, then converted; the result is traced like any torch model. Modules and
    ops named in `quantization.torchscript_ignore` keep a `None` qconfig, so they stay float.
    Returns the model and how many samples calibrated it."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if isinstance(model, torch.jit.ScriptModule):
        raise CompileError("torchscript int8 needs a torch source (an nn.Module), not a TorchScript file")
    torch.backends.quantized.engine = "x86"
    mapping = get_default_qconfig_mapping("x86")
    for name in _checked_module_names(model, options.torchscript_ignore_modules):
        mapping.set_module_name(name, None)
    for pattern in options.torchscript_ignore_patterns:
        mapping.set_module_name_regex(pattern, None)
    for op in options.torchscript_ignore_ops:
        for resolved in _torch_ops(op):
            mapping.set_object_type(resolved, None)
    example = tuple(torch.from_numpy(a) for a in example_inputs(inputs, dynamic_size=1))
    samples = 0
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            prepared = prepare_fx(model.eval(), mapping, example)
            for feed in calibration():
                prepared(*[torch.from_numpy(feed[spec.name]) for spec in inputs])
                samples += len(feed[inputs[0].name])
            return convert_fx(prepared), samples
    except ModelcError:  # e.g. bad calibration data: its own message and exit code
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CompileError(f"PyTorch FX post-training quantization failed: {first}; "
                           "this model may not be FX-traceable: use an openvino int8 target instead") from None


def _checked_module_names(model: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    known = {name for name, _ in model.named_modules() if name}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"quantization.torchscript_ignore.modules: {', '.join(unknown)} not in the model; "
                         f"its submodules include {', '.join(sorted(known)[:10])}")
    return names


def _torch_ops(op: str) -> list[Any]:
    """'torch.cat' (a dotted path), 'SiLU' (a torch.nn class) or 'sigmoid' (a tensor method, and
    torch.sigmoid when that exists too)."""
    import torch

    if "." in op:
        target: Any = torch
        for part in op.split(".")[1:] if op.startswith("torch.") else op.split("."):
            target = getattr(target, part, None)
            if target is None:
                break
        if target is not None:
            return [target]
    elif isinstance(getattr(torch.nn, op, None), type):
        return [getattr(torch.nn, op)]
    elif hasattr(torch.Tensor, op):
        return [op] + ([getattr(torch, op)] if callable(getattr(torch, op, None)) else [])
    raise InputError(f"quantization.torchscript_ignore.ops: '{op}' is neither a torch function (torch.cat), "
                     "a torch.nn module class (SiLU) nor a tensor method (sigmoid)")


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
