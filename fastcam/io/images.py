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
import io
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from fastcam.models.specs import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 - re-exported (their home)

#: how `file_fingerprints` identifies an input file: its size and mtime, or its content
FINGERPRINT_MODES = ("stat", "content")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")


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


def _is_dicom(path: Path, source: Path | BinaryIO) -> bool:
    """Whether the file named `path` (read from `source`: the path itself, or its bytes) is DICOM."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    if isinstance(source, Path):
        with source.open("rb") as f:  # DICOM part 10: 128-byte preamble then "DICM"
            head = f.read(132)
    else:
        head = source.read(132)
        source.seek(0)
    return len(head) == 132 and head[128:] == b"DICM"


def _read_dicom(source: Path | BinaryIO) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(source) if isinstance(source, Path) else source)
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


def _read_pillow(source: Path | BinaryIO) -> np.ndarray:
    from PIL import Image

    with Image.open(source) as img:
        img.load()  # decode now: a truncated/corrupt file raises here, inside the caller's try
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        return _pillow_pixels(img)


def _pillow_pixels(img: Any) -> np.ndarray:
    """A decoded Pillow image's pixels in [0, 1]: (H, W) grayscale or (H, W, 3) RGB, float32."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        return np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _pixels_tensor(array: np.ndarray) -> Tensor:
    """(H, W) or (H, W, C) pixels in [0, 1] (C 1, 3 or 4; alpha dropped) as a float32 (C, H, W) tensor,
    refused when empty or not finite."""
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., : min(array.shape[-1], 3)].transpose(2, 0, 1)
    else:
        raise ValueError(f"unsupported pixel array shape {array.shape}: images are (H, W) or (H, W, C) with C "
                         "1, 3 or 4, as Pillow, imageio and Hugging Face datasets give them (pass a torch tensor "
                         "for (C, H, W))")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError("image has an empty size")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("image contains NaN or Inf pixels")
    return tensor


def read_image(path: str | Path, data: bytes | None = None) -> Tensor:
    """One image as a float32 (C, H, W) tensor in [0, 1] (C = 1 for grayscale, 3 for colour).

    Args:
        path: the image file; with `data`, only its name (the suffix tells DICOM files).
        data: the file's encoded bytes, already read (from object storage, a Ray dataset): decoded exactly
            as the file would be.
    """
    from PIL import UnidentifiedImageError

    name, path = str(path), Path(path)
    source: Path | BinaryIO = path if data is None else io.BytesIO(data)
    try:
        return _pixels_tensor(_read_dicom(source) if _is_dicom(path, source) else _read_pillow(source))
    except UnidentifiedImageError:
        if data is None:
            raise
        # Pillow names the in-memory buffer (a memory address, other on every run): name the file, as for paths
        raise UnidentifiedImageError(f"cannot identify image file {name!r}") from None


#: the most pixels `decode_image` decodes by default (decompression bombs): 64 megapixels, more than a
#: mammogram or a whole-slide thumbnail, far less than the memory of a machine
MAX_PIXELS = 64_000_000


def image_pixels(data: bytes) -> int:
    """The number of pixels an encoded image holds (all frames), read from its header without decoding
    the pixels: DICOM (pydicom, stopped before the pixel data) or any format Pillow opens.

    Raises:
        fastcam.errors.ImageTooLargeError: Pillow itself refuses the header as a decompression bomb.
        ValueError: the bytes are not an image file these readers know.
    """
    from PIL import Image

    from fastcam.errors import ImageTooLargeError

    source = io.BytesIO(data)
    if _is_dicom(Path(""), source):
        import pydicom

        ds = pydicom.dcmread(source, stop_before_pixels=True)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        return int(ds.Rows) * int(ds.Columns) * frames
    try:
        with Image.open(source) as img:  # reads the header only
            return img.size[0] * img.size[1] * int(getattr(img, "n_frames", 1))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"Pillow refuses the image: {exc}") from None


