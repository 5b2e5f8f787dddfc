"""fastcam.ray.explain_dataset on a `ray.data.Dataset` (a real local Ray, no mocks): rows of encoded bytes or
decoded arrays give the local engine's results bit for bit, in the dataset's order, however its blocks are
split; a resumed run recomputes only the batches whose images changed; what cannot be indexed or changes
between the passes is refused, naming the problem."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fastcam.io.store import Run, verify_run
from fastcam_testkit.raycluster import CLASSES, LAYER, SPEC, Inputs

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("local_ray")


def _rows(inputs: Inputs) -> list[dict[str, Any]]:
    """The folder's files as rows (id, path, bytes), in the local engine's (sorted) order."""
    names = sorted(p.name for p in inputs.data.iterdir())
    return [{"id": name, "path": str(inputs.data / name), "bytes": (inputs.data / name).read_bytes()}
            for name in names]


def _explain(inputs: Inputs, data: Any, out: Path, **kwargs: Any) -> Run:
    from fastcam.ray import explain_dataset

    return explain_dataset(SPEC, data, out, weights=inputs.weights, num_classes=CLASSES, layer=LAYER,
                           batch_size=3, progress=False, max_skip_fraction=1.0, **kwargs)


def test_a_dataset_of_encoded_files_equals_the_local_engine_and_resumes_only_changed_batches(
        inputs: Inputs, local_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(inputs)
    ds = ray.data.from_items(rows, override_num_blocks=3)  # blocks that cut across store batches
    run = _explain(inputs, ds, tmp_path / "run", actors=2)
    assert run.ids == local_run.ids  # the dataset's order
    for name in ("lowres", "logits", "targets", "predicted"):
        assert torch.equal(getattr(run, name), getattr(local_run, name)), name
    assert run.skipped == local_run.skipped  # the same reason, naming the file (the row's `path`)
    assert run.meta["settings"]["fingerprint"] == "content"
    assert run.meta["settings"]["data"]["kind"] == "ray-dataset"
    assert verify_run(run.path).ok
    assert not ds.context.execution_options.preserve_order  # the caller's dataset is left as it was

    # the same dataset with one image changed: only its store batch is explained again
    before = run.logits[:].clone()  # a run's arrays are read lazily: keep the first run's values
    inverted = 255 - np.asarray(Image.open(inputs.data / rows[4]["id"]))
    rows[4] = {**rows[4], "bytes": _png(inverted)}  # row 4: store batch 1 (rows 3 to 5)
    capsys.readouterr()
    again = _explain(inputs, ray.data.from_items(rows), tmp_path / "run", actors=1)
    assert "the input files of 1 batch(es) changed since they were explained" in capsys.readouterr().out
    after = again.logits[:]
    assert not torch.equal(after[3], before[3])  # dataset row 4 (row 0, broken.png, is skipped)
    assert torch.equal(after[:3], before[:3]) and torch.equal(after[4:], before[4:])
    assert again.meta["complete"] and verify_run(again.path).ok


def test_decoded_arrays_with_a_target_column_and_integer_ids(inputs: Inputs, tmp_path: Path) -> None:
    """`image` arrays (as ray.data.read_images gives), int ids, targets="column"; a NaN image is a skipped row."""
    from fastcam.pipeline import explain_folder

    good = tmp_path / "good"  # the readable images alone: the same store batches as the dataset's rows
    good.mkdir()
    names = sorted(p.name for p in inputs.data.iterdir() if p.name != "broken.png")
    for name in names:
        (good / name).write_bytes((inputs.data / name).read_bytes())
    targets = {name: i % CLASSES for i, name in enumerate(names)}
    local = explain_folder(SPEC, good, tmp_path / "local", weights=inputs.weights, num_classes=CLASSES,
                           layer=LAYER, batch_size=3, progress=False, targets=targets)
    # float images in [0, 1] (one column holds one dtype): the PNGs' values / 255, as read_image scales them
    rows = [{"id": i, "image": np.asarray(Image.open(inputs.data / name), np.float32) / np.float32(255),
             "target": targets[name]} for i, name in enumerate(names)]
    rows.append({"id": len(names), "image": np.full((32, 32, 3), np.nan, np.float32), "target": 0})
    run = _explain(inputs, ray.data.from_items(rows, override_num_blocks=2), tmp_path / "run", targets="column")
    assert run.ids == list(range(len(names)))  # the explained rows: all but the NaN one
    assert torch.equal(run.targets, torch.tensor([targets[n] for n in names]))
    assert torch.equal(run.lowres, local.lowres) and torch.equal(run.logits, local.logits)
    assert [s["id"] for s in run.skipped] == [len(names)] and "NaN" in run.skipped[0]["error"]


def _png(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rows_that_change_between_the_passes_stop_the_run(inputs: Inputs, tmp_path: Path) -> None:
    import os

    def noisy(row: dict[str, Any]) -> dict[str, Any]:  # a trailing random byte: a new digest each run
        return {**row, "bytes": row["bytes"] + os.urandom(1)}

    with pytest.raises(ValueError, match="changed between the first pass and the explain pass"):
        _explain(inputs, ray.data.from_items(_rows(inputs)).map(noisy), tmp_path / "run")


@pytest.mark.parametrize(("rows", "message"), [
    ([{"name": "a.png", "bytes": b"x"}], "needs an 'id' column"),
    ([{"id": "a.png", "text": "x"}], "a 'bytes' .* or an 'image'"),
    ([{"id": "a.png", "bytes": b"x"}, {"id": "a.png", "bytes": b"y"}], "ids must be unique: 1 repeat"),
    ([{"id": 1.5, "bytes": b"x"}], "row ids must be strings or integers"),
])
def test_datasets_that_cannot_be_indexed_are_refused(inputs: Inputs, tmp_path: Path, rows: list[dict[str, Any]],
                                                     message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        _explain(inputs, ray.data.from_items(rows), tmp_path / "run")


def test_a_folder_uri_equals_the_local_engine_and_names_files_by_uri(inputs: Inputs, local_run: Run,
                                                                      tmp_path: Path) -> None:
    """A folder URI (file://, read through pyarrow's file systems as s3:// or gs:// would be): the files listed
    and read as URIs, their ids the URIs, the results the local engine's."""
    uri = inputs.data.resolve().as_uri()
    run = _explain(inputs, uri, tmp_path / "run", actors=1)
    assert run.ids == [f"{uri}/{name}" for name in local_run.ids]
    assert torch.equal(run.lowres, local_run.lowres) and torch.equal(run.logits, local_run.logits)
    assert [s["index"] for s in run.skipped] == [s["index"] for s in local_run.skipped]
    assert run.skipped[0]["error"] == f"UnidentifiedImageError: cannot identify image file '{uri}/broken.png'"
    assert run.meta["settings"]["data"]["kind"] == "uri-folder"
