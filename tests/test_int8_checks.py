"""Label-free metrics, default gates, data roles in the plan, emulated deploy CPUs and precision settings in the plan, the latency flag."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelc_build.accuracy import Evaluation, OutputMetrics, TaskMetric, apply_gates, compare
from modelc_build.backends import Runner
from modelc_build.data import Batch
from modelc_build.host import HostFacts
from modelc_build.recipe_types import DEFAULT_GATES, Task, TensorSpec
from modelc_build.report import ArtifactReport, Report

INPUTS = (TensorSpec("x", ("batch", 4)),)


class Fixed(Runner):
    """Answers every feed with the next array of `answers`."""

    def __init__(self, answers: list[np.ndarray]) -> None:
        super().__init__(INPUTS, ("logits",))
        self.answers = iter(answers)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"logits": next(self.answers)}


def test_label_free_classification_metrics() -> None:
    reference = np.array([[9.0, 0, 0, 0, 0, 0], [0, 1.0, 0.9, 0, 0, 0], [0, 0, 0, 0, 0, 5.0], [3.0, 2.9, 0, 0, 0, 0]])
    # sample 0: same top-1; 1: other top-1 but reference's in top-5; 2: reference's class last; 3: same
    artifact = np.array([[9.0, 0, 0, 0, 0, 0], [0, 0.9, 1.0, 0, 0, 0], [5.0, 4.0, 3.0, 2.0, 1.0, 0], [3.0, 2.0, 0, 0, 0, 0]])
    batch = Batch({"x": np.zeros((4, 4), np.float32)}, ["a", "b", "c", "d"])
    with Fixed([artifact]) as runner:
        result = compare([(batch, {"logits": reference})], {"a": runner}, INPUTS, ("logits",), Task("classification"))["a"]
    free = result.task.label_free
    assert result.task.name == "top1_agreement" and result.task.value == 50.0 and result.task.reference == 100.0
    assert free["top1_agreement"] == 50.0 and free["top5_containment"] == 75.0
    # confident (softmax p >= 0.5): samples 0 and 2 only; the artifact agrees on 0
    assert free["confident_samples"] == 2 and free["confident_agreement"] == 50.0


def test_label_free_detection_metric_is_map_against_the_reference_detections() -> None:
    task = Task("detection", classes=("a", "b"), confidence_threshold=0.001)
    row = [[20.0, 20.0, 10.0, 10.0, 0.9, 0.9, 0.1], [60.0, 60.0, 10.0, 10.0, 0.9, 0.1, 0.9]]
    reference = np.array([row], dtype=np.float32)
    shifted = reference.copy()
    shifted[0, 1, :2] += 30  # the second object moved away: half the reference's objects found
    batch = Batch({"x": np.zeros((1, 4), np.float32)}, ["img"])
    with Fixed([reference]) as first, Fixed([shifted]) as second:
        same = compare([(batch, {"logits": reference})], {"a": first}, INPUTS, ("logits",), task)["a"]
        moved = compare([(batch, {"logits": reference})], {"a": second}, INPUTS, ("logits",), task)["a"]
    assert same.task.name == "reference_map50" and same.task.value == 100.0
    assert moved.task.label_free["reference_map50"] == 50.0 and moved.task.label_free["reference_objects"] == 2


def test_default_int8_gates_catch_a_collapse_and_say_by_how_much() -> None:
    collapsed = Evaluation([OutputMetrics("logits", 1.0, 0.1, 0.62, 3.0)],
                           TaskMetric("top1_agreement", 33.0, 100.0, 33.0, {"top5_containment": 62.0}), 300)
    sources = {"min_cosine": ("default", None), "min_top5_containment": ("default", None)}
    checks = {c.gate: c for c in apply_gates(collapsed, DEFAULT_GATES["int8"], sources)}
    assert not checks["min_cosine"].passed and not checks["min_top5_containment"].passed
    assert checks["min_cosine"].describe() == ("min_cosine on output 'logits': 0.62 vs threshold 0.95 "
                                               "(MISSED by 0.33, default gate)")


def test_tuning_never_reads_the_evaluation_set(tmp_path: Path, tiny_recipe) -> None:
    import yaml

    from modelc_build.fingerprint import DataSource
    from modelc_build.plan import make_plan
    from modelc_build.recipe import load_recipe

    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": base["data"]["evaluation"]["path"] + "-calibration", "labels": "folders"}
    base["targets"] = [{"backend": "openvino", "precisions": ["int8"]}, {"backend": "onnxruntime", "precisions": ["int8"]}]
    base["gates"] = {"int8": {"max_metric_drop": 5}}  # gates the task metric: accuracy-controlled
    base["quantization"] = {"sensitivity_layers": 2}
    plan = make_plan(load_recipe(tiny_recipe(base, name="tune.yaml")), HostFacts("avx512-vnni"))
    readers: dict[str, set[str]] = {}
    for step in plan.steps:
        for value in vars(step).values():
            sources = [value] if isinstance(value, DataSource) else [getattr(value, "data", None)]
            for source in sources:
                if isinstance(source, DataSource):
                    readers.setdefault(source.role, set()).add(step.kind)
    assert readers["evaluation"] <= {"decode", "reference", "golden", "verify", "latency", "worth"}  # worth: a timing
    assert {"sensitivity", "compile"} <= readers["validation"]  # accuracy control and sensitivity tune there
    tuning = next(s for s in plan.steps if s.id == "sensitivity").scoring
    assert tuning.every == 4 and "data.calibration" in tuning.note  # no data.validation: a split, said so


def plan_ids(recipe, kernel_class: str, bf16: bool) -> list[str]:
    """The plan's step ids as a build on a CPU of `kernel_class` (with or without bf16) makes it:
    a plan is a function of the recipe and the host facts it is given."""
    from modelc_build.plan import make_plan

    return [s.id for s in make_plan(recipe, HostFacts(kernel_class, low_precision_float=bf16, emulator="qemu-x86_64")).steps]


@pytest.mark.parametrize("kernel_class", ["avx512-vnni", "amx", "avx512", "avx2"])
def test_int8_is_checked_on_an_emulated_haswell_unless_the_build_machine_is_that_class(
        tiny_recipe, kernel_class: str) -> None:
    import yaml

    from modelc_build.recipe import load_recipe

    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": base["data"]["evaluation"]["path"]}
    base["targets"] = [{"backend": "openvino", "precisions": ["fp32", "int8"]}, {"backend": "onnxruntime", "precisions": ["int8"]}]
    base["gates"] = None
    base["verify"] = {"openvino_inference_precision": "f32"}  # verify.cpus left to its default, [Haswell]
    recipe = load_recipe(tiny_recipe(base, name="cpus.yaml"))
    ids = plan_ids(recipe, kernel_class, bf16=False)
    emulated = {i for i in ids if i.endswith("@haswell")}
    if kernel_class == "avx2":  # the build machine is itself the Haswell class: its native run is that check
        assert emulated == set()
    else:
        assert emulated == {"verify:openvino-int8@haswell", "verify:onnxruntime-int8@haswell"}
    forced = load_recipe(tiny_recipe({**base, "verify": {"emulate_host_class": True, "cpus": ["Haswell", "SandyBridge"]}},
                                     name="forced.yaml"))
    ids = plan_ids(forced, kernel_class, bf16=False)
    assert {"verify:openvino-int8@haswell", "verify:openvino-int8@sandybridge"} <= set(ids)
    assert not any(i.startswith("verify:openvino-fp32@") for i in ids)  # float artifacts are not emulated
    nothing = load_recipe(tiny_recipe({**base, "verify": {"cpus": []}}, name="none.yaml"))
    assert not any("@" in i for i in plan_ids(nothing, kernel_class, bf16=False))


@pytest.mark.parametrize("precision", ["f32", "default", "bf16"])
def test_openvino_is_also_measured_under_the_other_precision_where_the_cpu_computes_differently(
        tiny_recipe, precision: str) -> None:
    import yaml

    from modelc_build.plan import deploy_config
    from modelc_build.recipe import load_recipe

    base = yaml.safe_load(tiny_recipe().read_text())
    base["verify"] = {"openvino_inference_precision": precision}
    recipe = load_recipe(tiny_recipe(base, name=f"{precision}.yaml"))
    target = next(t for t in recipe.targets if t.backend == "openvino")
    assert deploy_config(recipe, target) == (() if precision == "default" else (("INFERENCE_PRECISION_HINT", precision),))
    for bf16 in (False, True):
        ids = plan_ids(recipe, "avx512-vnni", bf16)
        extra = {i.split("@")[1] for i in ids if i.startswith(f"verify:{target.id}@")}
        if precision == "f32":  # pinned, as deployed: this CPU's own bf16 default is reported beside
            assert extra == ({"runtime-default"} if bf16 else set())
        elif precision == "default":  # the plugin's choice, as deployed: f32 beside where it differs
            assert extra == ({"f32"} if bf16 else set())
        else:
            assert extra == {"f32"}


@pytest.mark.parametrize("vnni", [True, False])
def test_onnxruntime_int8_gets_a_vnni_layout_only_where_the_build_machine_can_verify_it(tiny_recipe, vnni: bool) -> None:
    import yaml

    from modelc_build.plan import make_plan
    from modelc_build.recipe import load_recipe

    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": base["data"]["evaluation"]["path"]}
    base["targets"] = [{"backend": "onnxruntime", "precisions": ["int8"]}, {"backend": "openvino", "precisions": ["int8"]}]
    base["gates"] = None
    recipe = load_recipe(tiny_recipe(base, name="variants.yaml"))
    facts = HostFacts("avx512-vnni" if vnni else "avx2", vnni=vnni)
    steps = {s.id: s for s in make_plan(recipe, facts).steps}
    assert steps["compile:onnxruntime-int8"].cpu_variants == (("vnni",) if vnni else ())
    assert steps["compile:openvino-int8"].cpu_variants == ()  # one IR, right on every class (overflow fix)
    off = load_recipe(tiny_recipe({**base, "quantization": {"onnxruntime_vnni": False}}, name="off.yaml"))
    assert {s.id: s for s in make_plan(off, facts).steps}["compile:onnxruntime-int8"].cpu_variants == ()


def test_a_recipe_without_verify_deploys_openvino_pinned_to_f32(tiny_recipe) -> None:
    import yaml

    from modelc_build.plan import deploy_config
    from modelc_build.recipe import load_recipe

    base = yaml.safe_load(tiny_recipe().read_text())
    base["verify"] = None
    recipe = load_recipe(tiny_recipe(base, name="plain.yaml"))
    for target in recipe.targets:
        expected = (("INFERENCE_PRECISION_HINT", "f32"),) if target.backend == "openvino" else ()
        assert deploy_config(recipe, target) == expected, target


def artifact(target: str, precision: str, latency: float) -> ArtifactReport:
    return ArtifactReport(target, "onnxruntime", precision, [], Evaluation([], None, 1), latency)


def test_an_int8_artifact_not_faster_than_fp32_is_flagged() -> None:
    slow = Report("m", "1", "ref", "data", 1, "generic", None, None,
                  [artifact("onnxruntime-fp32", "fp32", 5.0), artifact("onnxruntime-int8", "int8", 14.0)])
    fast = Report("m", "1", "ref", "data", 1, "generic", None, None,
                  [artifact("onnxruntime-fp32", "fp32", 5.0), artifact("onnxruntime-int8", "int8", 2.2)])
    assert slow.flags() == ["onnxruntime-int8 is not faster than onnxruntime-fp32: 14.000 ms vs 5.000 ms (ratio 2.80)"]
    assert fast.flags() == [] and slow.passed  # a flag, not a failed gate
