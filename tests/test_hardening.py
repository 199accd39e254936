"""Hardened edges: the measurement digest covers every setting that shapes a measurement (checked
against the schema, so a new key cannot be forgotten), release names and versions are checked on
every load whatever a cache says, CLI options keep their promises."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from modelc_build.recipe import load_recipe, recipe_schema
from modelc_build.recipe_types import Dataset, Gate, Preprocess, Task, VerifyOptions
from modelc_build.release import measurement_material

SCHEMA_TO_FIELDS = {"preprocess": {"size": {"width", "height"}}}
NOT_MEASUREMENT = {"dataset": {"path", "labels_path"}}  # where files are, not what they are: their digests count


@pytest.mark.parametrize("section,dataclass", [("dataset", Dataset), ("preprocess", Preprocess), ("task", Task),
                                               ("gate", Gate), ("verify", VerifyOptions)])
def test_every_schema_key_that_shapes_a_measurement_is_in_its_digest(section: str, dataclass: type) -> None:
    """A key added to the schema must reach the dataclass the measurement digest reads."""
    keys = set(recipe_schema()["$defs"][section]["properties"]) - NOT_MEASUREMENT.get(section, set())
    names = {f.name for f in fields(dataclass)}
    for key in keys:
        assert SCHEMA_TO_FIELDS.get(section, {}).get(key, {key}) <= names, (section, key)


def digest(recipe_file: Path) -> str:
    from modelc_build.cache import cache_key

    return cache_key(measurement_material(load_recipe(recipe_file), {"evaluation": "same bytes"}))


@pytest.mark.parametrize("change", [
    ("data", "evaluation", "samples", 3), ("data", "evaluation", "shuffle", True), ("data", "evaluation", "seed", 7),
    ("data", "evaluation", "batch_size", 2), ("data", "preprocess", "resize", "letterbox"), ("data", "preprocess", "scale", 0.5),
    ("task", "confidence_threshold", 0.5), ("gates", "fp16", "min_cosine", 0.5), ("verify", "golden_samples", 3),
    ("verify", "cpus", ["SandyBridge"]),
])
def test_a_setting_that_shapes_a_measurement_changes_its_digest(tiny_recipe, change: tuple) -> None:
    base = yaml.safe_load(tiny_recipe().read_text())
    before = digest(tiny_recipe(base, name="before.yaml"))
    *path, key, value = change
    section = base
    for part in path:
        section = section.setdefault(part, {})
    section[key] = value
    assert digest(tiny_recipe(base, name="after.yaml")) != before, change


def test_a_planted_schema_memo_does_not_let_an_unsafe_name_through(tmp_path: Path, tiny_recipe, run_cli) -> None:
    """A memo file named like the digest of a recipe that names itself `../escape` skips the
    schema; the name check runs on every load regardless, and the store checks again."""
    from modelc_build.recipe import _schema_memo_file

    recipe = tiny_recipe({"name": "../escape"}, name="unsafe.yaml")
    memo = _schema_memo_file(tmp_path / "cache" / "schema-passed", recipe.read_bytes())
    memo.parent.mkdir(parents=True)
    memo.touch()
    result = run_cli("build", recipe, "--store", tmp_path / "store", "--cache", tmp_path / "cache")
    assert result.exit_code == 2 and "'../escape' is not a release name" in result.stderr
    assert not (tmp_path / "escape").exists() and not (tmp_path / "store").exists()
    from modelc_build.errors import StoreError
    from modelc_build.stores.local import LocalStore

    with pytest.raises(StoreError, match="is not a release name"):
        LocalStore(tmp_path / "store").release_path("../escape", "1.0.0")


@pytest.mark.parametrize("version,ok", [("1.0.0", True), ("1.2.0rc1", True), ("2.0.0.post1", True), ("banana", False),
                                        ("1.0.0+local", False), ("1.0/../2", False)])
def test_versions_are_pep_440(tiny_recipe, version: str, ok: bool) -> None:
    from modelc_build.errors import RecipeError

    recipe = tiny_recipe({"version": version}, name="v.yaml")
    if ok:
        assert load_recipe(recipe).version == version
    else:
        with pytest.raises(RecipeError, match="not a release version: use a PEP 440 version"):
            load_recipe(recipe)


def test_versions_are_listed_in_pep_440_order() -> None:
    from modelc_build.stores import version_order

    assert version_order(["1.10.0", "1.2.0", "1.2.0rc1", "0.9"]) == ["0.9", "1.2.0rc1", "1.2.0", "1.10.0"]


def test_plan_never_runs_the_recipes_code(tmp_path: Path, tiny_recipe, run_cli) -> None:
    """`validate` and `plan` run on untrusted pull requests: a data function that would write a file
    is not called; the steps it decides are said to need a build."""
    ran = tmp_path / "ran.txt"
    (tmp_path / "evil.py").write_text("import numpy as np\n"
                                      f"def batches():\n    open({str(ran)!r}, 'w').write('ran')\n"
                                      "    yield np.zeros((2, 3, 16, 16), np.float32)\n")
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["evaluation"] = {"path": f"{tmp_path / 'evil.py'}:batches"}
    base["task"] = {"type": "generic"}
    base["gates"] = None
    recipe = tiny_recipe(base, name="code.yaml")
    assert run_cli("validate", recipe).exit_code == 0
    planned = run_cli("plan", recipe, "--json")
    assert planned.exit_code == 0, planned.stderr
    steps = {s["id"]: s["status"] for s in json.loads(planned.stdout)["steps"]}
    assert steps["reference"].startswith("will run (data.evaluation is a Python data function; plan does not run")
    assert not ran.exists()


def test_debug_and_json_go_before_or_after_any_command(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = tiny_recipe()
    for args in (["--json", "validate", recipe], ["validate", recipe, "--json"], ["--json", "plan", recipe],
                 ["--json", "keygen", "--out", tmp_path / "k"], ["cache", "ls", "--json"], ["--json", "cache", "gc",
                                                                                         "--keep-days", "1"]):
        result = run_cli(*args)
        assert result.exit_code == 0, (args, result.stderr)
        json.loads(result.stdout)
    bad = tiny_recipe({"version": "banana"}, name="bad.yaml")
    for args in (["--debug", "validate", bad], ["validate", bad, "--debug"]):
        result = run_cli(*args)
        assert result.exit_code == 2 and "modelc_build.errors.RecipeError" in result.stderr, args  # --debug: the exception
    assert run_cli("keygen", "--out", tmp_path / "k").exit_code == 2  # exists: a usage error, not a signature one


def test_a_store_that_does_not_exist_is_an_error(tmp_path: Path, run_cli) -> None:
    result = run_cli("ls", "--store", tmp_path / "nowhere")
    assert result.exit_code == 5 and "no store here (the folder does not exist)" in result.stderr


def test_a_huge_value_is_cut_in_the_one_error_line(tiny_recipe, run_cli) -> None:
    result = run_cli("validate", tiny_recipe({"version": "9" * 100_000}, name="huge.yaml"))
    assert result.exit_code == 2
    assert max(len(line) for line in result.stderr.splitlines()) < 1200


def test_an_object_array_in_an_npz_is_refused_without_unpickling(tmp_path: Path) -> None:
    import numpy as np

    from modelc_build.data import DataReader
    from modelc_build.errors import InputError
    from modelc_build.recipe_types import TensorSpec

    np.savez(tmp_path / "data.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InputError, match="array 'x' holds Python objects"):
        list(DataReader(Dataset(tmp_path / "data.npz", "npz"), (TensorSpec("x", ("batch",)),), None).batches())


def test_a_cache_that_is_a_file_is_exit_10_in_one_line(tmp_path: Path, tiny_recipe, run_cli) -> None:
    (tmp_path / "cachefile").write_text("")
    result = run_cli("build", tiny_recipe(), "--store", tmp_path / "store", "--cache", tmp_path / "cachefile")
    assert result.exit_code == 10 and "the step cache must be a folder, and this is a file" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_warns_about_an_empty_data_folder(tmp_path: Path, tiny_recipe, run_cli) -> None:
    (tmp_path / "empty").mkdir()
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["evaluation"]["path"] = str(tmp_path / "empty")
    result = run_cli("validate", tiny_recipe(base, name="empty.yaml"))
    assert "is an empty folder: a build reads no samples from it" in result.stderr


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs, and a read-only one, where this machine lets the test mount them."""
    import subprocess

    full, read_only = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    read_only.mkdir()
    mounted = []
    for folder, options in ((full, "size=1m"), (read_only, "size=1m,ro")):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            for other in mounted:
                subprocess.run(["umount", str(other)])
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root in a VM or container that allows it")
        mounted.append(folder)
    yield full, read_only
    for folder in mounted:
        subprocess.run(["umount", str(folder)])


