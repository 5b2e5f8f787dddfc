"""`fastcam report`: one page over two runs of the same images, methods shown by their display names."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from fastcam.cli import main


def test_report_over_two_runs(tmp_path: Path, folder: Path, weights: Path, parse_html: Callable) -> None:
    common = ["--model", "fastcam:tiny_resnet", "--num-classes", "3", "--weights", str(weights), "--layer", "layer4",
              "--data", str(folder), "--size", "16", "--quiet", "--overlays"]
    assert main(["explain", "--method", "gradcam", "--out", str(tmp_path / "g"), *common]) == 0
    assert main(["explain", "--method", "gradcampp", "--out", str(tmp_path / "p"), *common]) == 0
    html = tmp_path / "reports" / "both.html"
    assert main(["report", str(tmp_path / "g"), str(tmp_path / "p"), "--out", str(html)]) == 0
    report = parse_html(html)
    assert len(report.srcs) == 3 * 5  # input + two overlays per image
    assert all((html.parent / src).is_file() for src in report.srcs)
    text = html.read_text(encoding="utf-8")
    assert "<th>Grad-CAM</th>" in text and "<th>Grad-CAM++</th>" in text and "<td>Grad-CAM++</td><td>p</td>" in text
    # labels and class names from the command line show in the captions
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{sid},1\n" for sid in ("c0.jpg", "a/g1.png")))
    assert main(["report", str(tmp_path / "g"), "--out", str(html), "--labels", str(tmp_path / "labels.csv"),
                 "--class-names", "ant,bee,cat"]) == 0
    text = html.read_text(encoding="utf-8")
    assert text.count('<span class="k">label</span> bee') == 2 and '<span class="k">explained</span> ' in text
    assert len(re.findall(r"predicted</span> (ant|bee|cat) \(\d\.\d\d\)", text)) == 5  # one run, 5 images
