"""The example of docs/deploy.md runs exactly as written (the code block after its marker), in a temp dir."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastcam_testkit.docs import DOCS, example_block

import fastcam


def test_deploy_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_deploy"}
    exec(compile(example_block("deploy.md", "deploy"), str(DOCS / "deploy.md"), "exec"), namespace)  # our own docs
    assert (tmp_path / "softcam.onnx").is_file()
    assert capsys.readouterr().out.startswith("(4, 64, 64) ")
    # what the comments promise: the served maps are fastcam.SoftCAM(net)'s, to 1e-5
    want = fastcam.SoftCAM(namespace["net"]).explain(namespace["images"])  # type: ignore[arg-type]
    torch.testing.assert_close(torch.from_numpy(namespace["maps"]), want.maps, rtol=1e-5, atol=1e-5)  # type: ignore[arg-type]
    torch.testing.assert_close(torch.from_numpy(namespace["logits"]), want.logits, rtol=1e-5, atol=1e-5)  # type: ignore[arg-type]
