"""explain_dataset / open_run: resume after SIGKILL, corrupt files, settings refusal, sharding under
torchrun, OOM splitting, flat memory, image reading (PNG 8/16-bit, JPEG, TIFF, DICOM)."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr  # noqa: F401  (imported before forking: the children start warm)
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

import fastcam
import fastcam.cli
from fastcam.io.images import Preprocess, read_image
from fastcam.io.store import open_run
from fastcam.models import tiny_resnet
from fastcam.pipeline import explain_dataset
from fastcam.pipeline.explain import explain_splitting_on_oom

REPO = Path(__file__).resolve().parents[1]


def _model(seed: int = 0, classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tiny_resnet(num_classes=classes).eval()


def _write_images(folder: Path, n: int, size: int = 24, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"{'sub/' if i % 4 == 1 else ''}im{i:03d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / name)
        names.append(name)
    return sorted(names)


def _progress(run_dir: Path, rank: int = 0, world: int = 1) -> dict:
    return json.loads((run_dir / f"shard-{rank:05d}-of-{world:05d}.progress.json").read_text())


def _commits(progress: dict) -> list[tuple[int, int]]:
    """(batch, session) of every commit: the log is stored as runs [session, first, last]."""
    return [(b, session) for session, first, last in progress["commits"] for b in range(first, last + 1)]


def _assert_same_run(a: fastcam.io.Run, b: fastcam.io.Run) -> None:
    assert a.ids == b.ids
    assert torch.equal(a.lowres, b.lowres)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.targets, b.targets)


# ------------------------------------------------------------------------------------------ resume
def _child(data: str, out: str) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=3, progress=False)
    os._exit(0)


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_images(data, 22)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _kill_and_resume(tmp_path, data)
    finally:
        torch.set_num_threads(threads)


def _kill_and_resume(tmp_path: Path, data: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # forked children start warm: kills land inside the work
    started = time.perf_counter()
    reference = explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=tmp_path / "ref",
                                batch_size=3, progress=False)
    duration = time.perf_counter() - started
    assert len(reference) == 22

    rng = random.Random(1234)
    out = tmp_path / "killed"
    per_batch = duration / 16  # the reference also paid one-off costs: stay well inside a batch

    def committed() -> int:
        path = out / "shard-00000-of-00001.progress.json"
        return json.loads(path.read_text())["committed_batches"] if path.exists() else 0

    kills = 0
    for _ in range(3):  # each session: wait for one new commit, then SIGKILL at a random moment after it
        p = ctx.Process(target=_child, args=(str(data), str(out)))
        p.start()
        target = committed() + 1
        deadline = time.monotonic() + 120
        while p.is_alive() and committed() < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, per_batch))
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.join()
    p = ctx.Process(target=_child, args=(str(data), str(out)))
    p.start()
    p.join(timeout=300)
    assert p.exitcode == 0
    assert kills >= 1
    resumed = open_run(out)
    _assert_same_run(resumed, reference)
    progress = _progress(out)
    batches = [b for b, _ in _commits(progress)]
    assert batches == list(range(8)), "a committed batch was recomputed or lost"
    # a killed session committed batches before its kill, and a later session carried on from there
    assert len({session for _, session in _commits(progress)}) >= 2
    assert not list(out.rglob("*.partial")), "a killed chunk write was left behind"
    # a second identical call recomputes nothing
    explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=3, progress=False)
    assert [b for b, _ in _commits(_progress(out))] == list(range(8))


# ------------------------------------------------------------------------------------------ corrupt files
def test_corrupt_files_are_reported_listed_and_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    good = _write_images(data, 7)
    valid_png = (data / good[0]).read_bytes()
    (data / "truncated.png").write_bytes(valid_png[: len(valid_png) // 2])
    (data / "garbage.jpg").write_bytes(os.urandom(300))
    (data / "empty.tif").write_bytes(b"")
    (data / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(64))
    bad = {"truncated.png", "garbage.jpg", "empty.tif", "fake.dcm"}
    model = _model()
    run = explain_dataset(model, data, method="gradcam", target_layer="layer4", out=tmp_path / "run", batch_size=4,
                          dtype="float32", progress=False)
    assert run.ids == good
    assert {s["id"] for s in run.skipped} == bad
    assert all(s["error"] for s in run.skipped)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {s["id"] for s in meta["skipped"]} == bad and meta["n_skipped"] == 4 and meta["n_explained"] == 7
    # the stored maps are those of the method on the same images (independent oracle: a direct call)
    images = torch.stack([read_image(data / name) for name in good])
    with fastcam.GradCAM(model, "layer4") as cam:
        exp = cam.explain(images)
    torch.testing.assert_close(run.lowres, exp.lowres, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run.logits, exp.logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(run.targets, exp.targets) and torch.equal(run.predicted, exp.logits.argmax(1))
    torch.testing.assert_close(run.upsampled(2), exp.maps[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run.upsampled(good[3], (9, 13)),
                               torch.nn.functional.interpolate(exp.lowres[3][None, None], (9, 13), mode="bilinear",
                                                               align_corners=False)[0, 0].div(
                                   torch.nn.functional.interpolate(exp.lowres[3][None, None], (9, 13), mode="bilinear",
                                                                   align_corners=False).max()), rtol=1e-5, atol=1e-6)


def test_float16_store_keeps_relative_precision(tmp_path: Path) -> None:
    data = tmp_path / "data"
    names = _write_images(data, 5)
    model = _model()
    run = explain_dataset(model, data, method="gradcampp", target_layer="layer4", out=tmp_path / "run", batch_size=5,
                          progress=False)
    exp = fastcam.GradCAMPlusPlus(model, "layer4").explain(torch.stack([read_image(data / n) for n in names]))
    peak = exp.lowres.amax(dim=(1, 2), keepdim=True)
    assert ((run.lowres - exp.lowres).abs() <= 2 ** -11 * peak + 1e-12).all()  # half an fp16 ulp of [0, 1]


# ------------------------------------------------------------------------------------------ refusal
def test_changed_settings_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_images(data, 4)
    out = tmp_path / "run"
    explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=2, progress=False)
    before = (out / "shard-00000-of-00001.progress.json").read_text()
    with pytest.raises(ValueError, match="other settings.*\n.*method"):
        explain_dataset(_model(), data, method="gradcampp", target_layer="layer4", out=out, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="state_sha256|model"):
        explain_dataset(_model(seed=1), data, method="gradcam", target_layer="layer4", out=out, batch_size=2,
                        progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=3, progress=False)
    with pytest.raises(ValueError, match="target_layer"):
        explain_dataset(_model(), data, method="gradcam", target_layer="layer3", out=out, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="resume=False"):
        explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=2, resume=False,
                        progress=False)
    assert (out / "shard-00000-of-00001.progress.json").read_text() == before  # nothing was touched
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a fastcam run directory"):
        explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=tmp_path / "other", progress=False)


def test_incomplete_run_is_not_read_silently(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_images(data, 6)
    out = tmp_path / "run"
    explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=2, progress=False)
    progress = _progress(out)
    progress["committed_batches"] = 1
    (out / "shard-00000-of-00001.progress.json").write_text(json.dumps(progress))
    with pytest.raises(ValueError, match="incomplete"):
        open_run(out)
    assert len(open_run(out, allow_partial=True)) == 2


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


def test_dataset_loader_and_targets(tmp_path: Path) -> None:
    model, ds = _model(), _Labelled(9)
    run = explain_dataset(model, DataLoader(ds, batch_size=4), method="gradcam", target_layer="layer4",
                          out=tmp_path / "a", targets="label", progress=False)
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


def test_oom_splits_the_batch_and_gives_the_same_result(resnet: torch.nn.Module) -> None:
    images = torch.rand(7, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    cam = fastcam.GradCAM(resnet, "layer4")
    calls = []

    class Tight:
        def explain(self, x, targets=None):
            calls.append(x.shape[0])
            if x.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return cam.explain(x, targets)

    state: dict[str, int] = {}
    maps, lowres, logits, targets = explain_splitting_on_oom(Tight(), images, None, None, state)
    exp = cam.explain(images)
    torch.testing.assert_close(lowres, exp.lowres, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, exp.logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(targets, exp.targets) and state["micro"] == 1
    calls.clear()
    explain_splitting_on_oom(Tight(), images[:2], None, None, state)  # later batches start at the size that worked
    assert calls == [1, 1]


def test_amp_workers_and_grayscale_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_images(data, 6)
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
def test_memory_stays_flat_while_streaming(tmp_path: Path) -> None:
    ds = _Synthetic(600, (150, 599))
    explain_dataset(_model(), ds, method="gradcam", target_layer="layer4", out=tmp_path / "run", batch_size=30,
                    progress=False)
    growth = ds.rss[599] - ds.rss[150]
    # 450 images of 12 KiB each (5.3 MiB) pass through after the first mark: none of them may stay
    assert growth < 4 * 2 ** 20, f"RSS grew by {growth / 2 ** 20:.1f} MiB over 450 images"


# ------------------------------------------------------------------------------------------ torchrun
def test_torchrun_two_ranks_equal_single_process_and_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_images(data, 11, size=20)
    weights = tmp_path / "w.pt"
    torch.save(_model().state_dict(), weights)
    common = ["explain", "--model", "tiny_resnet", "--num-classes", "4", "--weights", str(weights), "--layer", "layer4",
              "--method", "gradcam", "--data", str(data), "--batch-size", "2", "--dtype", "float32", "--quiet"]
    assert fastcam.cli.main(common + ["--out", str(tmp_path / "single")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastcam",
           *common, "--out", str(tmp_path / "multi")]

    def launch() -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]

    launch()
    single, multi = open_run(tmp_path / "single"), open_run(tmp_path / "multi")
    assert (tmp_path / "multi" / "shard-00000-of-00002").is_dir() and (tmp_path / "multi" / "shard-00001-of-00002").is_dir()
    assert multi.meta["world_size"] == 2 and multi.meta["complete"]
    assert multi.ids == single.ids
    torch.testing.assert_close(multi.lowres, single.lowres, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(multi.logits, single.logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(multi.targets, single.targets)
    # rank 1 "crashed" after its first batch: roll its commit record back, relaunch, only it resumes
    progress = _progress(tmp_path / "multi", 1, 2)
    session = progress["commits"][0][0]
    progress["committed_batches"], progress["commits"] = 1, [[session, 0, 0]]
    (tmp_path / "multi" / "shard-00001-of-00002.progress.json").write_text(json.dumps(progress))
    before0 = _progress(tmp_path / "multi", 0, 2)["commits"]
    launch()
    assert _progress(tmp_path / "multi", 0, 2)["commits"] == before0
    assert _commits(_progress(tmp_path / "multi", 1, 2)) == [(0, session), (1, session + 1), (2, session + 1)]
    torch.testing.assert_close(open_run(tmp_path / "multi").lowres, single.lowres, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ reading
def test_read_image_formats(tmp_path: Path) -> None:
    gray16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    rgb = (np.random.default_rng(0).random((8, 6, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.tif")
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g8.png")
    torch.testing.assert_close(read_image(tmp_path / "g16.png")[0], torch.from_numpy(gray16 / 65535.0).float())
    torch.testing.assert_close(read_image(tmp_path / "c.tif"), torch.from_numpy(rgb / 255.0).permute(2, 0, 1).float())
    assert read_image(tmp_path / "c.jpg").shape == (3, 8, 6)
    assert read_image(tmp_path / "g8.png").shape == (1, 8, 6)
    # channels adapted to the model, resized, normalised
    pre = Preprocess(channels=3, size=(4, 5), mean=(0.5,), std=(0.25,))
    x = pre.normalize(pre.display(read_image(tmp_path / "g8.png")))
    assert x.shape == (3, 4, 5) and torch.equal(x[0], x[1])


def _dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **extra) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_read_dicom(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000], [2000, 4095]])
    _dicom(tmp_path / "a.dcm", pixels)
    torch.testing.assert_close(read_image(tmp_path / "a.dcm")[0], torch.from_numpy(pixels / 4095.0).float())
    _dicom(tmp_path / "inv.dcm", pixels, "MONOCHROME1")
    torch.testing.assert_close(read_image(tmp_path / "inv.dcm")[0], 1 - torch.from_numpy(pixels / 4095.0).float())
    # window centre 1000, width 2000: DICOM's linear function ((x - (c - 0.5)) / (w - 1) + 0.5), clipped
    _dicom(tmp_path / "win.dcm", pixels, WindowCenter=1000, WindowWidth=2000)
    expected = np.clip((pixels - 999.5) / 1999 + 0.5, 0, 1)
    torch.testing.assert_close(read_image(tmp_path / "win.dcm")[0], torch.from_numpy(expected).float())
    # rescale slope/intercept (CT-like): the stored 12-bit range through the modality LUT maps to [0, 1]
    _dicom(tmp_path / "ct.dcm", pixels, RescaleSlope=2, RescaleIntercept=-1024)
    torch.testing.assert_close(read_image(tmp_path / "ct.dcm")[0], torch.from_numpy(pixels / 4095.0).float())
