"""Fuzzing the recipe loader: 1,500 generated recipes per run, near-valid and broken, never give
anything but a typed recipe or a documented user error (no KeyError, IndexError, TypeError)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelc_build.errors import ModelcError
from modelc_build.recipe import load_recipe

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**13), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["fp32", "int8", "openvino", "batch", "1/255", "x.py:f",
                                                           "images", "folders", "yolo", "coco", "detection", ".nan"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)

BASE = {
    "format_version": 1, "name": "fuzz", "version": "1.0.0",
    "model": {"source": "torch", "factory": "net.py:build", "weights": "w.pt",
              "inputs": [{"name": "x", "shape": ["batch", 3, 8, 8]}], "outputs": ["y"]},
    "data": {"preprocess": {"size": [8, 8]}, "calibration": {"path": "cal"}, "evaluation": {"path": "ev"}},
    "task": {"type": "classification"},
    "targets": [{"backend": "openvino", "precisions": ["fp32", "int8"]}],
    "gates": {"int8": {"min_cosine": 0.9}},
}
PATHS = [("model",), ("model", "inputs"), ("model", "outputs"), ("data",), ("data", "preprocess"),
         ("data", "calibration"), ("data", "evaluation"), ("task",), ("targets",), ("gates",), ("gates", "int8"),
         ("quantization",), ("verify",), ("export",), ("latency",), ()]


def mutated(base: dict, path: tuple[str, ...], key: str | None, value: object) -> dict:
    import copy

    recipe = copy.deepcopy(base)
    node: object = recipe
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return recipe
        node = node[part]
    if isinstance(node, dict):
        if key is None and node:
            node.pop(sorted(node)[0])  # a key missing
        else:
            node[key if key is not None else "extra"] = value
    elif isinstance(node, list):
        node.append(value)
    return recipe


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), key=st.one_of(st.none(), st.sampled_from(
           ["name", "shape", "dtype", "precisions", "backend", "min_cosine", "size", "scale", "labels", "labels_path",
            "path", "samples", "batch_size", "type", "layout", "metric", "exporter", "runs", "overflow_fix",
            "cpus", "mode", "classes", "strict", "ignore_weights", "format"]), st.text(max_size=6)),
       value=VALUES)
def test_generated_recipes_give_a_recipe_or_a_documented_error(tmp_path: Path, path: tuple[str, ...], key: str | None,
                                                                value: object) -> None:
    recipe_file = tmp_path / "r.yaml"
    try:
        text = yaml.safe_dump(mutated(BASE, path, key, value), allow_unicode=True)
    except yaml.YAMLError:
        return
    recipe_file.write_text(text)
    try:
        load_recipe(recipe_file)
    except ModelcError as error:
        assert error.exit_code in (2, 3) and error.message.strip()
