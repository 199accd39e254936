"""Adding a backend is its module plus one registry line; the backends' tables are the one place
their facts live (the shipped schema agrees with them); recipes written for an older modelc say
what replaced a removed key, and `modelc migrate` rewrites them into ones that build."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import FIXTURES, REPO


def install_plugin(site: Path) -> Path:
    """A distribution whose one entry point registers tests/fixtures/plugins/toy_backend.py as the
    backend `toy` (what `pip install` of a plug-in package leaves in site-packages)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "toy_backend.py").write_text((FIXTURES / "plugins" / "toy_backend.py").read_text())
    info = site / "modelc_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: modelc-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[modelc_build.backends]\ntoy = toy_backend:ToyBackend\n")
    return site


def modelc(*args: object, site: Path | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "modelc_build", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_a_backend_is_its_module_and_one_registry_line(tmp_path: Path, tiny_recipe) -> None:
    site = install_plugin(tmp_path / "site")
    data = yaml.safe_load(tiny_recipe().read_text())
    data["targets"] = [{"backend": "toy", "precisions": ["fp32"]}, {"backend": "onnxruntime", "precisions": ["fp32"]}]
    data["gates"] = {"fp32": data["gates"]["fp32"]}
    recipe = tiny_recipe(data, name="toy.yaml")
    refused = modelc("validate", recipe)
    assert refused.returncode == 2 and "'toy' is not one of" in refused.stderr  # not installed: not a backend
    listed = tiny_recipe({**data, "targets": [{"backend": "toy", "precisions": ["fp16"]}]}, name="toy-fp16.yaml")
    wrong = modelc("validate", listed, site=site)
    assert wrong.returncode == 2 and "toy fp16 is not supported; toy supports fp32" in wrong.stderr
    store = tmp_path / "store"
    built = modelc("build", recipe, "--store", store, site=site)
    assert built.returncode == 0, built.stderr
    release = store / "tiny" / "0.1.0"
    manifest = json.loads((release / "manifest.json").read_text())
    toy = next(a for a in manifest["artifacts"] if a["target"] == "toy-fp32")
    assert toy["backend"] == "toy" and toy["files"] == ["toy-fp32/toy.onnx"]
    report = json.loads((release / "report.json").read_text())
    judged = next(a for a in report["artifacts"] if a["target"] == "toy-fp32")
    assert judged["passed"] and min(o["cosine"] for o in judged["outputs"]) > 0.9999 and judged["latency_ms"] > 0
    proved = modelc("verify", release, "--unsigned", "--run", "--target", "toy-fp32", site=site)
    assert proved.returncode == 0, proved.stderr
    assert "every file matches its manifest (unsigned" in proved.stdout and "toy-fp32 on " in proved.stdout


def test_the_shipped_schema_lists_the_built_in_backends_and_their_precisions() -> None:
    from modelc_build.backends import _REGISTRY, capabilities

    shipped = json.loads((REPO / "modelc_build" / "schema" / "recipe.schema.json").read_text())
    target = shipped["$defs"]["target"]["properties"]
    assert set(target["backend"]["enum"]) == set(_REGISTRY)
    offered = {p for name in _REGISTRY for p in (*capabilities(name).precisions, *capabilities(name).refused)}
    assert set(target["precisions"]["items"]["enum"]) == offered
    options = {key for name in _REGISTRY for key in capabilities(name).options}
    assert options == set(target) - {"backend", "precisions"}  # each backend's own keys, and no other


def test_a_target_key_of_another_backend_names_the_backends_that_take_it(tmp_path: Path) -> None:
    from modelc_build.errors import RecipeError
    from modelc_build.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"format_version": 1, "name": "r", "version": "1.0.0",
                                      "model": {"source": "onnx", "path": "m.onnx", "inputs": [{"name": "x", "shape": [1, 3]}],
                                                "outputs": ["y"]},
                                      "targets": [{"backend": "openvino", "precisions": ["fp32"], "gpus": ["sm89"],
                                                   "mode": "trace"}]}))
    with pytest.raises(RecipeError) as raised:
        load_recipe(recipe)
    messages = [p.message for p in raised.value.problems]
    assert "'gpus' applies to tensorrt targets only; remove it" in messages
    assert "'mode' applies to torchscript targets only; remove it" in messages


