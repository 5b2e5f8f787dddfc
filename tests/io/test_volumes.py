"""fastcam.io.volumes: NIfTI, .npy and DICOM series read back as written, the folder dataset, central slices."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fastcam.io.volumes import VolumeFolder, VolumePreprocess, central_slices, list_volumes, read_volume


def _slice(path: Path, pixels: np.ndarray, z: float, instance: int) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024  # stored values -> Hounsfield units
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, z]
    ds.InstanceNumber = instance
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_npy_and_nifti_read_back_in_d_h_w_order(tmp_path: Path) -> None:
    nibabel = pytest.importorskip("nibabel")
    volume = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)  # (D, H, W)
    np.save(tmp_path / "a.npy", volume)
    np.save(tmp_path / "c.npy", np.stack([volume, volume * 2]))  # (C, D, H, W)
    nibabel.save(nibabel.Nifti1Image(volume.transpose(2, 1, 0), np.eye(4)), str(tmp_path / "b.nii.gz"))  # (x, y, z)
    torch.testing.assert_close(read_volume(tmp_path / "a.npy"), torch.from_numpy(volume)[None])
    torch.testing.assert_close(read_volume(tmp_path / "b.nii.gz"), torch.from_numpy(volume)[None])
    assert read_volume(tmp_path / "c.npy").shape == (2, 5, 6, 7)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):  # nothing is unpickled
        read_volume(tmp_path / "objects.npy")


def test_dicom_series_is_ordered_by_position_in_hounsfield_units(tmp_path: Path) -> None:
    series = tmp_path / "patient1" / "ct"
    series.mkdir(parents=True)
    planes = [np.full((4, 5), 1000 + 10 * k) for k in range(3)]
    for k, name in zip((2, 0, 1), ("x1.dcm", "x2.dcm", "x3.dcm")):  # files named out of order
        _slice(series / name, planes[k], z=2.5 * k, instance=3 - k)  # instance numbers disagree: position wins
    volume = read_volume(series)
    assert volume.shape == (1, 3, 4, 5)
    assert volume[0, :, 0, 0].tolist() == [-24.0, -14.0, -4.0]
    assert list_volumes(tmp_path) == ["patient1/ct"]


def test_volume_folder_preprocesses_and_reports_bad_files(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((4, 6, 8), np.float32))
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    folder = VolumeFolder(tmp_path, VolumePreprocess(channels=3, size=(2, 3, 4), mean=(1.0,), std=(2.0,)))
    assert folder.ids == ["a.npy", "broken.npy"] and folder.size == (2, 3, 4)
    good, bad = folder[0], folder[1]
    assert good["ok"] and good["image"].shape == (3, 2, 3, 4) and torch.allclose(good["image"], torch.zeros(3, 2, 3, 4))
    assert not bad["ok"] and bad["image"].shape == (3, 2, 3, 4) and bad["error"]


def test_central_slices_lays_out_the_three_planes() -> None:
    d, h, w = 3, 4, 5
    volume = torch.arange(d * h * w, dtype=torch.float32).view(d, h, w)
    panel = central_slices(volume, gap=1)
    assert panel.shape == (max(h, d), w + 1 + w + 1 + h)
    torch.testing.assert_close(panel[:h, :w], volume[d // 2])
    torch.testing.assert_close(panel[:d, w + 1 : 2 * w + 1], volume[:, h // 2, :])
    torch.testing.assert_close(panel[:d, 2 * w + 2 :], volume[:, :, w // 2])
    assert central_slices(volume.expand(2, 1, d, h, w)).shape[:2] == (2, 1)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.bool_])
def test_npy_volumes_of_non_real_dtypes_are_refused(tmp_path: Path, dtype: type) -> None:
    """Issue 26 item 8: a complex volume was explained with its imaginary part silently dropped."""
    np.save(tmp_path / "v.npy", (np.ones((2, 3, 4)) * (1 + 2j)).astype(dtype) if dtype is not np.bool_ else np.ones((2, 3, 4), dtype))
    with pytest.raises(ValueError, match=rf"real numbers.*{np.dtype(dtype).name}"):
        read_volume(tmp_path / "v.npy")