def decode_image(data: bytes, *, max_pixels: int | None = MAX_PIXELS) -> Tensor:
    """An encoded image file's bytes (PNG, JPEG, TIFF, BMP, DICOM part 10) as `read_image` reads the file:
    a float32 (C, H, W) tensor in [0, 1].

    Args:
        data: the whole file.
        max_pixels: refuse an image with more pixels (all frames) than this before decoding it (None: no
            limit but Pillow's own decompression-bomb check), so that a small file that expands to gigabytes
            of pixels is never decoded.

    Raises:
        fastcam.errors.ImageTooLargeError: more pixels than `max_pixels`.
        ValueError: empty data. Other exceptions of the decoders (Pillow's `UnidentifiedImageError`, OSError
            for a truncated file, pydicom's errors) pass through: the bytes are not a readable image.
    """
    from fastcam.errors import ImageTooLargeError

    if not data:
        raise ValueError("no image: the data is empty")
    pixels = image_pixels(data)
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(f"the image has {pixels:,} pixels, more than the limit of {max_pixels:,}")
    return read_image(Path("upload"), data)


def is_picture(image: object) -> bool:
    """Whether a dataset item's image is a picture to decode (a Pillow image or a numpy array), not a tensor."""
    from PIL import Image

    return isinstance(image, (np.ndarray, Image.Image))


def picture_tensor(picture: Any) -> Tensor:
    """A picture as `read_image` reads files: a float32 (C, H, W) tensor in [0, 1] (C = 1 or 3).

    `picture`: a Pillow image (any mode, as a file of that mode is read), or a numpy array (H, W) or
    (H, W, C) with C 1, 3 or 4, as Hugging Face `datasets` and imageio give them: integers are scaled by
    their type's maximum (uint8 / 255, uint16 / 65535), booleans to 0 / 1, floats taken as they are.
    """
    if not is_picture(picture):
        raise TypeError(f"a picture is a PIL image or a numpy array, got {type(picture).__name__}")
    if not isinstance(picture, np.ndarray):
        return _pixels_tensor(_pillow_pixels(picture))
    if picture.dtype == np.bool_:
        array = picture.astype(np.float32)
    elif np.issubdtype(picture.dtype, np.integer):
        info = np.iinfo(picture.dtype)
        array = np.clip(picture.astype(np.float64) / info.max, 0.0, 1.0).astype(np.float32)
    elif np.issubdtype(picture.dtype, np.floating):
        array = picture.astype(np.float32)
    else:
        raise TypeError(f"a numpy picture must hold numbers, got dtype {picture.dtype}")
    return _pixels_tensor(array)


