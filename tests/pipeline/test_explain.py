"""explain_dataset: corrupt files and non-finite explanations skipped, the stored maps equal the method's,
settings refusal, datasets and targets, amp/workers/grayscale, flat memory."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from fastcam.io.run import RunDirectory
import fastcam
from fastcam.io.images import read_image
from fastcam.models import tiny_resnet
from fastcam.pipeline import explain_dataset
from fastcam.methods.registry import get_method
from fastcam.pipeline.robust import explain_finite

Classifier = Callable[..., torch.nn.Module]
WriteImages = Callable[..., list[str]]


# ------------------------------------------------------------------------------------------ corrupt files
def test_corrupt_files_are_reported_listed_and_skipped(tmp_path: Path, classifier: Classifier,
                                                       write_images: WriteImages) -> None:
    data = tmp_path / "data"
    good = write_images(data, 7)
    valid_png = (data / good[0]).read_bytes()
    (data / "truncated.png").write_bytes(valid_png[: len(valid_png) // 2])
    noise = random.Random(0)  # fixed bytes: the same corrupt files every run
    (data / "garbage.jpg").write_bytes(noise.randbytes(300))
    (data / "empty.tif").write_bytes(b"")
    (data / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + noise.randbytes(64))
    bad = {"truncated.png", "garbage.jpg", "empty.tif", "fake.dcm"}
    model = classifier()
    run = explain_dataset(model, data, method="gradcam", target_layer="layer4", out=tmp_path / "run", batch_size=4,
                          dtype="float32", progress=False, max_skip_fraction=0.5)  # 4 of 11 skipped on purpose
    assert run.ids == good
    assert {s["id"] for s in run.skipped} == bad
    assert all(s["error"] for s in run.skipped)
    meta = json.loads(RunDirectory(tmp_path / "run").run_json.read_text())
    assert {s["id"] for s in meta["skipped"]} == bad and meta["n_skipped"] == 4 and meta["n_explained"] == 7
    # the stored maps are those of the method on the same images (independent oracle: a direct call)
    images = torch.stack([read_image(data / name) for name in good])
    with fastcam.GradCAM(model, "layer4") as cam:
        exp = cam.explain(images)
    torch.testing.assert_close(run.lowres[:], exp.lowres, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run.logits[:], exp.logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(run.targets, exp.targets) and torch.equal(run.predicted, exp.logits.argmax(1))
    torch.testing.assert_close(run.upsampled(2), exp.maps[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run.upsampled(good[3], (9, 13)),
                               torch.nn.functional.interpolate(exp.lowres[3][None, None], (9, 13), mode="bilinear",
                                                               align_corners=False)[0, 0].div(
                                   torch.nn.functional.interpolate(exp.lowres[3][None, None], (9, 13), mode="bilinear",
                                                                   align_corners=False).max()), rtol=1e-5, atol=1e-6)


def test_float16_store_keeps_relative_precision(tmp_path: Path, classifier: Classifier,
                                                write_images: WriteImages) -> None:
    data = tmp_path / "data"
    names = write_images(data, 5)
    model = classifier()
    run = explain_dataset(model, data, method="gradcampp", target_layer="layer4", out=tmp_path / "run", batch_size=5,
                          progress=False)
    exp = fastcam.GradCAMPlusPlus(model, "layer4").explain(torch.stack([read_image(data / n) for n in names]))
    peak = exp.lowres.amax(dim=(1, 2), keepdim=True)
    assert ((run.lowres - exp.lowres).abs() <= 2 ** -11 * peak + 1e-12).all()  # half an fp16 ulp of [0, 1]


# ------------------------------------------------------------------------------------------ refusal
def test_changed_settings_are_refused(tmp_path: Path, classifier: Classifier, write_images: WriteImages) -> None:
    data = tmp_path / "data"
    write_images(data, 4)
    out = tmp_path / "run"
    explain_dataset(classifier(), data, method="gradcam", target_layer="layer4", out=out, batch_size=2, progress=False)
    before = RunDirectory(out).progress(0, 1).read_text()
    with pytest.raises(ValueError, match="other settings.*\n.*method"):
        explain_dataset(classifier(), data, method="gradcampp", target_layer="layer4", out=out, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="state_sha256|model"):
        explain_dataset(classifier(seed=1), data, method="gradcam", target_layer="layer4", out=out, batch_size=2,
                        progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        explain_dataset(classifier(), data, method="gradcam", target_layer="layer4", out=out, batch_size=3, progress=False)
    with pytest.raises(ValueError, match="target_layer"):
        explain_dataset(classifier(), data, method="gradcam", target_layer="layer3", out=out, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="resume=False"):
        explain_dataset(classifier(), data, method="gradcam", target_layer="layer4", out=out, batch_size=2, resume=False,
                        progress=False)
    assert RunDirectory(out).progress(0, 1).read_text() == before  # nothing was touched
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="^out '.*' exists and is not a fastcam run directory; choose an empty or new out$"):
        explain_dataset(classifier(), data, method="gradcam", target_layer="layer4", out=tmp_path / "other", progress=False)


# ------------------------------------------------------------------------------------------ datasets
class _Labelled(Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(3)
        self.images = torch.rand(n, 3, 20, 20, generator=g)
        self.labels = torch.arange(n) % 4

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if i == 3:
            raise OSError("disk hiccup")
        return self.images[i], self.labels[i]


def test_dataset_loader_and_targets(tmp_path: Path, classifier: Classifier) -> None:
    model, ds = classifier(), _Labelled(9)
    run = explain_dataset(model, DataLoader(ds, batch_size=4), method="gradcam", target_layer="layer4",
                          out=tmp_path / "a", targets="label", progress=False, max_skip_fraction=0.2)  # 1 of 9
    keep = [i for i in range(9) if i != 3]
    assert run.ids == keep and run.meta["batch_size"] == 4
    assert torch.equal(run.targets, ds.labels[keep])
    assert [s["index"] for s in run.skipped] == [3] and "disk hiccup" in run.skipped[0]["error"]
    per_sample = [(i * 3) % 4 for i in range(9)]
    run2 = explain_dataset(model, TensorDataset(ds.images), method="gradcam", target_layer="layer4",
                           out=tmp_path / "b", targets=per_sample, batch_size=4, progress=False)
    assert run2.ids == list(range(9)) and run2.targets.tolist() == per_sample
    with pytest.raises(ValueError, match="out of range|lie in"):
        explain_dataset(model, TensorDataset(ds.images), method="gradcam", target_layer="layer4",
                        out=tmp_path / "c", targets=list(range(9)), batch_size=4, progress=False)
    with pytest.raises(ValueError, match="got 2 targets"):
        explain_dataset(model, TensorDataset(ds.images), method="gradcam", target_layer="layer4",
                        out=tmp_path / "d", targets=[0, 1], progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        explain_dataset(model, ds, method="gradcam++", target_layer="layer4", out=tmp_path / "e", progress=False)


# ------------------------------------------------------------------------------------------ non-finite
class _NaNForBrightImages(torch.nn.Module):
    """A classifier whose logits are NaN for images brighter than 0.6 on average (a model-side failure)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        bright = x.mean(dim=(1, 2, 3)) > 0.6
        return torch.where(bright[:, None], torch.full_like(logits, float("nan")), logits)


