"""Reading images from disk: PNG, JPEG, TIFF (Pillow) and DICOM (pydicom), grayscale or RGB.

`read_image(path)` returns a float32 (C, H, W) tensor in [0, 1] with C = 1 or 3; `ImageFolder` is a
`torch.utils.data.Dataset` over a folder (searched recursively, sorted relative paths, so the order and
the sample ids are deterministic) that adapts channels to the model, resizes and normalises. A file that
cannot be read gives an `ok=False` item with the error instead of raising: the pipeline reports it,
lists it in run.json and skips it.

Intensity scaling, per file type (fixed by the type, never by the image's content, so every image of a
dataset is scaled the same way):
- 8-bit images (L, RGB, P, ...): divided by 255.
- 16-bit images (Pillow modes I;16*, and mode I as Pillow opens 16-bit PNG/TIFF): divided by 65535.
- float TIFF (mode F): used as stored.
- DICOM: the modality LUT (RescaleSlope/Intercept, pydicom), then the file's window (the DICOM linear
  VOI function, to [0, 1]) or VOI LUT table (pydicom, divided by its output range); without either, the
  range the stored bits can hold (through the modality LUT) maps to [0, 1]. MONOCHROME1 is inverted so
  that bright means dense, as for MONOCHROME2. Colour DICOM (RGB/YBR) is converted to RGB.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

#: how `file_fingerprints` identifies an input file: its size and mtime, or its content
FINGERPRINT_MODES = ("stat", "content")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def list_images(root: str | Path) -> list[str]:
    """Image files under `root` (recursive), as sorted POSIX paths relative to `root`.

    Files that will not be read are listed too, so that a run reports them as skipped with the reason
    (`skip_reason`): hidden (dot) files, and broken or looping symbolic links.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {str(root)!r} does not exist or is not a folder")
    found = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_symlink() or p.is_file()) and not p.is_dir()]
    return sorted(found)


def skip_reason(path: str | Path) -> str | None:
    """Why an image file of a folder is not read (hidden, a broken or looping symbolic link), or None."""
    path = Path(path)
    if path.name.startswith("."):
        return "hidden file (its name starts with '.'): not read; rename it to explain it"
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symbolic link loop: the link points (through other links) back to itself"
            return f"broken symbolic link: its target {os.readlink(path)!r} does not exist"
    return None


def file_fingerprints(root: str | Path, names: Sequence[str], mode: str = "stat") -> np.ndarray:
    """One uint64 per file `root/name`: a hash of its size and modification time (`mode="stat"`, cheap),
    or of its content (`mode="content"`, reads every file). A file that cannot be found has the
    fingerprint of that state; 0 is never returned (it means "not recorded" in a run's store).

    A run stores the fingerprint of each input when it explains it; resuming compares them to find the
    batches whose inputs changed. Only regular files are read (symbolic links followed): anything else
    (a FIFO, a device, a folder) has the fingerprint of an unreadable file.
    """
    import hashlib

    if mode not in FINGERPRINT_MODES:
        raise ValueError(f"fingerprint mode must be one of {FINGERPRINT_MODES}, got {mode!r}")
    root = Path(root)
    out = np.empty(len(names), dtype=np.uint64)
    for i, name in enumerate(names):
        digest = hashlib.blake2b(digest_size=8)
        path = root / name
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or read without end
                raise OSError(errno.EINVAL, "not a regular file")
            if mode == "stat":
                digest.update(f"stat:{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                digest.update(b"content:")
                with path.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        except OSError as exc:
            digest.update(f"unreadable:{exc.errno}".encode())
        out[i] = int.from_bytes(digest.digest(), "little") or 1
    return out


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with path.open("rb") as f:  # DICOM part 10: 128-byte preamble then "DICM"
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path))
    pixels = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(f"multi-frame DICOM ({frames} frames) is not supported; export single frames")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        if photometric != "RGB":
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return pixels.astype(np.float32) / float(2 ** int(ds.BitsStored) - 1)
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    bits = int(getattr(ds, "BitsStored", 16))
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    if "WindowCenter" in ds and "WindowWidth" in ds:
        # the DICOM linear VOI function (PS3.3 C.11.2.1.2), output scaled to [0, 1]
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = max(float(np.atleast_1d(ds.WindowWidth)[0]), 1.0)
        scaled = (values - (center - 0.5)) / max(width - 1.0, 1e-12) + 0.5
    elif "VOILUTSequence" in ds:
        lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        scaled = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64) / float(2 ** lut_bits - 1)
    else:
        # the range the stored bits can hold, through the modality LUT: fixed by the file type, not the content
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        slope, intercept = float(getattr(ds, "RescaleSlope", 1.0)), float(getattr(ds, "RescaleIntercept", 0.0))
        low, high = sorted((low * slope + intercept, high * slope + intercept))
        scaled = (values - low) / max(high - low, 1e-12)
    scaled = np.clip(scaled, 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now: a truncated/corrupt file raises here, inside the caller's try
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        mode = img.mode
        if mode.startswith("I;16") or mode == "I":
            return np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
        if mode == "F":
            return np.asarray(img, dtype=np.float32)
        if mode in ("1", "L", "LA", "La"):
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_image(path: str | Path) -> Tensor:
    """One image as a float32 (C, H, W) tensor in [0, 1] (C = 1 for grayscale, 3 for colour)."""
    path = Path(path)
    array = _read_dicom(path) if _is_dicom(path) else _read_pillow(path)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].transpose(2, 0, 1)
    else:
        raise ValueError(f"unsupported pixel array shape {array.shape}")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError("image has an empty size")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("image contains NaN or Inf pixels")
    return tensor


