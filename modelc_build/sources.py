"""Getting a model: a torch factory plus a state_dict, a TorchScript file, or an ONNX file.

`load_torch_model` returns an eval-mode `torch.nn.Module` (or ScriptModule); ONNX sources are
read by the export step directly. Every failure names the file and what to do.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from modelc_build.errors import InputError, first_line
from modelc_build.recipe_types import ModelSource


def resolve_factory(spec: str, base_dir: Path, key: str = "model.factory") -> Callable[..., Any]:
    """'path/to/file.py:function' (relative to the recipe) or 'package.module:function'; `key`
    names the recipe key in errors."""
    location, _, function = spec.rpartition(":")
    if location.endswith(".py"):
        file = (base_dir / location).resolve()
        if not file.is_file():
            raise InputError(f"{file}: the file does not exist: fix {key}")
        # A stable module name: TorchScript records it inside the saved archive.
        module_name = f"modelc_factory.{file.stem}_{hashlib.sha256(file.read_bytes()).hexdigest()[:8]}"
        module_spec = importlib.util.spec_from_file_location(module_name, file)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        # The factory's own folder and the project root become importable, like `python file.py` would.
        for folder in (str(file.parent), str(file.parent.parent)):
            if folder not in sys.path:
                sys.path.append(folder)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise InputError(f"{file}: importing it for {key} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise InputError(f"{key} '{spec}': cannot import '{location}' ({exc}): "
                             "install the package or give a path to a .py file") from exc
    factory = getattr(module, function, None)
    if not callable(factory):
        raise InputError(f"{key} '{spec}': '{location}' has no callable '{function}'")
    return factory


def load_torch_model(source: ModelSource) -> Any:
    """Build the reference PyTorch model in eval mode."""
    import torch

    if source.kind == "torchscript":
        assert source.path is not None
        if not source.path.is_file():
            raise InputError(f"{source.path}: the TorchScript file does not exist: fix model.path")
        try:
            module = torch.jit.load(str(source.path), map_location="cpu")
        except Exception as exc:
            raise InputError(f"{source.path}: not a TorchScript file torch.jit.load can read ({exc}); "
                             "save it with torch.jit.save") from exc
        return _as_declared(module.eval(), source)
    assert source.kind == "torch" and source.factory and source.weights
    factory = resolve_factory(source.factory, source.base_dir)
    try:
        model = factory(**dict(source.factory_args))
    except SystemExit as exc:  # a factory that ends the process is an input problem, not a green build
        raise InputError(f"model.factory '{source.factory}' called sys.exit({exc.code!r}) instead of returning a model: "
                         "remove the exit from the factory") from exc
    except Exception as exc:
        raise InputError(f"model.factory '{source.factory}' raised {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model.factory '{source.factory}' returned {type(model).__name__}, not a torch.nn.Module")
    state = load_state_dict(source.weights)
    dropped = [key for key in state if any(re.search(pattern, key) for pattern in source.ignore_weights)]
    for pattern in source.ignore_weights:  # a regular expression found anywhere in the key (^ and $ anchor it)
        if not any(re.search(pattern, key) for key in state):
            print(f"warning: model.ignore_weights: {pattern!r} matches no entry of {source.weights.name} "
                  f"(e.g. {next(iter(state), 'none')!r}): fix the pattern or remove it", file=sys.stderr, flush=True)
    for key in dropped:
        del state[key]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of other sizes: weights of another variant of the model
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()][:2]  # the header, then the first tensor
        raise InputError(f"{source.weights}: the weights do not fit the model from '{source.factory}' "
                         f"({' '.join(lines)[:400] or type(exc).__name__}): check model.factory_args and that the weights belong to this "
                         "model") from exc
    unexpected = result.unexpected_keys if source.strict else []
    if result.missing_keys or unexpected:
        details = []
        if result.missing_keys:
            details.append(f"missing {_few(result.missing_keys)}")
        if unexpected:
            details.append(f"unexpected {_few(unexpected)}")
        hint = "" if result.missing_keys else "; stale entries: set model.strict: false or list them in model.ignore_weights"
        raise InputError(f"{source.weights}: the state_dict does not match the model from '{source.factory}' "
                         f"({'; '.join(details)}): check model.factory_args and that the weights belong to this model{hint}")
    return _as_declared(model.eval(), source)


@functools.lru_cache(maxsize=1)
def _named_outputs_class() -> Any:
    import torch

    class NamedOutputsModule(torch.nn.Module):
        """The model with its outputs as the recipe names them: a dict or ModelOutput is read by
        name (a subset is fine), a longer tuple is cut to the names given; tensors pass through."""

        def __init__(self, model: torch.nn.Module, names: tuple[str, ...], arguments: dict[str, Any]) -> None:
            super().__init__()
            self.model = model
            self.names = names
            self.arguments = arguments  # Python values for forward, fixed in the recipe (model.arguments)

        def forward(self, *args: Any) -> Any:
            result = self.model(*args, **self.arguments)
            if isinstance(result, Mapping):
                missing = [name for name in self.names if name not in result]
                if missing:
                    raise InputError(f"model.outputs names {missing}, but the model returns {list(result)}: "
                                     "name outputs the model returns")
                return tuple(result[name] for name in self.names)
            if isinstance(result, (tuple, list)) and len(result) > len(self.names):
                return tuple(result[:len(self.names)])
            return result

    return NamedOutputsModule


def _as_declared(model: Any, source: ModelSource) -> Any:
    """Wrap the model only where it needs it: Python arguments fixed in the recipe, or outputs in a
    dict, a ModelOutput or a longer tuple (one probe with example inputs tells; a model that fails
    the probe is left for the input check)."""
    import torch

    from modelc_build.feeds import example_inputs

    arguments = dict(source.arguments)
    try:
        with torch.no_grad():
            result = model(*(torch.from_numpy(a) for a in example_inputs(source.inputs, dynamic_size=2)), **arguments)
    except Exception:  # noqa: BLE001 - reported, with the declared shapes, by check_model_accepts_inputs
        return _named_outputs_class()(model, source.outputs, arguments).eval() if arguments else model
    if arguments or isinstance(result, Mapping) or (isinstance(result, (tuple, list)) and len(result) > len(source.outputs)):
        return _named_outputs_class()(model, source.outputs, arguments).eval()
    return model


def load_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise InputError(f"{path}: the weights file does not exist: fix model.weights")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise InputError(f"{path}: .safetensors weights need the safetensors package: pip install safetensors") from exc
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise InputError(f"{path}: not a readable safetensors file ({first_line(exc, 200)})") from exc
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a state_dict that torch.load(weights_only=True) can read ({first_line(exc, 200)}); "
                         "save it with torch.save(model.state_dict(), path)") from exc
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a state_dict; "
                         "save it with torch.save(model.state_dict(), path)")
    if "state_dict" in state and isinstance(state["state_dict"], dict) and len(state) < 10:
        raise InputError(f"{path}: a training checkpoint with a nested 'state_dict'; save the state_dict alone")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        bad = next(k for k, v in state.items() if not isinstance(v, torch.Tensor))
        raise InputError(f"{path}: entry '{bad}' is not a tensor, so this is not a state_dict; "
                         "save it with torch.save(model.state_dict(), path)")
    return state


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
