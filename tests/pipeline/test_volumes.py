"""explain_dataset on 3-D datasets: NIfTI / .npy folders (and DICOM series, see tests/io/test_volumes.py),
datasets of (C, D, H, W) tensors; 3-D low-resolution maps stored and read back; central-slice overlays
in the report."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import fastcam
from fastcam.cli import main
from fastcam.io.volumes import VolumeFolder, VolumePreprocess
from fastcam.models import tiny_resnet3d
from fastcam.pipeline import open_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nibabel = pytest.importorskip("nibabel")
    root = tmp_path_factory.mktemp("volumes")
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(root / f"case{i}.npy", rng.normal(size=(18, 20, 22)).astype(np.float32))
    nibabel.save(nibabel.Nifti1Image(rng.normal(size=(22, 20, 18)).astype(np.float32), np.eye(4)),
                 str(root / "case2.nii.gz"))
    return root


def test_volume_folder_run_matches_the_explainer_and_reports_central_slices(volumes: Path, tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = tiny_resnet3d(num_classes=2, in_channels=1, width=8).eval()
    data = VolumeFolder(volumes, VolumePreprocess(channels=1, size=(16, 16, 16)))
    run = fastcam.explain_dataset(model, data, method="gradcam", target_layer="layer3", out=tmp_path / "run",
                                  batch_size=2, device="cpu", progress=False, report=True)
    assert run.ids == ["case0.npy", "case1.npy", "case2.nii.gz"] and run.meta["input_size"] == [16, 16, 16]
    assert run.meta["settings"]["data"]["kind"] == "volumes"
    batch = torch.stack([data[i]["image"] for i in range(3)])
    exp = fastcam.GradCAM(model, "layer3").explain(batch)
    assert run.lowres.shape == exp.lowres.shape and run.lowres.dim() == 4
    torch.testing.assert_close(run.lowres[:], exp.lowres, rtol=2e-3, atol=1e-6)  # float16 storage
    torch.testing.assert_close(run.upsampled("case1.npy"), exp.maps[1], rtol=2e-3, atol=2e-3)
    overlays = sorted(p.name for p in run.directory.overlays.glob("*.png"))
    assert overlays == ["case0.npy.png", "case1.npy.png", "case2.nii.gz.png"]  # one PNG per sample id
    from PIL import Image

    with Image.open(run.directory.overlays / "case0.npy.png") as png:  # axial | coronal | sagittal
        assert png.size == (16 + 2 + 16 + 2 + 16, 16)
    assert "case2.nii.gz.png" in run.directory.report.read_text()


class LabelledVolumes(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.items = [(torch.randn(1, 16, 16, 16, generator=g), k % 2) for k in range(3)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.items[index]


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "cfcam"])
def test_datasets_of_volume_tensors_every_method(method: str, tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = tiny_resnet3d(num_classes=2, in_channels=1, width=8).eval()
    run = fastcam.explain_dataset(model, LabelledVolumes(), method=method, target_layer="layer3", out=tmp_path / "r",
                                  batch_size=2, device="cpu", targets="label", progress=False)
    assert run.targets.tolist() == [0, 1, 0] and run.lowres.dim() == 4 and len(run.skipped) == 0


def test_cli_explains_a_volume_folder(volumes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--model", "fastcam:tiny_resnet3d", "--num-classes", "2", "--in-channels", "1", "--layer",
            "layer4", "--method", "gradcampp", "--volumes", "--size", "16", "16", "16", "--data", str(volumes),
            "--out", str(tmp_path / "cli"), "--quiet", "--report"]
    assert main(argv) == 0
    run = open_run(tmp_path / "cli")
    assert len(run) == 3 and run.lowres.dim() == 4 and run.upsampled(0).shape == (16, 16, 16)
    assert run.meta["settings"]["model"]["random_weights"] is True
    assert "random weights" in capsys.readouterr().err
    assert main([*argv[:-4], "--size", "16", "16", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert "--size takes 1 or 3 values for volumes" in capsys.readouterr().err
