"""Shared test setup.

Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors; TRITON_INTERPRET must be set
before triton is first imported, which is why it is set here, at collection time.
"""
import json
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable

# Some virtual machines advertise AMX but do not let processes use it: oneDNN's bf16 kernels then die
# with SIGILL (seen on our CI machines under torch.autocast("cpu", bfloat16)). Cap oneDNN below AMX;
# it must be set before torch initialises oneDNN.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fastcam.io.run import RunDirectory  # noqa: E402
from fastcam.models import tiny_densenet, tiny_resnet, tiny_vgg  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def one_thread():  # noqa: ANN201
    """Tiny CPU models run ~10x slower with 2 intra-op threads on a shared 2-core runner (thread
    contention); one thread keeps such tests fast. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_resnet(num_classes=5).eval()


@pytest.fixture
def vgg() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_vgg(num_classes=5).eval()


@pytest.fixture
def densenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_densenet(num_classes=5).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 64, 48, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- run directories (pipeline, io, cli, evaluate)
def _seeded_classifier(seed: int = 0, classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tiny_resnet(num_classes=classes).eval()


@pytest.fixture
def classifier() -> Callable[..., torch.nn.Module]:
    """classifier(seed=0, classes=4): a tiny ResNet with seeded weights, in eval mode."""
    return _seeded_classifier


def _write_images(folder: Path, n: int, size: int = 24, seed: int = 0) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"{'sub/' if i % 4 == 1 else ''}im{i:03d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / name)
        names.append(name)
    return sorted(names)


@pytest.fixture
def write_images() -> Callable[..., list[str]]:
    """write_images(folder, n, size=24, seed=0): n random RGB PNGs (every fourth in sub/); their sorted names."""
    return _write_images


def _read_progress(run_dir: Path, rank: int = 0, world: int = 1) -> dict[str, Any]:
    return json.loads(RunDirectory(run_dir).progress(rank, world).read_text())


@pytest.fixture
def read_progress() -> Callable[..., dict[str, Any]]:
    """read_progress(run_dir, rank=0, world=1): a shard's commit record, read as the documented file."""
    return _read_progress


def _commit_log(progress: dict[str, Any]) -> list[tuple[int, int]]:
    """(batch, session) of every commit: the log is stored as runs [session, first, last]."""
    return [(b, session) for session, first, last in progress["commits"] for b in range(first, last + 1)]


@pytest.fixture
def commit_log() -> Callable[[dict[str, Any]], list[tuple[int, int]]]:
    """commit_log(progress): (batch, session) of every commit of a commit record."""
    return _commit_log


class HtmlImages(HTMLParser):
    """The <img> sources, table rows and tables of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.rows = 0
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs)["src"] or "")
        self.rows += tag == "tr"
        self.tables += tag == "table"


def _parse_html(path: Path) -> HtmlImages:
    parser = HtmlImages()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.fixture
def parse_html() -> Callable[[Path], HtmlImages]:
    """parse_html(path): the page's image sources, table rows and tables."""
    return _parse_html
