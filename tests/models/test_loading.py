"""fastcam.models.load_model: the one loader of explain, eval, bench and export."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastcam.cli import main
from fastcam.models import LoadedModel, load_model, state_hash, tiny_resnet


def test_loaded_model_carries_the_recipe_and_unpacks_as_the_old_pair() -> None:
    loaded = load_model("fastcam:tiny_resnet", num_classes=3, device="cpu")
    assert isinstance(loaded, LoadedModel) and loaded.source == "fastcam" and loaded.random_weights
    assert loaded.size is None and loaded.class_names is None and loaded.processor is None
    model, defaults = loaded
    assert model is loaded.model and defaults == {"source": "fastcam", "random_weights": True}
    assert next(model.parameters()).device == torch.device("cpu")


def test_old_homes_reexport_the_one_loader() -> None:
    from fastcam.pipeline import load_model as from_pipeline
    from fastcam.pipeline.data import load_model as from_data
    from fastcam.pipeline.settings import state_hash as from_settings
    from fastcam.pipeline.specs import build, spec_imports_code

    assert from_pipeline is load_model and from_data is load_model and from_settings is state_hash
    assert callable(build) and spec_imports_code("mine:factory")


def test_state_hash_sees_every_weight() -> None:
    torch.manual_seed(0)
    a, b = tiny_resnet(num_classes=3), tiny_resnet(num_classes=3)
    b.load_state_dict(a.state_dict())
    assert state_hash(a) == state_hash(b)
    with torch.no_grad():
        b.fc.bias[0] += 1e-6
    assert state_hash(a) != state_hash(b)


BROKEN_FACTORY = '''
import torch

def factory(num_classes=None, in_channels=None):
    raise RuntimeError("the checkpoint server is down")

not_a_model = 42
'''


@pytest.fixture
def broken_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "brokenfactory.py").write_text(BROKEN_FACTORY)
    monkeypatch.chdir(tmp_path)  # specs import modules of the current directory first
    return tmp_path


def test_a_factory_that_raises_is_a_clear_error(broken_factory: Path) -> None:
    with pytest.raises(ValueError, match="model factory 'brokenfactory:factory' raised RuntimeError: the checkpoint "
                       "server is down"):
        load_model("brokenfactory:factory")
    with pytest.raises(ValueError, match="names a int, not an nn.Module or a callable"):
        load_model("brokenfactory:not_a_model")


@pytest.mark.parametrize("command", [
    ["explain", "--layer", "layer4", "--data", "data", "--out", "run", "--quiet"],
    ["export", "--method", "gradcam", "--layer", "layer4", "--out", "m.onnx"],
])
def test_explain_and_export_exit_2_with_the_factory_error(broken_factory: Path, command: list[str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 26 item 8: a raw traceback before."""
    from PIL import Image

    (broken_factory / "data").mkdir()
    Image.new("RGB", (16, 16)).save(broken_factory / "data" / "a.png")
    assert main([*command, "--model", "brokenfactory:factory"]) == 2
    err = capsys.readouterr().err
    assert "raised RuntimeError: the checkpoint server is down" in err and "Traceback" not in err
