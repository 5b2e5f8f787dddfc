"""The HTML report: hostile run.json values and file names are escaped, every image path is URL-encoded
and shows its own image, overlay names never collide; display names, colour bar, captions (label,
explained and predicted class with its probability), class names, sort keys, and the embedded arguments
that let `fastcam eval` render the page again."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

from fastcam.io.overlay import find_output, legacy_output_name, output_name
from fastcam.io.report import (
    parse_class_names,
    read_config,
    read_labels_and_names,
    render_again,
    select_rows,
    summarise,
    url,
    write_report,
)
from fastcam.io.run import RunDirectory, open_run
from fastcam_testkit.report import HOSTILE, explain_with_overlays, write_hostile_folder, write_image
from fastcam_testkit.runs import write_synthetic_run

class Page(HTMLParser):
    """Every start tag with its attributes, and the text, of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def images(self, kind: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == "img" and a.get("data-kind") == kind]


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, run directory) of a run over HOSTILE names, each image its own random pixels."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "da ta#?%"
    write_hostile_folder(data)
    explain_with_overlays(data, root / "runs" / "r un")
    return data, root / "runs" / "r un"


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_output_names_are_one_to_one() -> None:
    assert output_name("x.jpg") == "x.jpg.png" and output_name("x.jpg.png") == "x.jpg.png.png"
    assert output_name("a/b.png") == "a/b.png.png" and output_name(7) == output_name(np.int64(7)) == "000007.png"
    names = [output_name(n) for n in HOSTILE]
    assert len(set(names)) == len(names) and all(n.endswith(".png") for n in names)
    # the old naming shared one file between "x.jpg" and "x.jpg.png": kept for reading old runs only
    assert legacy_output_name("x.jpg") == legacy_output_name("x.jpg.png") == "x.jpg.png"


def test_colliding_names_write_two_overlays(hostile_run: tuple[Path, Path]) -> None:
    _, run_dir = hostile_run
    overlays = run_dir / "overlays"
    assert (overlays / "x.jpg.png").is_file() and (overlays / "x.jpg.png.png").is_file()
    assert not np.array_equal(_pixels(run_dir / "inputs" / "x.jpg.png"), _pixels(run_dir / "inputs" / "x.jpg.png.png"))
    assert json.loads((overlays / "overlay.json").read_text()) == {"colormap": "jet", "alpha": 0.5}