@dataclass(frozen=True)
class Preprocess:
    """The model's input preprocessing: channels, resize (bilinear, antialiased) and normalisation.

    `x = (resize(adapt_channels(img)) - mean) / std` with img in [0, 1] (with `resize`: the shorter side
    resized to it, then a centre crop to `size`, as torchvision's and timm's evaluation transforms; both
    bilinear with antialiasing here, where timm's recipes often say bicubic). Grayscale images given to an
    RGB model are repeated over 3 channels; RGB images given to a 1-channel model are converted with
    ITU-R 601-2 luma weights (as Pillow's "L").
    """

    channels: int = 3
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: resize the shorter side to this first, then centre-crop to `size` (torchvision's and timm's
    #: evaluation transforms); None resizes straight to `size`
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"models must take 1 or 3 input channels, got {self.channels}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise ValueError(f"size must be (H, W) with positive sides, got {self.size}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values, got {len(value)}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.resize is not None and (self.size is None or self.resize < min(self.size)):
            raise ValueError(f"resize {self.resize} needs a crop size no larger than it, got size {self.size}")

    def display(self, image: Tensor) -> Tensor:
        """[0, 1] image with the model's channels and size, before normalisation (for overlays)."""
        if image.shape[0] != self.channels:
            if self.channels == 3:
                image = image.expand(3, -1, -1)
            else:
                luma = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
                image = (image * luma).sum(0, keepdim=True)
        if self.resize is not None and self.size is not None:
            height, width = image.shape[-2:]
            scale = self.resize / min(height, width)
            shape = (max(self.size[0], round(height * scale)), max(self.size[1], round(width * scale)))
            if shape != (height, width):
                image = F.interpolate(image[None], size=shape, mode="bilinear", align_corners=False,
                                      antialias=True)[0].clamp(0, 1)
            top, left = (int(round((shape[i] - self.size[i]) / 2.0)) for i in (0, 1))  # torchvision's centre
            image = image[..., top : top + self.size[0], left : left + self.size[1]]
        elif self.size is not None and tuple(image.shape[-2:]) != tuple(self.size):
            image = F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False,
                                  antialias=True)[0].clamp(0, 1)
        return image.contiguous()

    def normalize(self, image: Tensor) -> Tensor:
        if self.mean is not None:
            image = image - torch.tensor(self.mean, dtype=image.dtype).view(-1, 1, 1)
        if self.std is not None:
            image = image / torch.tensor(self.std, dtype=image.dtype).view(-1, 1, 1)
        return image

    def denormalize(self, images: Tensor) -> Tensor:
        """Inverse of `normalize` for a batch (B, C, H, W), clamped to [0, 1]."""
        if self.std is not None:
            images = images * torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        if self.mean is not None:
            images = images + torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return images.clamp(0, 1)

    def as_dict(self) -> dict[str, Any]:
        out = {"channels": self.channels, "size": list(self.size) if self.size else None,
               "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None}
        if self.resize is not None:  # only when set: runs recorded before it existed keep their settings
            out["resize"] = self.resize
        return out


class FolderItems:
    """What the file-folder datasets share (`ImageFolder`, `fastcam.io.volumes.VolumeFolder`): sorted
    relative paths as ids, the first readable file's size as the dataset's when there is no resize, and
    items that report a file that cannot be read (`ok=False`, a zero tensor of the expected shape, the
    error) instead of raising. Subclasses give `root`, `files`, `size` and `_load` / `_blank`."""

    root: Path
    files: list[str]
    size: tuple[int, ...]
    #: what one file holds, for messages ("image", "volume"), and the flag that resizes it
    what: str = "image"
    resize_flag: str = "--size H W"

    def _load(self, path: Path) -> Tensor:
        """The file as the model takes it (preprocessed); its spatial size is compared with `size`."""
        raise NotImplementedError

    def _read_size(self, path: Path) -> tuple[int, ...]:
        raise NotImplementedError

    def _blank(self) -> Tensor:
        raise NotImplementedError

    def _first_size(self) -> tuple[int, ...]:
        """Without a resize every file must share the first readable file's size."""
        for name in self.files:
            if skip_reason(self.root / name):
                continue
            try:
                return self._read_size(self.root / name)
            except Exception:  # noqa: BLE001 - unreadable: try the next one
                continue
        raise ValueError(f"none of the {len(self.files)} {self.what}s under {str(self.root)!r} can be read")

    @property
    def ids(self) -> list[str]:
        return list(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.files[index]
        reason = skip_reason(self.root / name)
        if reason:  # hidden files and broken or looping links: listed as skipped, with the reason
            return {"image": self._blank(), "ok": False, "error": reason}
        try:
            item = self._load(self.root / name)
            spatial = tuple(item.shape[-len(self.size):])
            if spatial != tuple(self.size):
                raise ValueError(f"{self.what} size {spatial} differs from the dataset's {tuple(self.size)}; "
                                 f"pass a resize ({self.resize_flag})")
            return {"image": item, "ok": True, "error": ""}
        except Exception as exc:  # reported and skipped by the pipeline, never fatal
            return {"image": self._blank(), "ok": False, "error": f"{type(exc).__name__}: {exc}"}


@dataclass
class ImageFolder(FolderItems, Dataset):
    """Every image under `root` (recursive, sorted relative paths), preprocessed for the model.

    Items are dicts: `image` (C, H, W) float32 normalised, `ok` (bool), `error` (str, empty when ok).
    A file that cannot be read, or whose size differs from the others when no resize is set, and a file
    that is not read (`skip_reason`: hidden, a broken or looping symbolic link) give `ok=False`, the
    reason, and a zero image of the expected shape, so the batch still collates.
    """

    root: str | Path
    preprocess: Preprocess = field(default_factory=Preprocess)
    files: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.files = list(self.files) if self.files is not None else list_images(self.root)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {str(self.root)!r}")
        self.size = self.preprocess.size or self._first_size()

    def _read_size(self, path: Path) -> tuple[int, ...]:
        return tuple(read_image(path).shape[-2:])

    def _load(self, path: Path) -> Tensor:
        image = self.preprocess.display(read_image(path))
        if tuple(image.shape[-2:]) != tuple(self.size):
            return image  # refused by the caller, with the sizes
        return self.preprocess.normalize(image)

    def _blank(self) -> Tensor:
        return torch.zeros(self.preprocess.channels, *self.size)
