"""The README's "Deploy" example runs exactly as written (the code block after its marker), in a temp dir."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import fastcam

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- readme-test: deploy -->"


def readme_block(marker: str) -> str:
    """The first ```python block after `marker` in README.md."""
    text = README.read_text(encoding="utf-8")
    assert text.count(marker) == 1, f"README.md must hold {marker!r} once"
    found = re.search(r"```python\n(.*?)```", text[text.index(marker):], flags=re.S)
    assert found, f"no ```python block after {marker!r}"
    return found.group(1)


def test_readme_deploy_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_deploy"}
    exec(compile(readme_block(MARKER), str(README), "exec"), namespace)  # the repository's own README
    assert (tmp_path / "softcam.onnx").is_file()
    assert capsys.readouterr().out.startswith("(4, 64, 64) ")
    # what the comments promise: the served maps are fastcam.SoftCAM(net)'s, to 1e-5
    want = fastcam.SoftCAM(namespace["net"]).explain(namespace["images"])  # type: ignore[arg-type]
    torch.testing.assert_close(torch.from_numpy(namespace["maps"]), want.maps, rtol=1e-5, atol=1e-5)  # type: ignore[arg-type]
    torch.testing.assert_close(torch.from_numpy(namespace["logits"]), want.logits, rtol=1e-5, atol=1e-5)  # type: ignore[arg-type]
