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

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
#: processor configs as the Hub's model folders hold them (small sizes), and each a random-init model
CASES: dict[str, tuple[dict[str, Any], Any, str, str | None]] = {
    "vit": ({"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
             "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
            lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
                image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"})),
            "vit.layers.-1.layernorm_before", "vit"),
    "convnext": ({"image_processor_type": "ConvNextImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
                  "crop_pct": 0.875, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
                  "do_normalize": True, **IMAGENET},
                 lambda: transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
                     hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)),
                 "convnext.encoder.stages.-1", None),
    # microsoft/resnet-50's config: the legacy feature-extractor form, an int size
    "resnet": ({"feature_extractor_type": "ConvNextFeatureExtractor", "image_processor_type": "ConvNextImageProcessor",
                "do_resize": True, "size": 40, "crop_pct": 0.875, "resample": 3, "do_normalize": True, **IMAGENET},
               lambda: transformers.ResNetForImageClassification(transformers.ResNetConfig(
                   embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)),
               "resnet.encoder.stages.-1", None),
}


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
    config, make, _, _ = CASES[name]
    torch.manual_seed(0)
    path = tmp_path / name
    make().save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(config))
    return path


def _expected(folder: Path, images: Path) -> torch.Tensor:
    """The oracle: transformers' own processor on each file, as a user would call it."""
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return torch.cat([processor(images=Image.open(images / name).convert("RGB"), return_tensors="pt")["pixel_values"]
                      for name in sorted(p.name for p in images.iterdir())])


@pytest.mark.parametrize("name", list(CASES))
def test_a_run_feeds_the_model_what_its_auto_image_processor_gives(name: str, images: Path, tmp_path: Path) -> None:
    folder = _folder(tmp_path, name)
    _, _, layer, reshape = CASES[name]
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
    assert recorded["config"]["resample"] == CASES[name][0]["resample"]


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
    (folder / "preprocessor_config.json").write_text(json.dumps({**CASES["vit"][0], "resample": 3}))
    with pytest.raises(ValueError, match="has changed since"):
        run_images(run)