def test_images_with_non_finite_explanations_are_skipped_with_the_reason(tmp_path: Path,
                                                                        classifier: Classifier) -> None:
    inner = classifier()
    images = torch.rand(6, 3, 20, 20, generator=torch.Generator().manual_seed(5)) * 0.5
    images[[1, 4]] += 0.5
    run = explain_dataset(_NaNForBrightImages(inner), TensorDataset(images), method="gradcam",
                          target_layer="model.layer4", out=tmp_path / "run", batch_size=4, dtype="float32",
                          progress=False, max_skip_fraction=0.5)  # 2 of 6 skipped on purpose
    assert run.ids == [0, 2, 3, 5]
    assert [s["index"] for s in run.skipped] == [1, 4]
    assert all("non-finite" in s["error"] and "NaN" in s["error"] for s in run.skipped)
    assert bool(torch.isfinite(run.lowres).all()) and bool(torch.isfinite(run.logits).all())
    with fastcam.GradCAM(inner, "layer4") as cam:  # the others are stored as the method computes them
        exp = cam.explain(images[[0, 2, 3, 5]])
    torch.testing.assert_close(run.lowres[:], exp.lowres, rtol=1e-5, atol=1e-6)
    assert run.meta["n_skipped"] == 2 and run.meta["n_explained"] == 4
    with fastcam.GradCAM(_NaNForBrightImages(inner), "model.layer4") as cam:  # a batch with no finite image
        kept, explained, dropped = explain_finite(cam, images[[1, 4]], None, None, {})
    assert kept.tolist() == [] and explained is None and sorted(dropped) == [0, 1]