def test_a_full_disk_and_a_read_only_cache_are_named_as_such(small_disk, tmp_path: Path, tiny_recipe, run_cli) -> None:
    full, read_only = small_disk
    with (full / "ballast").open("wb") as ballast:  # leave about 32 KiB: less than the tiny release needs
        ballast.write(b"\0" * (1024 * 1024 - 32 * 1024))
    recipe = tiny_recipe()
    stored = run_cli("build", recipe, "--store", full / "store", "--cache", tmp_path / "cache")
    assert stored.exit_code == 10, stored.stderr
    line = stored.stderr.strip().splitlines()[-1]
    assert "no space left on the device (ENOSPC)" in line and len(line) < 600
    assert not any(p.name == "0.1.0" for p in (full / "store").rglob("*"))  # nothing half-written stays
    cached = run_cli("build", recipe, "--store", tmp_path / "store", "--cache", read_only / "cache")
    assert cached.exit_code == 10, cached.stderr
    assert "the file system is read-only (EROFS)" in cached.stderr and "Traceback" not in cached.stderr
    crowded = run_cli("build", recipe, "--store", tmp_path / "store2", "--cache", full / "cache")
    assert crowded.exit_code == 10, crowded.stderr  # the cache itself fills up mid-build
    assert "(ENOSPC)" in crowded.stderr and "Traceback" not in crowded.stderr
