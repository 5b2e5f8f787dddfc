"""The Ray Serve deployment of `fastcam serve`: routes, dynamic batching (`@serve.batch`) and metrics.

`build_app(options)` gives the application `fastcam serve` runs; `app_builder(args)` gives it to Serve's own
config files (`import_path: fastcam.serve.app:app_builder`, `args:` the `ServeOptions` fields plus
`replicas`), and `FastcamExplainer` composes with a team's own deployments like any other.

HTTP (the contract of docs/serve.md):
- `POST /explain` one image file -> JSON (or the overlay PNG with `format=png`); header `X-Fastcam-Batch-Size`:
  how many requests the replica explained together with this one;
- `GET /healthz` -> 200 once the replica has loaded the model (Serve routes to a replica only after that);
- `GET /` -> the model, method, layer, input size and classes.
Every refusal is JSON `{"error": ...}` with its status; an unexpected failure is a JSON 500 without a
traceback (logged by the replica), and the replica keeps serving.

Metrics (Ray's, exported to Prometheus beside Serve's own): `fastcam_serve_requests` (tag route),
`fastcam_serve_images` (images explained), `fastcam_serve_errors` (tag kind), `fastcam_serve_batch_size`
(histogram).
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ray import serve
from ray.serve.metrics import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from fastcam.serve.engine import Answer, ExplainEngine, Job, RequestError, ServeOptions

#: the Serve application's name (and `serve.delete`'s)
APP_NAME = "fastcam"
#: response header: the size of the batch a request was explained in
BATCH_HEADER = "X-Fastcam-Batch-Size"
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]

logger = logging.getLogger("ray.serve")


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json", headers=headers)


@serve.deployment(name="FastcamExplainer")
class FastcamExplainer:
    """One replica: the model loaded once (`ExplainEngine`), requests batched by `@serve.batch`.

    Args:
        options: what to explain with and the limits (`fastcam.serve.ServeOptions`).
    """

    def __init__(self, options: ServeOptions) -> None:
        self.engine = ExplainEngine(options)
        self._batched.set_max_batch_size(options.max_batch_size)
        self._batched.set_batch_wait_timeout_s(options.batch_wait_ms / 1000.0)
        self.requests = Counter("fastcam_serve_requests", description="HTTP requests received", tag_keys=("route",))
        self.images = Counter("fastcam_serve_images", description="images explained")
        self.errors = Counter("fastcam_serve_errors", description="requests refused or failed, by kind",
                              tag_keys=("kind",))
        self.batch_size = Histogram("fastcam_serve_batch_size", description="requests explained per batch",
                                    boundaries=BATCH_BOUNDARIES)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        self.requests.inc(tags={"route": path if path in ("/", "/explain", "/healthz") else "other"})
        try:
            return await self._route(path, request)
        except RequestError as exc:
            self.errors.inc(tags={"kind": exc.kind})
            return _json(exc.status, {"error": exc.message})
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client; the replica keeps serving
            logger.exception("fastcam serve: request failed")
            self.errors.inc(tags={"kind": "internal"})
            return _json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    async def _route(self, path: str, request: Request) -> Response:
        allowed = {"/": "GET", "/healthz": "GET", "/explain": "POST"}.get(path)
        if allowed is None:
            raise RequestError(404, "not_found", f"no route {path!r}: POST /explain, GET /healthz, GET /")
        if request.method != allowed:
            raise RequestError(405, "method_not_allowed", f"{path} takes {allowed}, not {request.method}")
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/":
            return _json(200, self.engine.info())
        target, fmt = self.engine.check(request.headers.get("content-type"), request.headers.get("content-length"),
                                        dict(request.query_params))
        body = await request.body()
        job = await asyncio.to_thread(self.engine.decode, body, target, fmt)
        answer, batch = await self._batched(job)
        if isinstance(answer, RequestError):
            raise answer
        content, media = await asyncio.to_thread(self.engine.render, job, answer)
        return Response(content, media_type=media, headers={BATCH_HEADER: str(batch)})

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)  # set from the options in __init__
    async def _batched(self, jobs: list[Job]) -> list[tuple[Answer | RequestError, int]]:
        # the model runs in a worker thread, so the event loop keeps taking requests for the next batch
        answers = await asyncio.to_thread(self.engine.explain, jobs)
        self.batch_size.observe(len(jobs))
        explained = sum(isinstance(a, Answer) for a in answers)
        if explained:  # Ray's counters take positive increments only
            self.images.inc(explained)
        return [(answer, len(jobs)) for answer in answers]


def build_app(options: ServeOptions, *, replicas: int = 1, cpus_per_replica: float = 1.0,
              gpus_per_replica: float | None = None) -> serve.Application:
    """The Serve application of `options`: `replicas` copies of `FastcamExplainer`.

    Args:
        options: what to explain with and the limits.
        replicas: how many replicas (each loads the model once).
        cpus_per_replica: CPUs Ray reserves for each replica (and the torch threads it uses on CPU).
        gpus_per_replica: GPUs Ray reserves for each; default 1 when the options' device is CUDA (or unset on a
            machine with CUDA), else 0.
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be a positive integer, got {replicas!r}")
    if gpus_per_replica is None:
        device = options.device or ""
        if not device:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        gpus_per_replica = 1.0 if device.startswith("cuda") else 0.0
    # two batches' worth in flight per replica: one explained while the next one fills
    deployment = FastcamExplainer.options(
        num_replicas=replicas, max_ongoing_requests=2 * options.max_batch_size,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica})
    return deployment.bind(options)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The application from a Serve config file's `args`: the `ServeOptions` fields (lists for sizes and
    mean/std) plus `replicas`, `cpus_per_replica` and `gpus_per_replica`."""
    args = dict(args)
    placement = {k: args.pop(k) for k in ("replicas", "cpus_per_replica", "gpus_per_replica") if k in args}
    for key in ("size", "mean", "std", "classes"):
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    return build_app(ServeOptions(**args), **placement)
