"""`fastcam eval` on a tiny stored run: its numbers equal the metrics API on the stored maps, outputs and
report section are written, the wrong weights are refused; tables and plots name methods by display name."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastcam_testkit.runs import random_pngs, saved_tiny_resnet
from PIL import Image
from safetensors.torch import save_file

import fastcam
import fastcam.ops
from fastcam import metrics
from fastcam.cli import main
from fastcam.evaluate import RunMetrics, evaluate, evaluate_run, markdown_table
from fastcam.io.images import ImageFolder, Preprocess
from fastcam.io.run import RunDirectory, ShardWriter, open_run
from fastcam.models import tiny_resnet


def _tiny_run(tmp_path: Path, report: bool = False) -> tuple[Path, Path, Path, torch.nn.Module, fastcam.Run]:
    """(data, masks, run directory, model, run): 3 random images, a mask for im0 only (im1's is empty)."""
    data, masks = tmp_path / "data", tmp_path / "masks"
    random_pngs(data, 3, 64)
    masks.mkdir()
    m = np.zeros((64, 64), np.uint8)
    m[0:32, 0:32] = 255                                     # top-left quadrant, for im0 only
    Image.fromarray(m).save(masks / "im0.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "im1.png")   # empty: left out
    model, weights = saved_tiny_resnet(tmp_path)
    run_dir = tmp_path / "runs" / "gradcam"
    run = fastcam.explain_dataset(model, str(data), method="gradcam", target_layer="layer4", out=run_dir,
                                  batch_size=2, device="cpu", preprocess=Preprocess(channels=3), progress=False,
                                  model_info={"spec": "fastcam:tiny_resnet", "weights": str(weights)},
                                  report=report)
    return data, masks, run_dir, model, run


def test_fastcam_eval_on_a_tiny_run(tmp_path: Path) -> None:
    data, masks, run_dir, model, run = _tiny_run(tmp_path)
    (run_dir / "report.html").write_text("<html><body><p>report</p></body></html>")
    rc = main(["eval", str(run_dir), "--masks", str(masks), "--steps", "4", "--sigmas", "0.1,5", "--quiet",
               "--out", str(tmp_path / "combined")])
    assert rc == 0
    result = json.loads((run_dir / "eval" / "metrics.json").read_text())
    summary = result["summary"]
    assert summary["deletion"]["n"] == summary["robustness"]["n"] == 3 and summary["pointing_game"]["n"] == 1
    # the same numbers by hand, from the stored maps and the metrics API
    maps = fastcam.ops.upsample_normalize(run.lowres.float(), (64, 64))
    images = torch.stack([ImageFolder(data, Preprocess(channels=3))[i]["image"] for i in range(3)])
    auc = metrics.deletion(model, images, maps, run.targets[:], steps=4).auc
    assert summary["deletion"]["mean"] == pytest.approx(auc.mean().item(), abs=1e-5)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, :32, :32] = True
    assert summary["precision"]["mean"] == pytest.approx(metrics.activation_precision(maps[:1], mask).item(), abs=1e-5)
    assert result["robustness"]["sigmas"] == [0.1, 5.0] and len(result["curves"]["insertion"]) == 5
    # every value knows its image: localisation leaves out the images without a (non-empty) mask
    assert result["per_image_ids"]["deletion"] == run.ids and result["per_image_ids"]["pointing_game"] == ["im0.png"]
    low, high = result["curves_ci"]["deletion"]
    assert all(lo - 1e-9 <= c <= hi + 1e-9 for lo, c, hi in zip(low, result["curves"]["deletion"], high))
    assert RunMetrics.from_json(result).to_json()["per_image"] == result["per_image"]
    assert {p.name for p in (tmp_path / "combined").iterdir()} >= {"metrics.json", "metrics.md", "curves.png",
                                                                   "metrics.png", "robustness.png"}
    report = (run_dir / "report.html").read_text()  # a page without its arguments gets the section inserted
    assert report.count("<!-- fastcam-eval -->") == 1 and "eval/curves.png" in report
    # the wrong weights are refused, not silently scored
    save_file(tiny_resnet(num_classes=3).state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="state hash differs"):
        evaluate(run_dir, "deletion", weights=str(tmp_path / "other.safetensors"), progress=False,
                 out=tmp_path / "c2")
    assert main(["eval", str(run_dir), "--metrics", "nonsense", "--quiet"]) == 2
    # tables name the method as people write it; the JSON keeps its id
    assert "| gradcam | Grad-CAM | 3 |" in (run_dir / "eval" / "metrics.md").read_text()
    assert result["method"] == "gradcam"


def test_tables_and_plot_labels_use_display_names() -> None:
    runs = [RunMetrics(name="gradcampp", path="a", method="gradcampp", n=2, values={"deletion": [0.25, 0.75]}),
            RunMetrics(name="cfcam-eps2", path="b", method="cfcam", n=1, values={"deletion": [0.5]}),
            RunMetrics(name="old", path="c", method="no-longer-registered", n=1, values={"deletion": [0.5]})]
    assert [r.label for r in runs] == ["Grad-CAM++", "cfcam-eps2 (CF-CAM)", "old (no-longer-registered)"]
    table = markdown_table(runs, ["deletion"])
    assert "| gradcampp | Grad-CAM++ | 2 | 0.500 [0.250, 0.750] (n=2) |" in table  # mean [95% bootstrap CI] (n)
    assert "| cfcam-eps2 | CF-CAM | 1 |" in table and "| old | no-longer-registered | 1 |" in table
    assert runs[0].to_json()["method"] == "gradcampp"


def test_robustness_is_left_out_for_methods_without_gradients(tmp_path: Path) -> None:
    """The registry says which methods use gradients; the note names the method as people write it."""
    directory = RunDirectory(tmp_path / "run")
    directory.create([0], {"method": "scorecam", "batch_size": 1, "world_size": 1}, input_size=(4, 4), versions={})
    writer = ShardWriter(directory.root, 0, 1, n_items=1, batch_size=1, dtype="float32")
    writer.write_batch(0, torch.tensor([True]), torch.ones(1, 2, 2), torch.zeros(1, 3), torch.tensor([0]))
    writer.commit(0, [], 0.1, 1, "cpu")
    directory.finalize("cpu")
    result = evaluate_run(open_run(directory.root), ["robustness"], progress=False)
    assert result.values == {} and result.notes == [
        "robustness: Score-CAM uses no gradients, so gradient-noise robustness is undefined"]


def test_eval_renders_the_report_again_with_scores_beside_each_row(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A report that embeds its arguments is written again: the evaluation first (summary with bootstrap
    intervals, plots), then the runs, and each image's scores in its row (also as sort keys)."""
    _, masks, run_dir, _, run = _tiny_run(tmp_path, report=True)
    results, _ = evaluate(run_dir, "deletion,insertion,pointing_game", masks=masks, steps=4, progress=True,
                          forward_batch_size=5)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any("fastcam eval: 100%" in line and "3/3" in line and "img" in line for line in bar), bar[-3:]
    assert any("<" in line and "fastcam eval" in line for line in bar)  # elapsed<remaining: the ETA
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<!-- fastcam-eval -->" not in html
    assert html.index('<section id="evaluation">') < html.index('<section id="runs">') < html.index('id="grid"')
    assert html.count("data:image/png;base64,") == 2  # curves and bars, with their intervals
    summary = results[0].summary()["deletion"]
    assert (f"<b>{summary['mean']:.3f}</b><br><span class=\"ci\">[{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]</span>"
            "<br><span class=\"ci\">n=3</span>") in html
    deletion = results[0].per_image("deletion")
    for sid in run.ids:
        row = html.split(f'data-id="{sid}"')[1].split("</tr>")[0]
        assert f'data-k-m0-deletion="{deletion[sid]:.6g}"' in html.split(f'data-id="{sid}"')[1].split(">")[0]
        assert f'data-metric="deletion" title="Deletion AUC ↓">del {deletion[sid]:.3f}</span>' in row
        assert ('data-metric="pointing_game"' in row) == (sid == "im0.png")  # only im0 has a mask
    assert '<option value="m0-deletion" data-dir="asc">' in html and '<option value="m0-insertion" data-dir="desc">' in html


def test_bootstrap_intervals() -> None:
    from fastcam.evaluate import bootstrap_mean_ci

    values = np.random.default_rng(0).normal(0.5, 0.1, 400)
    low, high = bootstrap_mean_ci(values)
    assert low < values.mean() < high and high - low == pytest.approx(2 * 1.96 * 0.1 / 20, rel=0.25)
    assert bootstrap_mean_ci(values) == (low, high)  # seeded
    small = bootstrap_mean_ci(values[:25])
    assert small[1] - small[0] > high - low
    curves = np.stack([values, 2 * values], axis=1)  # (n, T): pointwise
    c_low, c_high = bootstrap_mean_ci(curves)
    assert c_low.shape == (2,) and c_low[0] == pytest.approx(low) and c_high[1] == pytest.approx(2 * high)
    assert bootstrap_mean_ci([0.3]) == (0.3, 0.3)
    assert all(np.isnan(bootstrap_mean_ci([])))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore:No artists with labels")  # the empty insertion panel (deletion only asked)
def test_eval_scores_runs_of_the_new_methods(tmp_path: Path) -> None:
    """A Layer-CAM run with its options is re-explained for robustness (a gradient method); Eigen-CAM
    and Ablation-CAM runs get the note (no gradients)."""
    data = tmp_path / "data"
    random_pngs(data, 2, 32, seed=1)
    model, weights = saved_tiny_resnet(tmp_path)
    info = {"spec": "fastcam:tiny_resnet", "weights": str(weights)}
    for method, kwargs in (("layercam", {"eigen_smooth": True}), ("eigencam", {}), ("ablationcam", {"batch_size": 64})):
        fastcam.explain_dataset(model, str(data), method=method, target_layer="layer3", out=tmp_path / "runs" / method,
                                batch_size=2, device="cpu", preprocess=Preprocess(channels=3), progress=False,
                                method_kwargs=kwargs, model_info=info)
    results, _ = evaluate(tmp_path / "runs", "robustness,deletion", steps=3, sigmas=(0.5,), progress=False)
    by_method = {r.method: r for r in results}
    assert set(by_method) == {"layercam", "eigencam", "ablationcam"}
    assert len(by_method["layercam"].values["robustness"]) == 2 and not by_method["layercam"].notes
    for method, name in (("eigencam", "Eigen-CAM"), ("ablationcam", "Ablation-CAM")):
        assert "robustness" not in by_method[method].values and len(by_method[method].values["deletion"]) == 2
        assert by_method[method].notes == [f"robustness: {name} uses no gradients, so gradient-noise robustness is undefined"]
