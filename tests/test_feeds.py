"""From sample-first data to model calls: batch axes, fixed values, carried state, fixed batches."""
from __future__ import annotations

import numpy as np
import pytest

from modelc_build.feeds import ModelCaller, data_inputs, model_feed, samples_per_call, split
from modelc_build.recipe_types import TensorSpec

X = TensorSpec("x", ("batch", 3))
STATE = TensorSpec("state", (2, "batch", 4), batch_axis=1, state_from="state_out")
RATE = TensorSpec("sr", (), "int64", batch_axis=None, value=16000)


def accumulator(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model whose state adds up every x it has seen: [2, batch, 4] with the batch on axis 1."""
    assert feed["state"].shape[1] == feed["x"].shape[0] and feed["sr"].shape == ()
    total = feed["state"] + feed["x"].sum(axis=1)[None, :, None]
    return {"y": total[0, :, :1] * feed["sr"] / 16000, "state_out": total}


def test_only_data_inputs_come_from_data() -> None:
    assert data_inputs((X, STATE, RATE)) == (X,)
    assert samples_per_call((X, STATE, RATE)) == 1
    assert samples_per_call((TensorSpec("x", (4, 3)),)) == 4
    assert samples_per_call((X,)) is None


def test_state_is_carried_from_call_to_call_and_across_batches() -> None:
    call = ModelCaller((X, STATE, RATE), accumulator)
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    first = call({"x": data[:2]})
    second = call({"x": data[2:]})
    running = np.cumsum(data.sum(axis=1))
    assert np.concatenate([first["y"], second["y"]])[:, 0] == pytest.approx(running)
    assert second["state_out"].shape == (2, 2, 4)  # sample-first: the batch axis moved to the front
    assert second["state_out"][:, 0, 0] == pytest.approx(running[2:])


def test_a_new_pass_starts_from_zeros() -> None:
    data = {"x": np.ones((3, 3), dtype=np.float32)}
    ModelCaller((X, STATE, RATE), accumulator)(data)
    assert ModelCaller((X, STATE, RATE), accumulator)(data)["y"][:, 0] == pytest.approx([3, 6, 9])


def test_samples_move_to_the_batch_axis_and_values_are_added() -> None:
    feed = model_feed((X, STATE, RATE), {"x": np.zeros((5, 3)), "state": np.zeros((5, 2, 4))})
    assert feed["state"].shape == (2, 5, 4) and feed["x"].shape == (5, 3)
    assert feed["sr"].shape == () and feed["sr"].dtype == np.int64 and int(feed["sr"]) == 16000


def test_a_fixed_batch_is_fed_that_many_samples_and_the_last_call_is_padded() -> None:
    seen = []

    def fixed(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(len(feed["x"]))
        return {"y": feed["x"] * 2}

    call = ModelCaller((TensorSpec("x", (4, 3)),), fixed)
    data = np.arange(30, dtype=np.float32).reshape(10, 3)
    assert call({"x": data})["y"] == pytest.approx(data * 2)
    assert seen == [4, 4, 4]  # 10 samples: 4 + 4 + 2 padded to 4, the padding's outputs dropped


def test_calibration_drops_a_short_remainder_instead_of_padding() -> None:
    parts = list(split({"x": np.zeros((10, 3))}, 4, pad=False))
    assert [real for _, real in parts] == [4, 4]


def test_random_samples_are_sample_first_and_take_the_example_sizes() -> None:
    """Without evaluation data a CNN with dynamic height and width gets images of the preprocess
    size, not 2 x 2 (its feature map would vanish)."""
    from modelc_build.feeds import random_samples

    image = TensorSpec("images", ("batch", 3, "height", "width"), examples=(("height", 48), ("width", 40)))
    arrays = random_samples((image, STATE, RATE), count=8)
    assert set(arrays) == {"images"} and arrays["images"].shape == (8, 3, 48, 40)
    assert random_samples((TensorSpec("s", (2, "batch", 4), batch_axis=1),), count=5)["s"].shape == (5, 2, 4)


def test_a_time_major_output_is_read_sample_first_and_its_padding_cut() -> None:
    """A CRNN's [steps, batch, classes] output with a fixed batch of 1: each call's output gets its
    batch axis moved to the front, so calls stack by sample (not by time step)."""
    from modelc_build.feeds import ModelCaller
    from modelc_build.recipe_types import TensorSpec

    spec = TensorSpec("x", (1, 4))

    def time_major(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        steps = np.stack([feed["x"] * step for step in range(1, 6)])  # [5 steps, 1, 4]
        return {"scores": steps}

    samples = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = ModelCaller((spec,), time_major)({"x": samples})["scores"]
    assert out.shape == (3, 5, 4)
    np.testing.assert_array_equal(out[2, 4], samples[2] * 5)


def test_batch_first_leaves_outputs_without_one_batch_axis_alone() -> None:
    from modelc_build.feeds import batch_first

    assert batch_first(np.zeros((8, 3)), 8).shape == (8, 3)  # already sample-first
    assert batch_first(np.zeros((20, 8, 5)), 8).shape == (8, 20, 5)
    assert batch_first(np.zeros((4, 4, 6)), 1).shape == (4, 4, 6)  # no axis of the call's size: no batch axis
    assert batch_first(np.zeros((2, 3, 3)), 3).shape == (2, 3, 3)  # two candidates: left alone
