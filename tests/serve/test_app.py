"""`fastcam serve` for real: Ray Serve started once for the module on a free 127.0.0.1 port, HTTP requests.

The oracle is the Python API on the same weights: `fastcam.GradCAM(model, "layer4").explain(image)` on the
image as `read_image` reads its file (the images are already the model's input size, so no preprocessing is
involved), its lowres map divided by its max.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from fastcam_testkit.images import bomb_png
from fastcam_testkit.runs import random_pngs, saved_tiny_resnet
from PIL import Image

import fastcam
from fastcam.io.images import read_image
from fastcam.io.overlay import overlay_rgb

SIZE = 64  # layer4 maps of 2 x 2
CLASSES = ("cat", "dog", "bird")
MAX_BODY_MB = 0.5
#: long enough that a request is surely in flight when the SIGTERM test stops the service
BATCH_WAIT_MS = 300
# Ray Serve 2.60's own config models use pydantic's deprecated Field(**extra)
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    url: str
    model: torch.nn.Module
    images: list[Path]
    process: subprocess.Popen
    log: Path

    def request(self, path: str, body: bytes | None = None, content_type: str | None = "image/png",
                method: str | None = None) -> Reply:
        headers = {"Content-Type": content_type} if content_type and body is not None else {}
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as reply:
                return Reply(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())
        except OSError as err:  # nothing listens (yet): no status
            return Reply(0, {}, str(err).encode())

    def explain(self, image: Path, query: str = "") -> Reply:
        return self.request("/explain" + query, image.read_bytes())

    def api(self, image: Path, target: int | None = None) -> fastcam.Explanation:
        """The Python API's explanation of one image file."""
        return fastcam.GradCAM(self.model, "layer4").explain(read_image(image)[None], target)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`fastcam serve` in a subprocess, as a user starts it; the last test stops it with SIGTERM."""
    root = tmp_path_factory.mktemp("serve")
    model, weights = saved_tiny_resnet(root, num_classes=len(CLASSES))
    images = [root / "images" / n for n in random_pngs(root / "images", 8, SIZE)]
    (root / "classes.txt").write_text("\n".join(CLASSES))
    port = free_port()
    command = [sys.executable, "-m", "fastcam", "serve", "--model", "fastcam:tiny_resnet", "--weights", str(weights),
               "--num-classes", str(len(CLASSES)), "--layer", "layer4", "--size", str(SIZE), "--classes",
               str(root / "classes.txt"), "--device", "cpu", "--port", str(port), "--max-batch-size", "16",
               "--batch-wait-ms", str(BATCH_WAIT_MS), "--max-body-mb", str(MAX_BODY_MB), "--max-pixels", "1000000"]
    # Ray on the loopback address, no usage reports
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    log = (root / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    running = Service(f"http://127.0.0.1:{port}", model, images, process, root / "serve.log")
    try:
        deadline = time.monotonic() + 120
        while running.request("/healthz").status != 200:
            assert process.poll() is None, f"fastcam serve exited: {running.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"fastcam serve did not start: {running.log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield running
    finally:
        if process.poll() is None:  # the SIGTERM test did not run or did not stop it
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def lowres_of(explanation: fastcam.Explanation) -> np.ndarray:
    lowres = explanation.lowres[0]
    return (lowres / lowres.max() if lowres.max() > 0 else lowres).numpy()


def test_health_and_description(service: Service) -> None:
    assert service.request("/healthz").status == 200
    info = service.request("/").json()
    assert info["model"] == "fastcam:tiny_resnet" and info["method"] == "gradcam" and info["layer"] == "layer4"
    assert info["input_size"] == [SIZE, SIZE] and info["classes"] == list(CLASSES)
    assert info["fastcam"] == fastcam.__version__


def test_json_answer_equals_the_python_api(service: Service) -> None:
    image = service.images[0]
    reply = service.explain(image)
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    assert reply.headers["x-fastcam-batch-size"] == "1"  # alone (the batched case: the concurrent test)
    answer = reply.json()
    expected = service.api(image)
    predicted = int(expected.logits[0].argmax())
    assert answer["predicted"] == answer["target"] == predicted
    np.testing.assert_allclose(np.array(answer["lowres"]), lowres_of(expected), atol=1e-5, rtol=0)
    assert answer["shape"] == list(expected.lowres.shape[1:])
    probabilities = torch.softmax(expected.logits[0].double(), 0)
    assert [p["class"] for p in answer["probabilities"]] == probabilities.argsort(descending=True).tolist()
    assert [p["name"] for p in answer["probabilities"]] == [CLASSES[p["class"]] for p in answer["probabilities"]]
    np.testing.assert_allclose([p["probability"] for p in answer["probabilities"]],
                               probabilities.sort(descending=True).values.numpy(), atol=1e-6)
    assert (answer["method"], answer["model"], answer["fastcam"]) == ("gradcam", "fastcam:tiny_resnet",
                                                                      fastcam.__version__)


def test_target_and_png_overlay(service: Service) -> None:
    image = service.images[1]
    answer = service.explain(image, "?target=2").json()
    assert answer["target"] == 2
    np.testing.assert_allclose(np.array(answer["lowres"]), lowres_of(service.api(image, 2)), atol=1e-5, rtol=0)
    reply = service.explain(image, "?format=png&target=2")
    assert reply.status == 200 and reply.headers["content-type"] == "image/png"
    png = np.asarray(Image.open(io.BytesIO(reply.body)))
    expected = overlay_rgb(read_image(image)[None], service.api(image, 2).maps)[0]  # the report's jet, alpha 0.5
    assert png.shape == (SIZE, SIZE, 3) and np.abs(png.astype(int) - expected).max() <= 1


def _float_tiff(value: float) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE), value, dtype=np.float32), mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


def _bad_requests(good: bytes) -> dict[str, tuple[str, bytes | None, str | None, str | None, int, str]]:
    return {  # kind: (path, body, content type, method, status, words of the error)
        "empty body": ("/explain", b"", "image/png", "POST", 400, "empty body"),
        "not an image": ("/explain", b"hello, not an image", "image/png", "POST", 400, "not a readable image"),
        "truncated": ("/explain", good[: len(good) // 2], "image/png", "POST", 400, "not a readable image"),
        "body too large": ("/explain", b"\0" * int(MAX_BODY_MB * 1024 * 1024 + 1), "image/png", "POST", 413,
                           "more than the limit"),
        "decompression bomb": ("/explain", bomb_png(20_000, 20_000), "image/png", "POST", 413, "image too large"),
        "content type": ("/explain", good, "text/plain", "POST", 415, "unsupported content type 'text/plain'"),
        "target not an int": ("/explain?target=cat", good, "image/png", "POST", 422, "integer class index"),
        "target out of range": ("/explain?target=3", good, "image/png", "POST", 422, "out of range"),
        "format": ("/explain?format=gif", good, "image/png", "POST", 422, "format must be one of"),
        "non-finite": ("/explain", _float_tiff(3e38), "image/tiff", "POST", 422, "non-finite"),
        "route": ("/nowhere", None, None, "GET", 404, "no route"),
        "method": ("/explain", None, None, "GET", 405, "takes POST"),
    }


BAD_KINDS = ["empty body", "not an image", "truncated", "body too large", "decompression bomb", "content type",
             "target not an int", "target out of range", "format", "non-finite", "route", "method"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_request_is_refused_and_the_service_keeps_serving(service: Service, kind: str) -> None:
    good = service.images[2].read_bytes()
    path, body, content_type, method, status, words = _bad_requests(good)[kind]
    reply = service.request(path, body, content_type, method)
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert words in error and "Traceback" not in error
    assert service.request("/explain", good).status == 200  # and the next good request is answered


def test_concurrent_requests_are_batched_and_equal_the_api(service: Service) -> None:
    expected = {image: lowres_of(service.api(image)) for image in service.images}
    jobs = [service.images[i % len(service.images)] for i in range(64)]
    with ThreadPoolExecutor(max_workers=64) as pool:
        replies = list(pool.map(service.explain, jobs))
    assert [r.status for r in replies] == [200] * 64
    for image, reply in zip(jobs, replies):
        np.testing.assert_allclose(np.array(reply.json()["lowres"]), expected[image], atol=1e-5, rtol=0)
    sizes = [int(r.headers["x-fastcam-batch-size"]) for r in replies]
    assert max(sizes) <= 16 and sum(sizes) / len(sizes) > 1, sizes




def test_a_serve_config_file_builds_the_application() -> None:
    """`import_path: fastcam.serve.app:app_builder` with the ServeOptions fields as `args` (YAML lists for tuples)."""
    from ray.serve import Application

    from fastcam.serve.app import app_builder

    args = {"model": "fastcam:tiny_resnet", "layer": "layer4", "size": [SIZE, SIZE], "classes": list(CLASSES),
            "num_classes": len(CLASSES), "max_batch_size": 8, "replicas": 2, "cpus_per_replica": 0.5}
    assert isinstance(app_builder(args), Application)
    with pytest.raises(TypeError, match="colour"):
        app_builder({**args, "colour": "red"})
    with pytest.raises(ValueError, match="max_batch_size must be a positive integer"):
        app_builder({**args, "max_batch_size": 0})
    with pytest.raises(ValueError, match="replicas must be a positive integer"):
        app_builder({**args, "replicas": 0})

def test_sigterm_finishes_the_requests_in_flight_then_stops(service: Service) -> None:
    """Last in the module (it stops the service): a request waiting for its batch when SIGTERM arrives is
    answered, then `fastcam serve` exits 0 with nothing left listening."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(service.explain, service.images[3])
        time.sleep(BATCH_WAIT_MS / 1000 / 3)  # the request waits in the replica for others to join its batch
        service.process.send_signal(signal.SIGTERM)
        reply = in_flight.result()
    assert reply.status == 200, reply.body
    np.testing.assert_allclose(np.array(reply.json()["lowres"]), lowres_of(service.api(service.images[3])),
                               atol=1e-5, rtol=0)
    assert service.process.wait(60) == 0, service.log.read_text()[-3000:]
    assert "fastcam serve: stopped" in service.log.read_text()
    assert service.request("/healthz").status == 0  # nothing listens any more
