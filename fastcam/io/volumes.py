"""Reading 3-D volumes from disk (CT, MRI): NIfTI (nibabel), NumPy `.npy`, and DICOM series (pydicom).

`read_volume(path)` returns a float32 (C, D, H, W) tensor with the stored intensities (NIfTI: after its
scaling slope/intercept; DICOM: after the modality LUT, so CT is in Hounsfield units; `.npy`: as saved),
never rescaled by content. Axes: D runs over slices, H over rows, W over columns.

- NIfTI (`.nii`, `.nii.gz`): reoriented to the closest canonical (RAS+) orientation, then laid out as
  (z, y, x) = (D, H, W). A 4-D file with one volume is taken; more volumes (time series) are refused.
- `.npy`: (D, H, W) or (C, D, H, W), loaded with `allow_pickle=False` (nothing is unpickled).
- DICOM series: a folder whose files are the slices of one series, ordered by their position along the
  slice normal (ImagePositionPatient · the normal of ImageOrientationPatient), else InstanceNumber.

`VolumeFolder` is a `torch.utils.data.Dataset` over a folder (sorted relative paths as sample ids; a
series is its folder's relative path) with `VolumePreprocess` (channels, trilinear resize, mean/std). A
volume that cannot be read gives an `ok=False` item with the error, as `fastcam.io.images.ImageFolder`.
`central_slices` lays out the three central slices of a volume side by side, for overlays and the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from fastcam.io.images import FolderItems

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy")
DICOM_SUFFIXES = (".dcm", ".dicom")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_nifti(path: Path) -> np.ndarray:
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover - nibabel is in the test and nifti extras
        raise ImportError("reading NIfTI needs nibabel: pip install 'fastcam[nifti]'") from exc
    image = nibabel.as_closest_canonical(nibabel.load(str(path)))
    data = np.asarray(image.get_fdata(dtype=np.float32))
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"NIfTI volume of shape {data.shape}: only single 3-D volumes are supported")
    return data.transpose(2, 1, 0)[None]  # (x, y, z) -> (1, z, y, x)


def _read_npy(path: Path) -> np.ndarray:
    data = np.load(path, allow_pickle=False)
    if data.ndim == 3:
        data = data[None]
    # complex values are refused, not cast (which would drop the imaginary part)
    if data.ndim != 4 or not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ValueError(f".npy volume must hold real numbers (integer or floating), shaped (D, H, W) or "
                         f"(C, D, H, W), got {data.dtype} {data.shape}")
    return data.astype(np.float32)


def _read_dicom_series(folder: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DICOM_SUFFIXES)
    if not files:
        raise ValueError(f"{str(folder)!r} holds no DICOM slices")
    slices = [pydicom.dcmread(str(p)) for p in files]

    def position(ds: Any) -> float:
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
            normal = np.cross(orientation[:3], orientation[3:])
            return float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=np.float64)))
        return float(getattr(ds, "InstanceNumber", 0))

    slices.sort(key=position)
    planes = [apply_modality_lut(ds.pixel_array, ds).astype(np.float32) for ds in slices]
    shapes = {p.shape for p in planes}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"the slices of series {str(folder)!r} differ in shape or are not 2-D: {sorted(shapes)}")
    return np.stack(planes)[None]


def read_volume(path: str | Path) -> Tensor:
    """One volume as a float32 (C, D, H, W) tensor of stored intensities (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        array = _read_dicom_series(path)
    elif _suffix(path) in (".nii", ".nii.gz"):
        array = _read_nifti(path)
    elif _suffix(path) == ".npy":
        array = _read_npy(path)
    else:
        raise ValueError(f"{str(path)!r} is not a volume ({', '.join(VOLUME_SUFFIXES)} or a DICOM series folder)")
    if min(array.shape) == 0:
        raise ValueError(f"volume has an empty size {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("volume contains NaN or Inf voxels")
    return tensor


def list_volumes(root: str | Path) -> list[str]:
    """Volumes under `root` (recursive): NIfTI and .npy files, and every folder holding DICOM slices (one
    series each), as sorted POSIX paths relative to `root`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist or is not a folder")
    found = {p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and _suffix(p) in VOLUME_SUFFIXES and not p.name.startswith(".")}
    found |= {p.parent.relative_to(root).as_posix() for p in root.rglob("*")
              if p.is_file() and p.suffix.lower() in DICOM_SUFFIXES and not p.name.startswith(".")}
    return sorted(found)


@dataclass(frozen=True)
class VolumePreprocess:
    """A volume model's input preprocessing: channels (a 1-channel volume repeated for a 3-channel model),
    trilinear resize to `size` (D, H, W), then `(x - mean) / std`. Intensities are otherwise kept."""

    channels: int = 1
    size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.size is not None and (len(self.size) != 3 or min(self.size) <= 0):
            raise ValueError(f"size must be (D, H, W) with positive sides, got {self.size}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, volume: Tensor) -> Tensor:
        if volume.shape[0] != self.channels:
            if volume.shape[0] != 1:
                raise ValueError(f"a {volume.shape[0]}-channel volume cannot feed a {self.channels}-channel model")
            volume = volume.expand(self.channels, -1, -1, -1)
        if self.size is not None and tuple(volume.shape[1:]) != tuple(self.size):
            volume = F.interpolate(volume[None], size=self.size, mode="trilinear", align_corners=False)[0]
        if self.mean is not None:
            volume = volume - torch.tensor(self.mean, dtype=volume.dtype).view(-1, 1, 1, 1)
        if self.std is not None:
            volume = volume / torch.tensor(self.std, dtype=volume.dtype).view(-1, 1, 1, 1)
        return volume.contiguous()

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "size": list(self.size) if self.size else None,
                "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None}


@dataclass
class VolumeFolder(FolderItems, Dataset):
    """Every volume under `root` (`list_volumes`), preprocessed for the model. Items are dicts: `image`
    (C, D, H, W) float32, `ok`, `error`; without a size in `preprocess`, volumes of another size than the
    first readable one are resized to it (trilinear), as `fastcam.io.images.FolderItems` says."""

    root: str | Path
    preprocess: VolumePreprocess = field(default_factory=VolumePreprocess)
    files: Sequence[str] | None = None
    what = "volume"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.files = list(self.files) if self.files is not None else list_volumes(self.root)
        if not self.files:
            raise ValueError(f"no volumes ({', '.join(VOLUME_SUFFIXES)}, DICOM series folders) under {str(self.root)!r}")
        self.size = tuple(self.preprocess.size) if self.preprocess.size else self._first_size()
        #: the preprocessing with the dataset's size: what every volume goes through
        self.fitted = replace(self.preprocess, size=tuple(self.size))

    def _read_size(self, path: Path) -> tuple[int, ...]:
        return tuple(read_volume(path).shape[1:])

    def _load(self, path: Path) -> Tensor:
        return self.fitted(read_volume(path))

    def _blank(self) -> Tensor:
        return torch.zeros(self.preprocess.channels, *self.size)


def central_slices(volumes: Tensor, gap: int = 2) -> Tensor:
    """(..., D, H, W) -> (..., max(H, D), W + W + H + 2·gap): the central axial (D/2), coronal (H/2) and
    sagittal (W/2) slices side by side, each top-aligned on a zero background."""
    d, h, w = volumes.shape[-3:]
    planes = [volumes[..., d // 2, :, :], volumes[..., :, h // 2, :], volumes[..., :, :, w // 2]]
    height = max(p.shape[-2] for p in planes)
    padded = []
    for i, plane in enumerate(planes):
        plane = F.pad(plane, (0, gap if i < 2 else 0, 0, height - plane.shape[-2]))
        padded.append(plane)
    return torch.cat(padded, dim=-1)
