from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelc_build.data import DataReader
from modelc_build.errors import InputError
from modelc_build.preprocess import preprocess_image
from modelc_build.recipe_types import Dataset, Preprocess, TensorSpec
from tests.conftest import REPO, write_images

INPUT = (TensorSpec("images", ("batch", 3, 16, 16)),)
SPEC = Preprocess(height=16, width=16)


def test_letterbox_places_image_and_maps_boxes() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    tensor, placement = preprocess_image(image, Preprocess(height=16, width=16, resize="letterbox", pad_value=0))
    assert tensor.shape == (3, 16, 16)
    assert (placement.gain_x, placement.pad_x, placement.pad_y) == (0.4, 0.0, 4.0)
    assert tensor[0, 4:12].min() == pytest.approx(1.0) and tensor[0, :4].max() == 0.0
    assert placement.to_input(0, 0, 40, 20) == (0.0, 4.0, 16.0, 12.0)


def test_normalisation_colour_order_and_layout() -> None:
    image = Image.new("RGB", (2, 2), (255, 128, 0))
    spec = Preprocess(height=2, width=2, color="bgr", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), layout="nhwc")
    tensor, _ = preprocess_image(image, spec)
    assert tensor.shape == (2, 2, 3)
    assert tensor[0, 0] == pytest.approx([-1.0, 128 / 255 * 2 - 1, 1.0], abs=1e-6)


def test_image_folder_with_class_folders(tmp_path: Path) -> None:
    write_images(tmp_path, 7, classes=("cat", "dog"))
    reader = DataReader(Dataset(tmp_path, "images", labels="folders", batch_size=3), INPUT, SPEC, ("cat", "dog"))
    batches = list(reader.batches())
    assert [len(b) for b in batches] == [3, 3, 1]
    assert batches[0].inputs["images"].shape == (3, 3, 16, 16)
    assert sum((b.labels for b in batches), []) == [0, 0, 0, 0, 1, 1, 1]


def test_samples_limit_and_npy_streaming(tmp_path: Path) -> None:
    array = np.random.default_rng(0).random((10, 3, 16, 16), dtype=np.float32)
    np.save(tmp_path / "x.npy", array)
    reader = DataReader(Dataset(tmp_path / "x.npy", "npy", samples=5, batch_size=2), INPUT, None)
    got = np.concatenate([b.inputs["images"] for b in reader.batches()])
    assert np.array_equal(got, array[:5])


def test_npz_needs_an_array_per_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", wrong=np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match=r"x.npz: has arrays \['wrong'\] but the model inputs are \['images'\]"):
        DataReader(Dataset(tmp_path / "x.npz", "npz"), INPUT, None)


def test_empty_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no samples"):
        DataReader(Dataset(tmp_path, "images"), INPUT, SPEC)


def test_undecodable_image_names_the_file(tmp_path: Path) -> None:
    write_images(tmp_path, 2)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    reader = DataReader(Dataset(tmp_path, "images"), INPUT, SPEC)
    with pytest.raises(InputError, match=r"broken.png: cannot decode this image"):
        list(reader.batches())


def test_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    reader = DataReader(Dataset(tmp_path / "x.npy", "npy"), INPUT, None)
    with pytest.raises(InputError, match=r"have shape \[3, 8, 8\] but the model expects \[3, 16, 16\]"):
        list(reader.batches())