def test_every_image_path_is_url_encoded_and_shows_its_own_image(hostile_run: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    data, run_dir = hostile_run
    out = tmp_path / "rep ort#1" / "report.html"  # the report's own folder needs no encoding: paths are relative
    write_report([run_dir], out, masks_dir=data)
    page = parse(out)
    inputs = page.images("input")
    ids = open_run(run_dir).ids
    assert sorted(a["data-sample"] for a in inputs) == sorted(ids) and len(ids) == len(HOSTILE) + 1
    for kind, expected_folder in (("input", None), ("overlay", run_dir / "overlays"), ("mask", data)):
        for attrs in page.images(kind):
            src, sample = attrs["src"] or "", attrs["data-sample"] or ""
            parts = urlsplit(src)
            # no scheme, query or fragment: the whole src is a path, and every reserved character is encoded
            assert (parts.scheme, parts.query, parts.fragment) == ("", "", "") and parts.path == src, src
            assert all(c.isascii() and c not in " \"'<>&#?" for c in src), src
            shown = out.parent / unquote(src)  # what a browser loads for the relative URL
            if kind == "input":  # the model input is the image itself (no resize, no normalisation)
                assert np.array_equal(_pixels(shown), _pixels(data / sample)), (sample, src)
            elif kind == "mask":
                assert shown.resolve() == (data / sample).resolve()
            else:
                assert shown.resolve() == (expected_folder / (sample + ".png")).resolve(), (sample, src)
    srcs = {a["data-sample"]: unquote(a["src"] or "") for a in inputs}
    assert srcs["pct%41.png"] != srcs["pctA.png"] and srcs["x.jpg"] != srcs["x.jpg.png"]


def test_url_encodes_reserved_and_non_ascii_characters(tmp_path: Path) -> None:
    target = tmp_path / "a b" / "c%d#e?f\"g'<h>&ü.png"
    assert url(target, tmp_path) == "a%20b/c%25d%23e%3Ff%22g%27%3Ch%3E%26%C3%BC.png"
    assert url(tmp_path / "x:y.png", tmp_path) == "x%3Ay.png"  # never read as a scheme


def test_hostile_run_json_values_are_escaped(hostile_run: tuple[Path, Path], tmp_path: Path) -> None:
    """Stored XSS: every value read from run.json, every file name and skipped-file reason is text."""
    import shutil

    _, source = hostile_run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    meta = json.loads(RunDirectory(run_dir).run_json.read_text())
    meta["method"] = "<script>alert('method')</script>"
    meta["timings"] = {"seconds": "<img src=x onerror=alert(1)>", "images_per_s": "</td><script>alert(2)</script>"}
    meta["device"] = ["<svg onload=alert(3)>"]
    meta["settings"]["model"]["spec"] = "\"><script>alert(4)</script>"
    meta["settings"]["target_layer"] = "<iframe src=javascript:alert(5)>"
    RunDirectory(run_dir).run_json.write_text(json.dumps(meta))
    (run_dir / "overlays" / "overlay.json").write_text(json.dumps({"colormap": "</style><script>alert(7)</script>"}))
    title = "</script><script>alert(8)</script><!--"
    out = write_report([run_dir], tmp_path / "report.html", title=title, class_names=["<i>a</i>", "b&c", "\"d"])
    page = parse(out)
    html = out.read_text(encoding="utf-8")
    scripts = [a for t, a in page.tags if t == "script"]
    assert len(scripts) == 2 and scripts[1].get("type") == "application/json"  # the sort script, the arguments
    assert not [t for t, _ in page.tags if t in ("iframe", "svg", "b", "i")]
    assert not [(t, k) for t, a in page.tags for k in a if k.startswith("on")]
    assert not [a for t, a in page.tags if t == "img" and a.get("src") == "x"]
    text = "".join(page.text)
    for value in ("<script>alert('method')</script>", "<img src=x onerror=alert(1)>", "<svg onload=alert(3)>",
                  "\"><script>alert(4)</script>", "<iframe src=javascript:alert(5)>", "<i>a</i>",
                  "<b onmouseover=alert(6)>.png"):
        assert value in text, value  # shown as text
    assert "alert(8)" not in html.split("<script")[0].split("<title>")[0]
    assert read_config(out)["title"] == title  # the arguments survive, as JSON that cannot close its script


def test_report_content_names_colour_bar_captions_and_sorting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    names = [f"im{i}.png" for i in range(5)]
    for i, name in enumerate(names):
        write_image(data, name, seed=i)
    with (data / "labels.csv").open("w", encoding="utf-8") as f:  # a BOM and a class-name column
        f.write("\ufeffpath,label,class_name\n" + "".join(f"{n},{i % 3},{'cat dog bird'.split()[i % 3]}\n"
                                                        for i, n in enumerate(names)))
    a = explain_with_overlays(data, tmp_path / "runs" / "gradcam", "gradcam")
    b = explain_with_overlays(data, tmp_path / "runs" / "gradcampp", "gradcampp")
    out = write_report([a, b], tmp_path / "report.html")  # labels: the data folder's labels.csv
    page = parse(out)
    text = "".join(page.text)
    html = out.read_text(encoding="utf-8")
    # methods by their display names (the run column keeps the folder's name)
    assert "<th>Grad-CAM</th><th>Grad-CAM++</th></tr>" in html and "<td>Grad-CAM++</td><td>gradcampp</td>" in html
    bar = [a for t, a in page.tags if a.get("id") == "colorbar"]
    assert bar and bar[0]["data-colormap"] == "jet"
    assert "linear-gradient(to right, #000080" in out.read_text()  # jet starts dark blue
    rows = [a for t, a in page.tags if t == "tr" and "data-id" in a]
    assert [r["data-id"] for r in rows] == names
    probs = torch.softmax(a.logits, 1)
    for i, name in enumerate(names):
        row = html.split(f'data-id="{name}"')[1].split("</tr>")[0]
        assert "label</span> " + "cat dog bird".split()[i % 3] in row
        expl = "cat dog bird".split()[int(a.targets[i])]
        pred = "cat dog bird".split()[int(a.predicted[i])]
        assert f"explained</span> {expl}" in row
        assert f"predicted</span> {pred} ({float(probs[i].max()):.2f})" in row
        assert rows[i]["data-k-label"] == str(i % 3) and float(rows[i]["data-k-p0"]) == pytest.approx(
            float(probs[i].max()), abs=1e-5)
    options = [a["value"] for t, a in page.tags if t == "option"]
    assert options == ["", "label", "p0", "p1"]
    accuracy = float(np.mean([int(a.predicted[i]) == i % 3 for i in range(5)]))
    assert f"{accuracy:.3f}" in text
    # --class-names wins over the labels file; the page renders again from the arguments it embeds
    write_report([a, b], out, class_names="zero,one,two", title="again")
    config = read_config(out)
    assert config["class_names"] == {0: "zero", 1: "one", 2: "two"} and config["title"] == "again"
    assert [Path(p).resolve() for p in config["runs"]] == [Path(a.path).resolve(), Path(b.path).resolve()]
    before = out.read_text(encoding="utf-8")
    assert render_again(out) and out.read_text(encoding="utf-8") == before
    assert "label</span> zero" in before


def test_class_names_and_labels_files(tmp_path: Path) -> None:
    assert parse_class_names("healthy, lesion") == {0: "healthy", 1: "lesion"}
    assert parse_class_names(["a", "b"]) == {0: "a", 1: "b"}
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    (tmp_path / "names.json").write_text('["x", "y"]')
    assert parse_class_names(tmp_path / "names.txt") == {0: "cat", 1: "dog"}
    assert parse_class_names(str(tmp_path / "names.json")) == {0: "x", 1: "y"}
    (tmp_path / "labels.csv").write_text("\ufeffpath,label\na.png,1\nb.png,0\nc.png,n/a\n")
    assert read_labels_and_names(tmp_path / "labels.csv") == ({"a.png": 1, "b.png": 0}, {})


def test_runs_written_with_the_old_overlay_names_still_show(hostile_run: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    _, source = hostile_run
    run_dir = tmp_path / "old"
    shutil.copytree(source, run_dir)
    for folder in (run_dir / "inputs", run_dir / "overlays"):
        for sample in ("pctA.png", "sp ace.png"):
            (folder / output_name(sample)).rename(folder / legacy_output_name(sample))
    assert find_output(run_dir / "overlays", "pctA.png") == run_dir / "overlays" / "pctA.png"
    page = parse(write_report([run_dir], tmp_path / "r.html"))
    shown = {a["data-sample"]: unquote(a["src"] or "") for a in page.images("overlay")}
    assert shown["pctA.png"] == "old/overlays/pctA.png" and shown["pct%41.png"] == "old/overlays/pct%41.png.png"


def test_a_large_run_shows_a_named_bounded_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over max_images samples the grid holds the listed ids, the most and least confident predictions and
    a seeded random sample, and says so; the summary still counts every sample."""
    from fastcam.io.run import durable

    monkeypatch.setattr(durable, "DURABLE", False)
    ids = write_synthetic_run(tmp_path / "run", 40, world=2, batch_size=8, classes=4, skip=frozenset({6}))
    run = open_run(tmp_path / "run")
    summary = summarise(run)
    probs = torch.softmax(run.logits[:], 1)
    assert np.allclose(summary.confidence, probs.max(1).values.numpy(), atol=1e-6)
    assert np.array_equal(summary.predicted, run.predicted[:].numpy())
    rows, text = select_rows(summary, run.ids, 10, [ids[3]])
    order = np.argsort(summary.confidence)
    assert rows[0] == run.ids.index(ids[3]) and len(rows) == 10
    assert rows[1:4] == order[::-1][:3].tolist() and rows[4:7] == order[:3].tolist()
    assert rows == select_rows(summary, run.ids, 10, [ids[3]])[0]  # seeded
    assert text == ("a selection of 39 images: the 1 listed, the 3 most and 3 least confident predictions, "
                    "3 chosen at random (seed 0)")
    assert select_rows(summary, run.ids, 39)[0] == list(range(39))
    with pytest.raises(ValueError, match="not explained samples"):
        select_rows(summary, run.ids, 10, [ids[6]])
    page = write_report([run], tmp_path / "r.html", max_images=10, show_ids=[ids[3]])
    html = page.read_text(encoding="utf-8")
    assert "Images (10 of 39)" in html and f"Shown: {text}." in html
    assert html.count('<tr data-order=') == 10 and f'data-id="{ids[3]}"' in html
    assert read_config(page)["show_ids"] == [ids[3]]
