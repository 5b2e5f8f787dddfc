"""Model specs mean what users think: torchvision:, timm:, hf: (local folders, never downloaded), fastcam:,
module:factory and bare names; each model's own preprocessing; random weights warned about and recorded."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fastcam
from fastcam.cli import main
from fastcam.io.images import Preprocess
from fastcam.pipeline import explain_folder, load_model, open_run
from fastcam.pipeline.explain import RandomWeightsWarning

pytestmark = pytest.mark.usefixtures("one_thread")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except Exception:  # noqa: BLE001 - absent, or built for another torch
        return False
    return True


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40, 52, 3)) * 255).astype(np.uint8)).save(root / f"img{i}.png")
    return root


def test_fastcam_and_module_specs() -> None:
    model, defaults = load_model("fastcam:tiny_resnet", num_classes=3)
    assert type(model).__name__ == "ResNet" and defaults == {"source": "fastcam", "random_weights": True}
    model, defaults = load_model("fastcam.models:tiny_vgg", num_classes=3)
    assert type(model).__name__ == "VGG" and not defaults["random_weights"]  # a factory may load its own weights
    with pytest.raises(ValueError, match="fastcam.models has"):
        load_model("fastcam:no_such_net")


@pytest.mark.skipif(_importable("torchvision"), reason="torchvision imports here: bare names resolve to it")
def test_bare_names_need_torchvision_and_suggest_fastcam() -> None:
    with pytest.raises(ValueError, match=r"bare name means a torchvision model.*fastcam's own plain-torch builder is fastcam:resnet50"):
        load_model("resnet50")
    with pytest.raises(ValueError, match="needs torchvision.models, which does not import here"):
        load_model("torchvision:resnet18")


@pytest.mark.skipif(not _importable("torchvision"), reason="torchvision does not import here (no build for this CPU torch)")
def test_torchvision_specs_and_their_weights_transforms() -> None:
    model, defaults = load_model("resnet18", num_classes=3)
    assert type(model).__module__.startswith("torchvision") and defaults["source"] == "torchvision"
    assert defaults["size"] == (224, 224) and defaults["resize"] == 256 and defaults["random_weights"]
    assert defaults["mean"] == pytest.approx((0.485, 0.456, 0.406))
    _, vit = load_model("torchvision:vit_b_16", num_classes=3)
    assert vit["size"] == (224, 224)


@pytest.mark.skipif(not _importable("timm"), reason="timm does not import here (it needs torchvision)")
def test_timm_specs_and_resolve_data_config() -> None:
    from timm.data import resolve_data_config

    model, defaults = load_model("timm:resnet18", num_classes=3)
    config = resolve_data_config({}, model=model)
    assert defaults["size"] == tuple(config["input_size"][1:]) and defaults["mean"] == tuple(config["mean"])
    assert defaults["resize"] == int(config["input_size"][1] / config["crop_pct"])
    with pytest.raises(ValueError, match="timm has no model"):
        load_model("timm:no_such_net")


def test_timm_and_torchvision_specs_fail_clearly_where_they_do_not_import() -> None:
    if _importable("timm"):
        pytest.skip("timm imports here")
    with pytest.raises(ValueError, match="needs timm, which does not import here"):
        load_model("timm:resnet18")


# ---------------------------------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3)
    model = transformers.ViTForImageClassification(config).eval()
    path = tmp_path_factory.mktemp("hf") / "vit"
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": 32, "width": 32}, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    return path, model


def test_hf_folder_loads_its_safetensors_and_processor_config(hf_vit: tuple[Path, torch.nn.Module]) -> None:
    path, original = hf_vit
    model, defaults = load_model(f"hf:{path}")
    assert defaults == {"source": "hf", "random_weights": False, "size": (32, 32), "mean": (0.5, 0.5, 0.5),
                        "std": (0.25, 0.25, 0.25)}
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x).logits, original(x).logits)


def test_hf_folder_without_weights_is_random_and_pickles_are_refused(hf_vit: tuple[Path, torch.nn.Module],
                                                                    tmp_path: Path) -> None:
    path, _ = hf_vit
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((path / "config.json").read_text())
    model, defaults = load_model(f"hf:{bare}", num_classes=5)
    assert defaults["random_weights"] and model.config.num_labels == 5
    (bare / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="only pickled weights .* does not load"):
        load_model(f"hf:{bare}")
    with pytest.raises(ValueError, match="fastcam never downloads"):
        load_model("hf:google/vit-base-patch16-224")


# ---------------------------------------------------------------------------------------------- preprocessing


def test_resize_then_centre_crop_is_torchvisions_recipe() -> None:
    image = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(0))
    got = Preprocess(channels=3, size=(16, 16), resize=20).display(image)
    resized = F.interpolate(image[None], size=(20, 27), mode="bilinear", align_corners=False, antialias=True)[0]
    top, left = round((20 - 16) / 2), round((27 - 16) / 2)
    torch.testing.assert_close(got, resized[:, top : top + 16, left : left + 16].clamp(0, 1))
    with pytest.raises(ValueError, match="crop size no larger"):
        Preprocess(size=(32, 32), resize=20)


def test_model_preprocessing_is_recorded_and_overridden(hf_vit: tuple[Path, torch.nn.Module], folder: Path,
                                                        tmp_path: Path) -> None:
    path, _ = hf_vit
    run = explain_folder(f"hf:{path}", folder, tmp_path / "own", layer="vit.layers.-1.layernorm_before", reshape="vit",
                         method="gradcam", progress=False)
    recorded = run.meta["settings"]["data"]["preprocess"]
    assert recorded["processor"]["class"].startswith("ViTImageProcessor")  # its own (tests/models/test_processors.py)
    assert {k: v for k, v in recorded.items() if k != "processor"} == {"channels": 3, "size": [32, 32], "mean": [0.5] * 3,
                                                                       "std": [0.25] * 3}
    assert run.meta["settings"]["method_kwargs"] == {"reshape_transform": "fastcam.reshape.vit(prefix_tokens=1, grid=None)"}
    assert "random_weights" not in run.meta["settings"]["model"] and run.lowres.shape == (3, 4, 4)
    again = explain_folder(f"hf:{path}", folder, tmp_path / "own", layer="vit.layers.-1.layernorm_before",
                           reshape="vit", method="gradcam", progress=False)  # resumes: the settings are stable
    torch.testing.assert_close(again.lowres[:], run.lowres[:])
    run = explain_folder(f"hf:{path}", folder, tmp_path / "mine", layer="vit.layers.-1.layernorm_before", reshape="vit:1:4x4",
                         method="gradcam", size=32, mean=[0.4], std=[0.3], progress=False)
    assert run.meta["settings"]["data"]["preprocess"] == {"channels": 3, "size": [32, 32], "mean": [0.4], "std": [0.3]}


# ---------------------------------------------------------------------------------------------- random weights


def test_random_weights_warn_and_are_recorded(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(RandomWeightsWarning, match="has random weights"):
        run = explain_folder("fastcam:tiny_resnet", folder, tmp_path / "r", num_classes=3, layer="layer4", progress=False)
    assert run.meta["settings"]["model"]["random_weights"] is True
    assert "random weights" in run.meta["settings"]["model"]["warning"]
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file(fastcam.models.tiny_resnet(num_classes=3).state_dict(), str(weights))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)  # with weights: no warning
        run = explain_folder("fastcam:tiny_resnet", folder, tmp_path / "w", weights=weights, num_classes=3,
                             layer="layer4", progress=False)
    assert "random_weights" not in run.meta["settings"]["model"]
    assert main(["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--layer", "layer4", "--data",
                 str(folder), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert "RandomWeightsWarning: model 'fastcam:tiny_resnet' has random weights" in capsys.readouterr().err
    assert open_run(tmp_path / "cli").meta["settings"]["model"]["random_weights"] is True


def test_cli_refuses_unknown_reshape_and_bare_names(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["explain", "--layer", "layer4", "--data", str(folder), "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*base, "--model", "fastcam:tiny_resnet", "--reshape", "vitt"]) == 2
    assert "unknown reshape 'vitt'" in capsys.readouterr().err
    if not _importable("torchvision"):
        assert main([*base, "--model", "tiny_resnet"]) == 2
        assert "fastcam:tiny_resnet" in capsys.readouterr().err