def test_nan_is_refused(tmp_path: Path) -> None:
    array = np.zeros((2, 3, 16, 16), np.float32)
    array[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(InputError, match="contain NaN or Inf"):
        list(DataReader(Dataset(tmp_path / "x.npy", "npy"), INPUT, None).batches())


def test_yolo_labels_are_mapped_into_input_pixels(tmp_path: Path) -> None:
    Image.new("RGB", (40, 20)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("1 0.5 0.5 0.5 1.0\n")
    spec = Preprocess(height=16, width=16, resize="letterbox")
    reader = DataReader(Dataset(tmp_path, "images", labels="yolo"), INPUT, spec)
    (box,) = next(reader.batches()).labels[0]
    assert (box.class_id, box.x0, box.y0, box.x1, box.y1) == (1, 4.0, 4.0, 12.0, 12.0)


def test_bad_label_line_names_file_and_line(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\nzero 1 2\n")
    reader = DataReader(Dataset(tmp_path, "images", labels="yolo"), INPUT, SPEC)
    with pytest.raises(InputError, match=r"a.txt:2: expected 'class cx cy w h'"):
        list(reader.batches())


def test_fewer_samples_than_asked_is_a_warning(tmp_path: Path) -> None:
    write_images(tmp_path, 3)
    reader = DataReader(Dataset(tmp_path, "images", samples=10), INPUT, SPEC)
    assert len(reader) == 3
    assert reader.shortfall() == f"warning: {tmp_path} holds 3 samples, the recipe asked for 10: using 3"
    assert DataReader(Dataset(tmp_path, "images", samples=2), INPUT, SPEC).shortfall() is None


def rows_read(reader: DataReader) -> list[float]:
    return [float(row[0, 0, 0]) for batch in reader.batches() for row in batch.inputs["images"]]


def test_seeded_shuffle_is_repeatable_and_samples_take_the_first_of_the_shuffled_order(tmp_path: Path) -> None:
    values = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((1, 3, 16, 16), np.float32)
    np.save(tmp_path / "x.npy", values)
    plain = rows_read(DataReader(Dataset(tmp_path / "x.npy", "npy", batch_size=4), INPUT, None))
    first = rows_read(DataReader(Dataset(tmp_path / "x.npy", "npy", batch_size=4, shuffle=True, seed=7), INPUT, None))
    again = rows_read(DataReader(Dataset(tmp_path / "x.npy", "npy", batch_size=4, shuffle=True, seed=7), INPUT, None))
    other = rows_read(DataReader(Dataset(tmp_path / "x.npy", "npy", batch_size=4, shuffle=True, seed=8), INPUT, None))
    assert plain == list(range(20))
    assert first == again and sorted(first) == plain and first != plain and other != first
    some = rows_read(DataReader(Dataset(tmp_path / "x.npy", "npy", samples=5, shuffle=True, seed=7), INPUT, None))
    assert some == first[:5]


def test_shuffled_images_keep_their_labels(tmp_path: Path) -> None:
    write_images(tmp_path, 8, classes=("cat", "dog"))
    reader = DataReader(Dataset(tmp_path, "images", labels="folders", shuffle=True, seed=1), INPUT, SPEC, ("cat", "dog"))
    batch = next(reader.batches())
    assert all(("cat" in source) == (label == 0) for source, label in zip(batch.sources, batch.labels))
    assert batch.sources != sorted(batch.sources)


def write_data_function(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "make.py"
    path.write_text("import numpy as np\n\ndef batches():\n" + body)
    return path


def test_python_function_yields_batches_cut_at_samples(tmp_path: Path) -> None:
    path = write_data_function(tmp_path, "    for i in range(3):\n"
                                         "        yield np.full((4, 3, 16, 16), i, np.float32)\n")
    reader = DataReader(Dataset(path, "python", samples=10, function="batches"), INPUT, None)
    assert len(reader) == 10
    assert rows_read(reader) == [0] * 4 + [1] * 4 + [2] * 2
    assert next(reader.batches()).sources[0].endswith("make.py:batches[0]")


def test_python_function_may_yield_dicts_by_input_name(tmp_path: Path) -> None:
    path = write_data_function(tmp_path, "    yield {'images': np.zeros((2, 3, 16, 16), np.float32)}\n")
    assert len(DataReader(Dataset(path, "python", function="batches"), INPUT, None)) == 2


@pytest.mark.parametrize("body,message", [
    ("    yield np.zeros((2, 3, 8, 8), np.float32)\n", r"make.py:batches batch 0: samples for input 'images' have shape \[3, 8, 8\]"),
    ("    yield np.full((2, 3, 16, 16), np.nan, np.float32)\n", "contain NaN or Inf"),
    ("    yield {'x': np.zeros((2, 3, 16, 16), np.float32)}\n", r"batch 0 has inputs \['x'\], the model takes \['images'\]"),
    ("    raise OSError('disk gone')\n    yield 1\n", "the data function failed: OSError: disk gone"),
    ("    return iter(())\n", "holds no samples"),
])
def test_python_function_problems_name_the_function(tmp_path: Path, body: str, message: str) -> None:
    path = write_data_function(tmp_path, body)
    with pytest.raises(InputError, match=message):
        DataReader(Dataset(path, "python", function="batches"), INPUT, None)


TOKEN_INPUTS = (TensorSpec("input_ids", ("batch", "seq"), "int64"), TensorSpec("attention_mask", ("batch", "seq"), "int64"),
                TensorSpec("token_type_ids", ("batch", "seq"), "int64"))


def token_reader(tmp_path: Path, text: str, inputs: tuple[TensorSpec, ...] = TOKEN_INPUTS, **fields: object) -> DataReader:
    from modelc_build.recipe_types import TokenFields

    path = tmp_path / "tokens.txt"
    path.write_text(text)
    chosen = {"ids": "input_ids", "mask": "attention_mask", "type_ids": "token_type_ids", **fields}
    return DataReader(Dataset(path, "tokens", batch_size=2, tokens=TokenFields(**chosen)), inputs, None)  # type: ignore[arg-type]


def test_a_token_file_is_padded_per_batch_with_a_mask_and_zero_type_ids(tmp_path: Path) -> None:
    first, second = token_reader(tmp_path, "2 5 9\n2 7\n\n2 4 4 4 4\n2 8\n").batches()
    assert first.inputs["input_ids"].tolist() == [[2, 5, 9], [2, 7, 0]]
    assert first.inputs["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert second.inputs["input_ids"].shape == (2, 5)  # each batch as long as its longest sample
    assert second.inputs["token_type_ids"].tolist() == [[0] * 5, [0] * 5]
    assert first.inputs["input_ids"].dtype == np.int64


def test_token_rows_are_cut_to_max_length_or_a_fixed_sequence(tmp_path: Path) -> None:
    (batch,) = token_reader(tmp_path, "1 2 3 4 5\n1 2\n", max_length=3, pad_id=9).batches()
    assert batch.inputs["input_ids"].tolist() == [[1, 2, 3], [1, 2, 9]]
    fixed = tuple(TensorSpec(s.name, ("batch", 4), "int64") for s in TOKEN_INPUTS)
    (batch,) = token_reader(tmp_path, "1 2 3 4 5\n1 2\n", inputs=fixed).batches()
    assert batch.inputs["input_ids"].tolist() == [[1, 2, 3, 4], [1, 2, 0, 0]]


@pytest.mark.parametrize("text,fields,message", [
    ("1 2\n1 x 3\n", {}, "tokens.txt:2: expected token ids separated by spaces, got '1 x 3'"),
    ("1 -2\n", {}, "tokens.txt:1: token ids are not negative; found -2"),
    ("1 2\n", {"type_ids": None}, "the model also takes ['token_type_ids']: name them in data.*.tokens"),
])
def test_token_file_problems_are_named(tmp_path: Path, text: str, fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        token_reader(tmp_path, text, **fields)


def test_a_folder_of_npz_files_holds_one_sample_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    inputs = (TensorSpec("ids", ("batch", "seq"), "int64"), TensorSpec("x", ("batch", 3)))
    for index in range(5):
        np.savez(folder / f"{index:03d}.npz", ids=np.full(4 if index < 4 else 6, index, dtype=np.int64),
                 x=np.full(3, index, dtype=np.float32))
    reader = DataReader(Dataset(folder, "npz", batch_size=2), inputs, None)
    first, second, third = reader.batches()
    assert len(reader) == 5 and first.inputs["ids"].tolist() == [[0] * 4, [1] * 4]
    assert first.sources == [str(folder / "000.npz"), str(folder / "001.npz")] and third.inputs["ids"].shape == (1, 6)
    with pytest.raises(InputError, match=r"hold 'ids' in shapes \[\(4,\), \(6,\)\]: give the samples of a batch one shape"):
        list(DataReader(Dataset(folder, "npz", batch_size=5), inputs, None).batches())


def test_an_image_folder_that_holds_arrays_says_which_format(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 16, 16), dtype=np.float32))
    with pytest.raises(InputError, match="holds .npy files, not images: set format: npy"):
        DataReader(Dataset(tmp_path, "images"), INPUT, SPEC)


@pytest.mark.parametrize("recipe_file", ["recipes/yolo.yaml", "recipes/classifier.yaml", "recipes/text_encoder.yaml"])
def test_the_decoded_set_is_the_data_as_read_batch_for_batch(tmp_path: Path, recipe_file: str) -> None:
    """The decode step's batches (memory-mapped copy-on-write) are the reader's own: the same
    arrays, sample names and labels (detection boxes, class ids), and a runtime may write into them
    without touching the cached files."""
    import numpy as np

    from modelc_build.fingerprint import Fingerprints
    from modelc_build.plan import data_source
    from modelc_build.recipe import load_recipe
    from modelc_build.steps import StepInputs
    from modelc_build.steps.decode import DecodeStep, decode_step_id, decoded_batches

    source = data_source(load_recipe(REPO / recipe_file), "evaluation")
    facts = Fingerprints(None)
    out = tmp_path / "decoded"
    out.mkdir()
    DecodeStep(source).run(StepInputs({}, facts), out)
    read = list(facts.batches(source))
    decoded = list(decoded_batches(out))
    assert len(decoded) == len(read) > 1
    for mine, theirs in zip(decoded, read):
        assert mine.sources == theirs.sources and mine.labels == theirs.labels
        assert mine.inputs.keys() == theirs.inputs.keys()
        for name, array in theirs.inputs.items():
            assert mine.inputs[name].dtype == array.dtype and np.array_equal(mine.inputs[name], array)
    first = decoded[0].inputs[next(iter(decoded[0].inputs))]
    before = (out / "batch-000000-0.npy").read_bytes()
    first[...] = 0  # copy-on-write: this process's copy changes, the cache entry does not
    assert (out / "batch-000000-0.npy").read_bytes() == before
    assert decode_step_id(source) == "decode:evaluation"
