"""The contenders follow the method registry, and each has exactly one builder."""
from __future__ import annotations

import pytest

from fastcam.benchmark import CONTENDER_KEYS, CONTENDERS, BenchConfig, build, make_setting
from fastcam.benchmark.builders import _BUILDERS
from fastcam.methods.registry import METHODS, method_names


def test_every_registered_method_is_a_fastcam_contender() -> None:
    ours = [c for c in CONTENDERS if c.group == "fastcam"]
    assert [c.key for c in ours] == list(method_names())
    assert [c.name for c in ours] == [f"fastcam {METHODS[m].class_path.rpartition(':')[2]}" for m in method_names()]
    assert all(c.method in METHODS for c in CONTENDERS if c.group == "peer")
    assert len(set(CONTENDER_KEYS)) == len(CONTENDER_KEYS)


def test_every_contender_has_one_builder() -> None:
    assert set(_BUILDERS) == set(CONTENDER_KEYS)
    setting = make_setting(BenchConfig(model="fastcam:tiny_resnet", size=32, batch=1, device="cpu",
                                       contenders=("inference",)))
    with pytest.raises(ValueError, match="unknown contender 'fastgradcam'"):
        build("fastgradcam", setting)


def test_torchcam_contenders_and_the_default_selection() -> None:
    from fastcam.benchmark.contenders import DEFAULT_CONTENDER_KEYS

    peers = {c.key: c for c in CONTENDERS if c.group == "peer"}
    for method in ("gradcam", "scorecam", "layercam", "xgradcam"):
        assert peers[f"torchcam-{method}"].name == f"torchcam {METHODS[method].torchcam}"
    slow = set(method_names(slow=True))
    assert slow == {"sscam", "iscam"}
    assert set(CONTENDER_KEYS) - set(DEFAULT_CONTENDER_KEYS) == slow
    assert BenchConfig().contenders == DEFAULT_CONTENDER_KEYS


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("key", ["torchcam-layercam", "torchcam-xgradcam", "ablationcam", "layercam"])
def test_new_contenders_run(key: str) -> None:
    setting = make_setting(BenchConfig(model="fastcam:tiny_resnet", size=32, batch=2, device="cpu", scorecam_batch_size=16,
                                       contenders=(key,)))
    run, close, note = build(key, setting)
    try:
        assert run() is not None
    finally:
        close()
    assert ("16 perturbed inputs per forward" in note) == (key == "ablationcam")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", ["gradcampp", "ablationcam"])
def test_pytorch_grad_cam_and_compat_contenders_run_the_same_call(method: str) -> None:
    """pytorch-grad-cam's own class (imported with the testkit's torchvision stand-in) and the compat
    module's, on the same setting: the same maps."""
    import numpy as np

    from fastcam.benchmark.contenders import PYTORCH_GRAD_CAM_METHODS
    from fastcam_testkit.pgc import pytorch_grad_cam_or_skip

    by_key = {c.key: c for c in CONTENDERS}
    for m in PYTORCH_GRAD_CAM_METHODS:
        assert (by_key[f"pgc-{m}"].group, by_key[f"compat-{m}"].group) == ("peer", "compat")
        assert by_key[f"compat-{m}"].name.endswith(by_key[f"pgc-{m}"].name.removeprefix("pytorch-grad-cam"))
    pytorch_grad_cam_or_skip()
    setting = make_setting(BenchConfig(model="fastcam:tiny_resnet", size=32, batch=2, device="cpu",
                                       contenders=(f"pgc-{method}", f"compat-{method}")))
    maps = []
    for key in (f"pgc-{method}", f"compat-{method}"):
        run, close, note = build(key, setting)
        try:
            maps.append(run())
        finally:
            close()
        assert ("perturbed inputs per forward" in note) == (method == "ablationcam")
    assert maps[0].shape == maps[1].shape == (2, 32, 32)
    tolerance = 1e-5 if method == "ablationcam" else 0.05  # Grad-CAM++: pytorch-grad-cam's 1e-6 (docs/migrate.md)
    np.testing.assert_allclose(maps[1], maps[0], atol=tolerance, rtol=0)