OLD_RECIPE = """\
# written for modelc before verify.cpus existed
format_version: 1
name: tiny
version: 0.1.0
verify:
  openvino_inference_precision: f32
  second_isa: {value}   # oneDNN capped at this ISA
  golden_samples: 4
"""


@pytest.mark.parametrize("value, cpus", [("none", []), ("AVX2", ["Haswell"]), ("AVX512_CORE", ["Haswell"])])
def test_migrate_rewrites_second_isa_into_cpus_keeping_comments(value: str, cpus: list[str]) -> None:
    from modelc_build.migrate import migrate_text

    migration = migrate_text(OLD_RECIPE.format(value=value))
    assert yaml.safe_load(migration.text)["verify"] == {"openvino_inference_precision": "f32", "cpus": cpus,
                                                        "golden_samples": 4}
    assert migration.text.startswith("# written for modelc before verify.cpus existed\n")
    assert len(migration.notes) == 1 and f"verify.second_isa: {value} -> verify.cpus: {cpus}" in migration.notes[0]
    assert migrate_text(migration.text).notes == []  # nothing left to migrate


def test_every_removed_key_is_named_with_its_replacement_and_migrated(tmp_path: Path) -> None:
    """Each key of migrate.CHANGES: a recipe using it fails with one line naming the replacement
    and the version, and migrates into one the parser takes."""
    from modelc_build.errors import RecipeError
    from modelc_build.migrate import CHANGES, migrate_text
    from modelc_build.recipe import load_recipe

    for change in CHANGES:
        data: dict = {"format_version": 1, "name": "r", "version": "1.0.0",
                      "model": {"source": "onnx", "path": "m.onnx", "inputs": [{"name": "x", "shape": [1, 3]}], "outputs": ["y"]},
                      "targets": [{"backend": "onnxruntime", "precisions": ["fp32"]}]}
        section = data
        for key in change.path[:-1]:
            section = section.setdefault(key, {})
        section[change.path[-1]] = "none"
        old = tmp_path / "old.yaml"
        old.write_text(yaml.safe_dump(data, sort_keys=False))
        with pytest.raises(RecipeError) as raised:
            load_recipe(old)
        [problem] = raised.value.problems
        assert problem.key_path == change.key and change.replacement in problem.message
        assert f"removed in modelc {change.changed_in}" in problem.message and "modelc migrate" in problem.message
        old.write_text(migrate_text(old.read_text()).text)
        assert load_recipe(old).name == "r"


def test_modelc_migrate_turns_an_old_recipe_into_one_that_builds(tmp_path: Path, tiny_recipe) -> None:
    data = yaml.safe_load(tiny_recipe().read_text())
    data["targets"] = [{"backend": "onnxruntime", "precisions": ["fp32"]}]
    data["gates"] = {"fp32": data["gates"]["fp32"]}
    data["verify"] = {"openvino_inference_precision": "f32", "second_isa": "none"}
    old = tiny_recipe(data, name="old.yaml")
    refused = modelc("build", old, "--store", tmp_path / "store")
    assert refused.returncode == 2 and "'second_isa' was removed in modelc" in refused.stderr
    assert "use verify.cpus instead" in refused.stderr and refused.stderr.count("\n") == 1
    printed = modelc("migrate", old)
    assert printed.returncode == 0 and "cpus: []" in printed.stdout and "second_isa" in old.read_text()  # printed only
    written = modelc("migrate", old, "--write")
    assert written.returncode == 0 and f"{old}: rewritten" in written.stderr and "second_isa" not in old.read_text()
    built = modelc("build", old, "--store", tmp_path / "store")
    assert built.returncode == 0, built.stderr
    assert modelc("migrate", old).stderr.strip() == f"{old}: nothing to migrate"
