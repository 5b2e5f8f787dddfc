"""What a run explains: dataset items as a Hugging Face `datasets` split gives them (PIL images, numpy
arrays, with labels), the default size a user expects, and the hints naming the Python arguments."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import fastcam
from fastcam.io.images import Preprocess, picture_tensor
from fastcam.pipeline import explain_dataset


class PictureSplit(Dataset):
    """Stands in for a Hugging Face `datasets` split: items {"image": PIL.Image or array, "label": int}."""

    def __init__(self, pictures: list[Any], labels: list[int]) -> None:
        self.pictures, self.labels = pictures, labels

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.pictures[index], "label": self.labels[index]}


def _pictures(sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in sizes]


def test_picture_tensor_reads_pil_and_numpy_as_files_are_read(tmp_path: Path) -> None:
    rgb = _pictures([(5, 7)])[0]
    Image.fromarray(rgb).save(tmp_path / "x.png")
    from_file = fastcam.io.images.read_image(tmp_path / "x.png")
    torch.testing.assert_close(picture_tensor(Image.fromarray(rgb)), from_file, rtol=0, atol=0)
    torch.testing.assert_close(picture_tensor(rgb), from_file, rtol=0, atol=0)  # HWC uint8
    gray16 = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000)
    torch.testing.assert_close(picture_tensor(gray16), torch.from_numpy(gray16[None] / 65535.0).float())
    torch.testing.assert_close(picture_tensor(rgb[..., :1]), torch.from_numpy(rgb[None, ..., 0] / 255.0).float())
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        picture_tensor(np.zeros((3, 8, 8), np.uint8))  # channels first: ambiguous, refused by name


def test_dataset_of_pil_images_with_labels_is_explained(tmp_path: Path, classifier: Callable[..., Any]) -> None:
    """A map-style dataset yielding {"image": PIL.Image, "label": int}: all 8 items were skipped with a
    TypeError and the call returned normally with 0 explained."""
    pictures = _pictures([(20, 20)] * 4 + [(26, 18)] * 4)  # mixed sizes, as real splits have
    split = PictureSplit([Image.fromarray(p) for p in pictures], [0, 1, 2, 3, 0, 1, 2, 3])
    model = classifier()
    run = explain_dataset(model, split, method="gradcam", target_layer="layer4", out=tmp_path / "run",
                          targets="label", batch_size=4, dtype="float32", progress=False)
    assert run.ids == list(range(8)) and run.skipped == []
    assert run.targets.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # the documented default: the model's channels, the first picture's size, no normalisation
    assert run.meta["settings"]["data"]["preprocess"] == {"channels": 3, "size": [20, 20], "mean": None, "std": None}
    expected = Preprocess(channels=3, size=(20, 20))
    images = torch.stack([expected.normalize(expected.display(picture_tensor(p))) for p in pictures])
    with fastcam.GradCAM(model, "layer4") as cam:  # the oracle: a direct call on the same inputs
        exp = cam.explain(images, targets=[0, 1, 2, 3, 0, 1, 2, 3])
    torch.testing.assert_close(run.lowres[:], exp.lowres, rtol=1e-5, atol=1e-6)
    # numpy HWC arrays and an explicit preprocess= (the override)
    arrays = PictureSplit(pictures, [0] * 8)
    run = explain_dataset(model, arrays, method="gradcam", target_layer="layer4", out=tmp_path / "arrays",
                          preprocess=Preprocess(channels=3, size=(16, 16), mean=(0.5,), std=(0.25,)),
                          batch_size=4, dtype="float32", progress=False)
    assert len(run.ids) == 8 and run.meta["input_size"] == [16, 16]


class _Sized(torch.nn.Module):
    """A classifier that, like a Hugging Face ViT, says its input size (config.image_size) and needs it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.model = inner
        self.config = type("Config", (), {"image_size": 24, "num_channels": 3})()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (24, 24):
            raise ValueError(f"input size {tuple(x.shape[-2:])} does not match the model's (24, 24)")
        return self.model(x)


def test_the_models_input_size_is_the_default(tmp_path: Path, classifier: Callable[..., Any],
                                              write_images: Callable[..., list[str]]) -> None:
    """A model that says its input size gets it without preprocess= (a folder of 20 px images used to
    reach it at 20 px, and every image was skipped)."""
    from fastcam._validation import expected_input_size

    model = _Sized(classifier())
    assert expected_input_size(model) == (24, 24)
    names = write_images(tmp_path / "data", 4, size=20)
    run = explain_dataset(model, tmp_path / "data", method="gradcam", target_layer="model.layer4",
                          out=tmp_path / "run", batch_size=4, progress=False)
    assert run.ids == names and run.meta["input_size"] == [24, 24]
    split = PictureSplit([Image.fromarray(p) for p in _pictures([(20, 30)] * 3)], [0, 1, 2])
    run = explain_dataset(model, split, method="gradcam", target_layer="model.layer4", out=tmp_path / "split",
                          batch_size=4, progress=False)
    assert len(run.ids) == 3 and run.meta["input_size"] == [24, 24]


def test_hugging_face_config_says_the_input_size() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3)
    from fastcam._validation import expected_input_size

    assert expected_input_size(transformers.ViTForImageClassification(config)) == (32, 32)
    assert expected_input_size(fastcam.models.tiny_resnet()) is None  # says nothing: the first image's size


def test_mixed_tensor_shapes_hint_names_the_python_argument(tmp_path: Path, classifier: Callable[..., Any]) -> None:
    class Mixed(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.rand(3, 16 + 4 * index, 16)

    with pytest.raises(ValueError, match=r"preprocess=fastcam\.Preprocess\(size=\(H, W\)\)") as info:
        explain_dataset(classifier(), Mixed(), method="gradcam", target_layer="layer4", out=tmp_path / "run",
                        batch_size=2, progress=False)
    assert "--size" not in str(info.value)
