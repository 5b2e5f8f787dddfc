"""Image reading: PNG 8/16-bit, JPEG, TIFF, DICOM (photometric, windowing, rescale), and preprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastcam.io.images import Preprocess, read_image
from fastcam_testkit.images import bomb_png


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


def test_given_bytes_decode_exactly_as_the_file(tmp_path: Path) -> None:
    """read_image(name, data): bytes already read (object storage, a Ray dataset) decode as the file does; a
    DICOM is told by its header even under a name without its suffix."""
    rgb = (np.random.default_rng(1).random((8, 6, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 250)).save(tmp_path / "g16.tif")
    _dicom(tmp_path / "a.dcm", (np.arange(12, dtype=np.uint16).reshape(3, 4) * 300))
    for name, given in (("c.png", "c.png"), ("g16.tif", "g16.tif"), ("a.dcm", "a.dcm"), ("a.dcm", "scan-7")):
        data = (tmp_path / name).read_bytes()
        assert torch.equal(read_image(given, data), read_image(tmp_path / name))


def test_decode_image_reads_bytes_as_the_file_is_read(tmp_path: Path) -> None:
    from fastcam.io.images import decode_image, image_pixels

    rgb = (np.random.default_rng(1).random((7, 5, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.tif")
    _dicom(tmp_path / "a.dcm", np.array([[0, 1000], [2000, 4095]]))
    _dicom(tmp_path / "noext", np.array([[0, 1000], [2000, 4095]]))  # DICOM told by its preamble, not its name
    for name in ("c.tif", "a.dcm", "noext"):
        data = (tmp_path / name).read_bytes()
        assert torch.equal(decode_image(data), read_image(tmp_path / name))
    assert image_pixels((tmp_path / "c.tif").read_bytes()) == 35
    assert image_pixels((tmp_path / "a.dcm").read_bytes()) == 4


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns past 89 megapixels
def test_decode_image_refuses_a_bomb_before_decoding_it() -> None:
    from fastcam.errors import ImageTooLargeError
    from fastcam.io.images import decode_image

    bomb = bomb_png(12_000, 12_000)  # 144 megapixels in under 100 kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match="144,000,000 pixels, more than the limit of 64,000,000"):
        decode_image(bomb)
    with pytest.raises(ImageTooLargeError, match="400000000 pixels"):  # past Pillow's own limit: its check
        decode_image(bomb_png(20_000, 20_000), max_pixels=None)
    with pytest.raises(ImageTooLargeError, match="more than the limit of 99"):
        decode_image(bomb_png(10, 10), max_pixels=99)
    assert decode_image(bomb_png(10, 10), max_pixels=100).shape == (1, 10, 10)
    with pytest.raises(ValueError, match="empty"):
        decode_image(b"")
    with pytest.raises(OSError):  # Pillow: not an image / truncated
        decode_image(bomb_png(64, 64)[:-40])
