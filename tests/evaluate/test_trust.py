"""Nothing from a run directory is executed: `fastcam eval` refuses a run whose recorded model spec names code
(`module:callable`) unless the user names the model (--model) or passes --trust-run; `fastcam report` never
imports it."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastcam_testkit.runs import random_pngs, saved_tiny_resnet

import fastcam
from fastcam.cli import main
from fastcam.errors import UntrustedRunError
from fastcam.evaluate import evaluate
from fastcam.io.images import Preprocess

# imported only with --trust-run: leaves a mark, and builds the run's model
PLANTED = '''
from pathlib import Path
Path("IMPORTED").write_text("the run's code ran")
from fastcam.models import tiny_resnet
def factory(num_classes=3):
    import torch
    torch.manual_seed(0)
    return tiny_resnet(num_classes=num_classes)
'''


def _run(root: Path, spec: str) -> Path:
    data = root / "data"
    random_pngs(data, 2, 16)
    model, weights = saved_tiny_resnet(root)
    out = root / spec.replace(":", "_")
    fastcam.explain_dataset(model, str(data), method="gradcam", target_layer="layer4", out=out, batch_size=2,
                            device="cpu", preprocess=Preprocess(channels=3), progress=False,
                            model_info={"spec": spec, "weights": str(weights)})
    return out


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_eval_refuses_code_named_by_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path, "os:abort")  # would kill eval if it were imported and called
    assert main(["eval", str(run), "--metrics", "deletion", "--steps", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "records the model spec 'os:abort'" in err and "--trust-run" in err and "--model" in err
    assert "Traceback" not in err and not (run / "eval").exists()  # refused before anything was written
    with pytest.raises(UntrustedRunError):
        evaluate(run, "deletion", progress=False)
    # the report shows the run without importing anything
    assert main(["report", str(run), "--out", str(tmp_path / "page.html")]) == 0
    assert "os:abort" in (tmp_path / "page.html").read_text()
    # metrics that need no model run as they are
    assert main(["eval", str(run), "--metrics", "pointing_game", "--quiet"]) == 0
    # naming the model on the command line: the user's choice, not the run's
    assert main(["eval", str(run), "--model", "fastcam:tiny_resnet", "--metrics", "deletion", "--steps", "2", "--quiet"]) == 0


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_trust_run_imports_the_recorded_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "planted_fc.py").write_text(PLANTED)
    run = _run(tmp_path, "planted_fc:factory")
    assert main(["eval", str(run), "--metrics", "deletion", "--steps", "2", "--quiet"]) == 2
    assert "records the model spec 'planted_fc:factory'" in capsys.readouterr().err
    assert not (tmp_path / "IMPORTED").exists()
    assert main(["eval", str(run), "--metrics", "deletion", "--steps", "2", "--quiet", "--trust-run"]) == 0
    assert (tmp_path / "IMPORTED").exists()