def test_amp_workers_and_grayscale_folder(tmp_path: Path, write_images: WriteImages) -> None:
    data = tmp_path / "data"
    write_images(data, 6)
    torch.manual_seed(0)
    gray_model = tiny_resnet(num_classes=3, in_channels=1).eval()  # RGB files, 1-channel model: converted
    run = explain_dataset(gray_model, data, method="gradcam", target_layer="layer4", out=tmp_path / "amp",
                          batch_size=4, amp="bf16", num_workers=2, progress=False)
    assert run.meta["settings"]["amp"] == "bf16" and run.meta["settings"]["data"]["preprocess"]["channels"] == 1
    full = explain_dataset(gray_model, data, method="gradcam", target_layer="layer4", out=tmp_path / "fp32",
                           batch_size=4, progress=False)
    assert run.ids == full.ids and bool(torch.isfinite(run.lowres).all())
    # bf16 forwards: same predictions here, maps within bf16's precision of the float32 run
    assert torch.equal(run.targets, full.targets)
    peak = full.lowres.amax(dim=(1, 2), keepdim=True)
    assert ((run.lowres - full.lowres).abs() <= 0.1 * peak + 1e-6).all()
    with pytest.raises(ValueError, match="amp"):
        explain_dataset(gray_model, data, method="gradcam", target_layer="layer4", out=tmp_path / "x", amp="fp8")


# ------------------------------------------------------------------------------------------ memory
class _Synthetic(Dataset):
    """Images made on the fly; records the process RSS at chosen indices."""

    def __init__(self, n: int, marks: tuple[int, ...]) -> None:
        self.n, self.marks, self.rss = n, marks, {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if i in self.marks:
            with open("/proc/self/statm") as f:
                self.rss[i] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i))


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_memory_stays_flat_while_streaming(tmp_path: Path, classifier: Classifier) -> None:
    ds = _Synthetic(600, (150, 599))
    explain_dataset(classifier(), ds, method="gradcam", target_layer="layer4", out=tmp_path / "run", batch_size=30,
                    progress=False)
    growth = ds.rss[599] - ds.rss[150]
    # 450 images of 12 KiB each (5.3 MiB) pass through after the first mark: none of them may stay
    assert growth < 4 * 2 ** 20, f"RSS grew by {growth / 2 ** 20:.1f} MiB over 450 images"


# ------------------------------------------------------------------------------------------ new methods
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method,kwargs", [
    ("layercam", {"aug_smooth": True}), ("ablationcam", {"batch_size": 64}), ("eigencam", {}),
    ("xgradcam", {"smooth": 2, "generator": 0}),
])
def test_registered_methods_run_through_the_pipeline(method: str, kwargs: dict, tmp_path: Path,
                                                     classifier: Classifier, write_images: WriteImages) -> None:
    """Any registered method, with its options, is stored as a direct call computes it."""
    data = tmp_path / "data"
    names = write_images(data, 3, size=48)
    model = classifier()
    run = explain_dataset(model, data, method=method, target_layer="layer3", out=tmp_path / "run", batch_size=2,
                          dtype="float32", method_kwargs=kwargs, progress=False)
    assert run.ids == names and run.method == method and run.meta["settings"]["method_kwargs"] == kwargs
    images = torch.stack([read_image(data / name) for name in names])
    # the pipeline explains in batches of 2: compare per batch (SmoothGrad's seeded noise depends on the batch)
    expected = torch.cat([get_method(method).build(model, "layer3", **kwargs).explain(images[i : i + 2]).lowres
                          for i in range(0, 3, 2)])
    torch.testing.assert_close(run.lowres[:], expected, rtol=1e-5, atol=1e-6)
