"""docs/migrate.md's examples, executed: the pytorch-grad-cam tutorial-style script runs as written (on
`fastcam.compat.pytorch_grad_cam`) and again with `pytorch_grad_cam` imported in its place (pytorch-grad-cam
1.5.7 itself, with the test-only torchvision stand-in of `fastcam_testkit.pgc`, and fastcam's sign given to
its principal components, as docs/migrate.md says), and every result agrees; the torchcam example
checks itself."""
from __future__ import annotations

import numpy as np
import pytest

from fastcam_testkit.docs import DOCS, example_block, marked_names
from fastcam_testkit.pgc import give_fastcam_sign, pytorch_grad_cam_or_skip

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(source: str) -> dict:
    namespace: dict = {"__name__": "migrate_example"}
    exec(compile(source, str(DOCS / "migrate.md"), "exec"), namespace)  # our own docs
    return namespace


def test_the_page_marks_its_examples():
    assert marked_names("migrate.md", "migrate-") == {"migrate-script", "migrate-torchcam"}


def test_the_script_gives_pytorch_grad_cams_results_with_only_its_import_changed(monkeypatch):
    pytest.importorskip("transformers")
    pytorch_grad_cam_or_skip()
    script = example_block("migrate.md", "migrate-script")
    original = script.replace("from fastcam.compat import pytorch_grad_cam", "import pytorch_grad_cam")
    original = original.replace("fastcam.compat.pytorch_grad_cam", "pytorch_grad_cam")
    assert "fastcam.compat" not in original and original.count("\n") == script.count("\n")
    ours = _run(script)["results"]
    give_fastcam_sign(monkeypatch)
    theirs = _run(original)["results"]
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        if key == "overlay":  # uint8 colours of maps equal to 1e-5: at most one grey level apart
            assert np.abs(ours[key].astype(int) - theirs[key].astype(int)).max() <= 1
        else:
            np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, rtol=0, err_msg=key)


def test_the_torchcam_example_runs():
    pytest.importorskip("torchcam")
    assert _run(example_block("migrate.md", "migrate-torchcam"))["maps"].shape == (4, 64, 64)
