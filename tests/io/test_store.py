"""The run store: incomplete runs are not read silently, the layout is named in one place, Run.lowres and
its deprecated alias Run.maps."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from fastcam.io.run import RunDirectory, ShardWriter, open_run
from fastcam.pipeline import explain_dataset


def test_incomplete_run_is_not_read_silently(tmp_path: Path, classifier: Callable[..., torch.nn.Module],
                                             write_images: Callable[..., list[str]],
                                             read_progress: Callable[..., dict[str, Any]]) -> None:
    data = tmp_path / "data"
    write_images(data, 6)
    out = tmp_path / "run"
    explain_dataset(classifier(), data, method="gradcam", target_layer="layer4", out=out, batch_size=2,
                    progress=False)
    progress = read_progress(out)
    progress["committed_batches"] = 1
    (out / "shard-00000-of-00001.progress.json").write_text(json.dumps(progress))
    with pytest.raises(ValueError, match="incomplete"):
        open_run(out)
    assert len(open_run(out, allow_partial=True)) == 2


def _tiny_run(root: Path) -> None:
    """A two-sample run written through the store alone: rows 0 and 1 of one shard, one commit."""
    directory = RunDirectory(root)
    directory.create(["a.png", "b.png"], {"method": "gradcampp", "batch_size": 2, "world_size": 1},
                     input_size=(8, 8), versions={})
    writer = ShardWriter(root, 0, 1, n_items=2, batch_size=2, dtype="float32")
    lowres = torch.tensor([[[0.0, 2.0], [1.0, 0.5]], [[3.0, 0.0], [0.0, 0.0]]])
    writer.write_batch(0, torch.tensor([True, True]), lowres, torch.tensor([[0.0, 1.0], [2.0, 0.0]]),
                       torch.tensor([1, 0]))
    writer.commit(0, [], 0.5, 2, "cpu")
    directory.finalize("cpu")


def test_run_directory_names_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _tiny_run(root)
    directory = RunDirectory(root)
    assert directory.is_run() and not RunDirectory(tmp_path).is_run()
    assert {p.name for p in root.iterdir()} == {"run.json", "ids.json", directory.shard(0, 1).name,
                                                 directory.progress(0, 1).name}
    assert directory.shard(1, 2).name == "shard-00001-of-00002"
    assert directory.progress(1, 2).name == "shard-00001-of-00002.progress.json"
    assert (directory.overlays, directory.inputs, directory.report, directory.eval) == (
        root / "overlays", root / "inputs", root / "report.html", root / "eval")
    meta = directory.read_meta()
    assert meta["complete"] and meta["n_explained"] == 2 and meta["input_size"] == [8, 8]
    assert open_run(root).directory == directory
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a fastcam run directory"):
        RunDirectory(tmp_path / "other").create([], {"method": "gradcam", "batch_size": 1, "world_size": 1},
                                                input_size=None, versions={})


def test_run_lowres_and_the_deprecated_maps_alias(tmp_path: Path) -> None:
    _tiny_run(tmp_path / "run")
    run = open_run(tmp_path / "run")
    assert torch.equal(run.lowres, torch.tensor([[[0.0, 2.0], [1.0, 0.5]], [[3.0, 0.0], [0.0, 0.0]]]))
    with pytest.warns(DeprecationWarning, match="Run.lowres"):
        maps = run.maps
    assert maps is run.lowres
    # the input-size map, as Explanation.maps: upsampled, divided by its max
    up = run.upsampled("b.png")
    assert up.shape == (8, 8) and float(up.max()) == pytest.approx(1.0)


def test_the_former_store_module_reexports_the_run_package() -> None:
    """`fastcam.io.store` keeps every name it had, as the same objects; its fsync settings are durable's."""
    import fastcam.io.run as run
    import fastcam.io.store as store
    from fastcam.io.run import durable

    assert all(getattr(store, name) is getattr(run, name) for name in run.__all__)
    saved = durable.DURABLE
    try:
        store.DURABLE = False
        assert durable.DURABLE is False and store.DURABLE is False
    finally:
        durable.DURABLE = saved
