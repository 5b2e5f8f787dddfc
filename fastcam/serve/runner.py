"""Starting and stopping the service: a local Ray (or a cluster's), Serve's HTTP proxy, the application.

`start(...)` returns once every replica has loaded its model and the proxy answers; `stop()` deletes the
application (its replicas finish the requests in flight first) and shuts Serve and the local Ray this process
started down (on a cluster, only fastcam's application goes). `run_until_signal(...)` is `fastcam serve`: start, wait for SIGINT or SIGTERM, stop.

A local Ray started here never reports usage statistics unless the user opted in
(`RAY_USAGE_STATS_ENABLED=1` in the environment) and listens on 127.0.0.1.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

from fastcam.serve.engine import ExplainEngine, ServeOptions


@dataclass(frozen=True)
class Service:
    """A running service: where it listens and whether `start` started the local Ray it runs on (else it runs on
    a cluster, or on a Ray the caller had started)."""

    host: str
    port: int
    started_ray: bool
    #: `start` connected this process to a cluster (`ray_address`): `stop` disconnects it
    connected: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def start(options: ServeOptions, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
          ray_address: str | None = None, cpus_per_replica: float = 1.0,
          gpus_per_replica: float | None = None) -> Service:
    """Start the service and wait until it is ready.

    Args:
        options: what to explain with and the limits.
        host: the address the HTTP proxy listens on.
        port: its port.
        replicas: how many replicas (each loads the model once).
        ray_address: a running Ray cluster's address ("auto", "ray://..."); None starts a local Ray on 127.0.0.1.
        cpus_per_replica: CPUs Ray reserves for each replica.
        gpus_per_replica: GPUs Ray reserves for each (default: 1 on CUDA, else 0).

    Raises:
        ValueError: (on a local Ray) the model, its weights, the layer or the method cannot be loaded as the
            options say: checked in this process first, on the CPU, before Ray starts.
        RuntimeError: a replica failed to start: the replica's error, from Serve.
    """
    if ray_address is None:
        # the replicas would fail the same way, but only after Ray's start-up and Serve's retries (over a minute)
        ExplainEngine(dataclasses.replace(options, device="cpu"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray reads it; a user may opt in
    import ray
    from ray import serve

    from fastcam.serve.app import APP_NAME, build_app

    app = build_app(options, replicas=replicas, cpus_per_replica=cpus_per_replica, gpus_per_replica=gpus_per_replica)
    initialising = not ray.is_initialized()
    service = Service(host, port, started_ray=initialising and ray_address is None,
                      connected=initialising and ray_address is not None)
    if initialising:
        local: dict[str, Any] = {"address": "local", "_node_ip_address": "127.0.0.1", "include_dashboard": False}
        ray.init(**(local if ray_address is None else {"address": ray_address}), log_to_driver=False)
    try:
        # on a cluster whose Serve already runs, its proxy keeps the host and port it was started with
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    except BaseException:
        stop(service)
        raise
    return service


def stop(service: Service | None = None) -> None:
    """Delete the application (its replicas finish the requests in flight first), then undo what `start` did.

    Args:
        service: what `start` returned. On the local Ray it started, Serve and that Ray shut down; on a cluster
            it connected to, only fastcam's application goes (Serve keeps the cluster's other applications) and
            this process disconnects; on a Ray the caller had started, only the application goes. None: shut
            Serve and Ray down whatever started them.
    """
    import ray
    from ray import serve

    from fastcam.serve.app import APP_NAME

    if not ray.is_initialized():
        return
    try:
        serve.delete(APP_NAME)
    finally:
        if service is None or service.started_ray:
            serve.shutdown()
        if service is None or service.started_ray or service.connected:
            ray.shutdown()


def run_until_signal(options: ServeOptions, **kwargs: Any) -> Service:
    """`fastcam serve`: start (`start`'s arguments), print where it listens, stop on SIGINT or SIGTERM."""
    service = start(options, **kwargs)
    stopping = threading.Event()
    # installed after Ray's start-up, which sets handlers of its own
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"fastcam serve: {options.method} on {options.model} at {service.url} "
              "(POST /explain, GET /healthz, GET /); Ctrl-C or SIGTERM stops it", flush=True)
        while not stopping.wait(0.5):  # short waits: the handler runs between them
            pass
        print("fastcam serve: stopping (finishing the requests in flight)", flush=True)
        stop(service)
        print("fastcam serve: stopped", flush=True)
        return service
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
