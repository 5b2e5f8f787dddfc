"""Hugging Face models are preprocessed by their own `AutoImageProcessor` (issue 24 item 4): the inputs a
run gives the model equal, pixel for pixel, what `AutoImageProcessor.from_pretrained(FOLDER)(image)` gives,
on ViT, ConvNeXt (bicubic, crop_pct 0.875) and ResNet processor configs; `id2label` names the classes.

The re-implementation this replaces (bilinear always) missed the ConvNeXt config by up to 0.27.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fastcam.models import load_model
from fastcam.pipeline import explain_folder
from fastcam_testkit.hf import HF_CASES, save_hf_folder

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images of odd sizes and aspect ratios: RGB PNG, a JPEG and a grayscale PNG."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((50, 61, 3)) * 255).astype(np.uint8)).save(root / "a.png")
    Image.fromarray((rng.random((70, 45, 3)) * 255).astype(np.uint8)).save(root / "b.jpg", quality=90)
    Image.fromarray((rng.random((47, 47)) * 255).astype(np.uint8)).save(root / "c.png")
    return root


def _folder(tmp_path: Path, name: str) -> Path:
    return save_hf_folder(tmp_path / name, name)


def _expected(folder: Path, images: Path) -> torch.Tensor:
    """The oracle: transformers' own processor on each file, as a user would call it."""
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return torch.cat([processor(images=Image.open(images / name).convert("RGB"), return_tensors="pt")["pixel_values"]
                      for name in sorted(p.name for p in images.iterdir())])


@pytest.mark.parametrize("name", list(HF_CASES))
def test_a_run_feeds_the_model_what_its_auto_image_processor_gives(name: str, images: Path, tmp_path: Path) -> None:
    folder = _folder(tmp_path, name)
    layer, reshape = HF_CASES[name].layer, HF_CASES[name].reshape
    seen: list[torch.Tensor] = []

    def capture(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if isinstance(module, transformers.PreTrainedModel) and module.base_model is not module and args:
            seen.append(args[0].detach().clone())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(capture)
    try:
        run = explain_folder(f"hf:{folder}", images, tmp_path / "run", layer=layer, reshape=reshape,
                             method="gradcam", batch_size=3, progress=False)
    finally:
        handle.remove()
    expected = _expected(folder, images)
    assert seen and seen[0].shape == expected.shape
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)
    recorded = run.meta["settings"]["data"]["preprocess"]["processor"]
    assert recorded["config"]["resample"] == HF_CASES[name].processor["resample"]


def test_the_processor_describes_its_output_and_id2label_names_the_classes(tmp_path: Path) -> None:
    loaded = load_model(f"hf:{_folder(tmp_path, 'vit')}")
    assert loaded.size == (32, 32) and loaded.mean == (0.5, 0.5, 0.5) and loaded.class_names == ["cat", "dog", "fox"]
    assert loaded.processor is not None and loaded.defaults == {
        "source": "hf", "random_weights": False, "size": (32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    convnext = load_model(f"hf:{_folder(tmp_path, 'convnext')}")
    assert convnext.size == (32, 32) and convnext.class_names is None  # LABEL_0, ... name nothing


def test_id2label_names_the_classes_in_run_json_the_report_and_eval(images: Path, tmp_path: Path) -> None:
    """And eval reloads the images through the same processor (a plain resize before: other inputs)."""
    from fastcam.evaluate.inputs import run_images
    from fastcam.io.report import write_report

    folder = _folder(tmp_path, "vit")
    run = explain_folder(f"hf:{folder}", images, tmp_path / "run", layer="vit.layers.-1.layernorm_before",
                         reshape="vit", method="gradcam", progress=False, report=True)
    assert run.meta["settings"]["model"]["class_names"] == ["cat", "dog", "fox"]
    html = write_report([run], tmp_path / "report.html").read_text(encoding="utf-8")
    for c in run.predicted.tolist():  # each image's caption names its predicted class
        assert f'<span class="k">predicted</span> {["cat", "dog", "fox"][c]} (' in html
    reloaded = torch.stack([item["image"] for item in run_images(run)])
    torch.testing.assert_close(reloaded, _expected(folder, images), rtol=0, atol=0)
    (folder / "preprocessor_config.json").write_text(json.dumps({**HF_CASES["vit"].processor, "resample": 3}))
    with pytest.raises(ValueError, match="has changed since"):
        run_images(run)
