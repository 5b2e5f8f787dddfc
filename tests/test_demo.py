"""`fastcam demo` end to end at a tiny size: dataset, masks, training, five runs, overlays, the report."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from fastcam.cli import main
from fastcam.demo import DemoConfig, demo_cnn, demo_methods, make_sample, make_split
from fastcam.io.run import RunDirectory, open_run
from fastcam.methods.registry import method_names
from fastcam_testkit.packaging import extra_only_modules

METHODS = method_names(demo=True)  # the demo's default methods (--methods all: every registered one)


def test_dataset_is_deterministic_with_masks_only_on_lesions() -> None:
    a, b = make_sample(0, "test", 5, 32), make_sample(0, "test", 5, 32)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(make_sample(1, "test", 5, 32)[0], a[0])
    images, labels, masks = make_split(0, "train", 12, 32)
    assert images.shape == (12, 1, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert labels.tolist() == [i % 2 for i in range(12)]
    lesion_area = masks.reshape(12, -1).sum(1)
    assert (lesion_area[labels.numpy() == 0] == 0).all() and (lesion_area[labels.numpy() == 1] > 0).all()
    # lesions are bright: inside the mask the image is brighter than the background on average
    lesion = images[:, 0].numpy()[masks]
    assert lesion.mean() > images[labels == 0].mean().item() + 0.1


def test_demo_cnn_has_torchvision_layout_and_fine_maps() -> None:
    model = demo_cnn().eval()
    assert {"conv1", "bn1", "layer4", "avgpool", "fc"} <= {n for n, _ in model.named_children()}
    feats = {}
    model.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    model(torch.rand(2, 1, 32, 32))
    assert feats["x"].shape[-2:] == (4, 4)


def test_demo_end_to_end_tiny(tmp_path: Path, capsys, parse_html: Callable) -> None:  # noqa: ANN001
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 0
    assert "report.html" in capsys.readouterr().out
    config = DemoConfig.quick()
    data = out / "data" / "test"
    names = sorted(p.name for p in data.glob("*.png"))
    assert len(names) == config.n_test
    # masks: same relative names, binary, nonzero exactly for the lesion images
    with (data / "labels.csv").open() as f:
        labels = {row["path"]: int(row["label"]) for row in csv.DictReader(f)}
    assert sorted(labels) == names
    for name in names:
        mask = np.asarray(Image.open(out / "masks" / name))
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask.max() > 0) == (labels[name] == 1)
    # one run per method, all explaining the same images, the SoftCAM one on the converted network
    for method in METHODS:
        run = open_run(out / "runs" / method)
        assert run.ids == names and run.method == method and len(run.skipped) == 0
        assert run.logits.shape == (config.n_test, 2)
        assert run.lowres.shape == (config.n_test, 4, 4) and bool(torch.isfinite(run.lowres).all())
        assert all((out / "runs" / method / "overlays" / f"{n}.png").is_file() for n in names)  # id + ".png"
    assert open_run(out / "runs" / "softcam").meta["settings"]["target_layer"] is None
    info = json.loads((out / "model" / "training.json").read_text())
    assert set(info["test_accuracy"]) == {"cnn", "softcam"}
    # the report parses; every image it references exists; one grid row per image, 2 + 5 images per row
    report = parse_html(out / "report.html")
    assert report.tables >= 3
    assert len(report.srcs) == config.n_test * (2 + len(METHODS))
    assert all((out / src).is_file() for src in report.srcs)
    # a second call reuses the weights and resumes (here: finds) every run
    before = {m: RunDirectory(out / "runs" / m).progress(0, 1).read_text() for m in METHODS}
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 0
    for m in METHODS:
        after = json.loads(RunDirectory(out / "runs" / m).progress(0, 1).read_text())
        assert after["commits"] == json.loads(before[m])["commits"]


def test_demo_methods_default_all_and_subsets() -> None:
    assert demo_methods() == METHODS == ("gradcam", "gradcampp", "scorecam", "cfcam", "softcam")
    assert demo_methods(("all",)) == method_names() and len(method_names()) > len(METHODS)
    assert demo_methods(("layercam", "softcam")) == ("layercam", "softcam")
    with pytest.raises(ValueError, match="unknown demo methods"):
        demo_methods(("nope",))


def test_demo_needs_no_extra(tmp_path: Path) -> None:
    """The README's main job runs on the core install (`pip install -e .`): in a fresh interpreter where
    every module only an extra brings (transformers, onnx, mkdocs, captum, ...) refuses to import."""
    blocked = sorted(extra_only_modules())
    assert "transformers" in blocked and "onnx" in blocked  # the test extra is installed here
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # `import name` raises ImportError; find_spec says absent\n"
        "from fastcam.cli import main\n"
        f"raise SystemExit(main(['demo', '--out', {str(tmp_path / 'demo')!r}, '--quick', '--quiet', "
        "'--n-train', '8', '--n-test', '2', '--image-size', '16']))\n"  # every step, at the smallest size
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "demo" / "report.html").is_file()
