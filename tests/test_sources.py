from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelc_build.errors import InputError
from modelc_build.recipe_types import ModelSource, TensorSpec
from modelc_build.sources import load_torch_model, resolve_factory

FIXTURES = Path(__file__).resolve().parent / "fixtures"
INPUTS = (TensorSpec("images", ("batch", 3, 16, 16)),)


def source(weights: Path, factory: str = "tiny_net.py:build_model") -> ModelSource:
    return ModelSource("torch", INPUTS, ("logits",), factory=factory, weights=weights, base_dir=FIXTURES)


def test_loads_factory_and_state_dict(tiny_weights: Path) -> None:
    model = load_torch_model(source(tiny_weights))
    assert not model.training
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing.pt: the weights file does not exist: fix model.weights"):
        load_torch_model(source(tmp_path / "missing.pt"))


def test_pickled_module_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module: weights_only=True refuses it
    with pytest.raises(InputError, match=r"whole.pt: not a state_dict that torch.load\(weights_only=True\) can read"):
        load_torch_model(source(path))


def test_list_of_tensors_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(InputError, match=r"list.pt: holds a list, not a state_dict"):
        load_torch_model(source(path))


def test_weights_of_another_model(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(InputError, match=r"the state_dict does not match the model .*\(missing conv.weight, conv.bias, bn.weight and 5 more; unexpected weight, bias\)"):
        load_torch_model(source(path))


def test_factory_errors(tiny_weights: Path) -> None:
    with pytest.raises(InputError, match="has no callable 'nothing'"):
        resolve_factory("tiny_net.py:nothing", FIXTURES)
    with pytest.raises(InputError, match="the file does not exist: fix model.factory"):
        resolve_factory("absent.py:build", FIXTURES)
    with pytest.raises(InputError, match="cannot import 'no_such_pkg.mod'"):
        resolve_factory("no_such_pkg.mod:build", FIXTURES)
    with pytest.raises(InputError, match="returned str, not a torch.nn.Module"):
        load_torch_model(source(tiny_weights, "tiny_net.py:not_a_module"))


def test_ignore_weights_are_regular_expressions_found_anywhere_and_one_that_matches_nothing_is_said(
        tmp_path: Path, tiny_weights: Path, capsys) -> None:
    import dataclasses

    import torch

    state = torch.load(tiny_weights, weights_only=True)
    state["similarity_head.weight"] = torch.zeros(2)  # a stale entry the model does not have
    stale = tmp_path / "stale.pt"
    torch.save(state, stale)
    with pytest.raises(InputError, match="unexpected"):
        load_torch_model(source(stale))
    model = load_torch_model(dataclasses.replace(source(stale), ignore_weights=("^similarity_", "no_such_entry")))
    assert model is not None
    said = capsys.readouterr().err
    assert "warning: model.ignore_weights: 'no_such_entry' matches no entry of stale.pt" in said
    assert "'^similarity_'" not in said