@dataclass(frozen=True)
class Preprocess:
    """The model's input preprocessing: channels, resize (bilinear, antialiased) and normalisation.

    `x = (resize(adapt_channels(img)) - mean) / std` with img in [0, 1] (with `resize`: the shorter side
    resized to it, then a centre crop to `size`, as torchvision's and timm's evaluation transforms; both
    bilinear with antialiasing here, where timm's recipes often say bicubic). Grayscale images given to an
    RGB model are repeated over 3 channels; RGB images given to a 1-channel model are converted with
    ITU-R 601-2 luma weights (as Pillow's "L").

    With a `processor` (a model's own preprocessing, e.g. a Hugging Face model's `AutoImageProcessor`
    wrapped by `fastcam.models.processors.HFImageProcessor`), the processor makes the model input from the
    image with the model's channels; `size`, `mean` and `std` then describe its output (`denormalize`).
    """

    channels: int = 3
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: resize the shorter side to this first, then centre-crop to `size` (torchvision's and timm's
    #: evaluation transforms); None resizes straight to `size`
    resize: int | None = None
    #: (C, H, W) image in [0, 1] -> model input, in place of resize and normalisation; recorded by its
    #: `describe()` in the run's settings
    processor: Callable[[Tensor], Tensor] | None = None

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

    @classmethod
    def for_model(cls, channels: int, defaults: dict[str, Any], size: int | Sequence[int] | None = None,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  processor: Callable[[Tensor], Tensor] | None = None) -> "Preprocess":
        """The preprocessing of a model built from a spec (`fastcam explain`'s and `fastcam serve`'s flags).

        Args:
            channels: the model's input channels.
            defaults: the spec's own recipe as the model loader returns it ("size", "resize", "mean", "std").
            size: one side or (H, W); overrides the recipe with a plain resize (no centre crop).
            mean: per-channel mean (default: the recipe's, else none).
            std: per-channel std (default: the recipe's, else none).
            processor: the model's own preprocessing (a Hugging Face model's `AutoImageProcessor`, as the
                loader returns it), used unless `size`, `mean` or `std` override the recipe.
        """
        side = size if size is not None else defaults.get("size")
        if isinstance(side, int):
            side = (side, side)
        return cls(channels=channels, size=tuple(side) if side else None,  # type: ignore[arg-type]
                   mean=tuple(mean) if mean else defaults.get("mean"), std=tuple(std) if std else defaults.get("std"),
                   resize=defaults.get("resize") if size is None else None,
                   processor=processor if size is None and not mean and not std else None)

    def adapt_channels(self, image: Tensor) -> Tensor:
        """The image with the model's channels (grayscale repeated, RGB to luma)."""
        if image.shape[0] != self.channels:
            if self.channels == 3:
                image = image.expand(3, -1, -1)
            else:
                luma = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
                image = (image * luma).sum(0, keepdim=True)
        return image

    def display(self, image: Tensor) -> Tensor:
        """[0, 1] image with the model's channels and size, before normalisation (for overlays)."""
        image = self.adapt_channels(image)
        if self.processor is not None:
            return self.denormalize(self.processor(image)[None])[0]
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
        if self.processor is not None:
            describe = getattr(self.processor, "describe", None)
            out["processor"] = describe() if callable(describe) else repr(self.processor)
        return out


class FolderItems:
    """What the file-folder datasets share (`ImageFolder`, `fastcam.io.volumes.VolumeFolder`): sorted
    relative paths as ids; the dataset's size: the preprocessing's, else the first readable file's (in
    sorted order), every file of another size resized to it; items that report a file that cannot be read
    (`ok=False`, a zero tensor of the expected shape, the error) instead of raising. Subclasses give
    `root`, `files`, `size` and `_load` / `_blank`."""

    root: Path
    files: list[str]
    size: tuple[int, ...]
    #: what one file holds, for messages ("image", "volume")
    what: str = "image"

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
            if spatial != tuple(self.size):  # the preprocessing resizes to `size`: a broken invariant, said plainly
                raise ValueError(f"{self.what} size {spatial} after preprocessing differs from the dataset's "
                                 f"{tuple(self.size)}")
            return {"image": item, "ok": True, "error": ""}
        except Exception as exc:  # reported and skipped by the pipeline, never fatal
            return {"image": self._blank(), "ok": False, "error": f"{type(exc).__name__}: {exc}"}


@dataclass
class ImageFolder(FolderItems, Dataset):
    """Every image under `root` (recursive, sorted relative paths), preprocessed for the model.

    Items are dicts: `image` (C, H, W) float32 normalised, `ok` (bool), `error` (str, empty when ok).
    Without a size in `preprocess`, the first readable image's size (in sorted order) is the dataset's and
    images of other sizes are resized to it (`fitted`). A file that cannot be read, and a file that is not
    read (`skip_reason`: hidden, a broken or looping symbolic link) give `ok=False`, the reason, and a zero
    image of the expected shape, so the batch still collates.
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
        #: the preprocessing with the dataset's size: what every image goes through
        self.fitted = replace(self.preprocess, size=tuple(self.size))

    def _read(self, path: Path) -> Tensor:
        """The decoded image of one file (a subclass may fetch it elsewhere: `fastcam.ray`'s URIs)."""
        return read_image(path)

    def _read_size(self, path: Path) -> tuple[int, ...]:
        return tuple(self._read(path).shape[-2:])

    def _load(self, path: Path) -> Tensor:
        if self.preprocess.processor is not None:  # the model's own preprocessing makes its input
            return self.preprocess.processor(self.preprocess.adapt_channels(self._read(path)))
        return self.fitted.normalize(self.fitted.display(self._read(path)))

    def _blank(self) -> Tensor:
        return torch.zeros(self.preprocess.channels, *self.size)
