"""`explain_dataset` on Ray Data: the run of `fastcam explain`, with reading and decoding in CPU tasks, the
model on a pool of actors (one per GPU), and the results written through a `Datasink` into a run directory in
fastcam's own store format.

The job is cut into the run's store batches (rows [b*B, (b+1)*B) of the dataset), and a store batch is one row
of the Ray dataset from start to end: a CPU task loads it (`fastcam.io.images`, exactly as the local engine's
DataLoader: `SafeItems` + `collate`; the inputs and their loading stages are `fastcam.ray.inputs`'s: a
`ray.data.Dataset`'s rows are numbered by a first pass and grouped into store batches), an actor explains it (`fastcam.pipeline.loop.explain_batch`), and the
sink hands it to the run's writer, the driver. Every image is therefore explained in the same batch as by the local
engine, and the results are bit-identical however many actors there are and however Ray splits the blocks.

The driver is the run's one writer, as rank 0 of the local engine: it holds the run's writer locks for the
whole call (a second driver on the same run directory is refused with `fastcam.errors.RunLockedError`) and the
shard's `ShardWriter`. The sink's write tasks hand each explained batch over a queue actor on the driver's
node; the driver writes its chunks when it arrives and commits batches in order (a batch that arrives early
waits, written, for the ones before it). A task or actor lost with its node is run again by Ray; a batch
delivered twice is stored once. A killed driver takes its job's tasks and actors with it; the same call
resumes from the last commit.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlparse

import numpy as np
import torch

from fastcam.errors import RunLockedError
from fastcam.io.store import Run, RunDirectory, ShardWriter, open_run, read_json, write_json_atomic
from fastcam.pipeline.data import TargetsResolver, check_targets_range, targets_resolver
from fastcam.pipeline.folder import prepare_folder
from fastcam.pipeline.loop import (
    check_options,
    create_or_resume,
    explain_batch,
    model_classes,
    run_settings,
    shard_skip_guard,
)
from fastcam.pipeline.skips import DEFAULT_MAX_SKIP_FRACTION, check_max_skip_fraction
from fastcam.ray.explainer import BatchExplainer
from fastcam.ray.inputs import (
    DECODE_CPUS,
    IndexedInput,
    RowsInput,
    indexed_input,
    is_ray_dataset,
    own_context,
    rows_input,
)

#: the queue message an explaining actor sends first: (ACTOR_STARTED, its handle); batches are (index, payload)
ACTOR_STARTED = -1


class _StoreBatchExplainer(BatchExplainer):
    """Actor: explains whole store batches (one per row) with the run's targets; with `load`, it loads them
    too (rows of planned batches instead of loaded ones)."""

    def __init__(self, model: str, *, resolve_targets: TargetsResolver, queue: Any = None,
                 load: Callable[[Sequence[int]], dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.resolve = resolve_targets
        self.load = load
        if queue is not None:  # the driver ends this actor when its run ends, however it ends (`_run`)
            import ray

            queue.put((ACTOR_STARTED, ray.get_runtime_context().current_actor))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # type: ignore[override]
        out = []
        jobs = ((pickle.loads(p) for p in batch["payload"]) if self.load is None
                else (self.load(indices) for indices in batch["indices"]))  # loaded here: nothing to unpickle
        for job in jobs:
            started = time.perf_counter()
            done = explain_batch(self.explainer, job["loaded"], job["indices"], self.resolve, self.device, self.amp,
                                 self._oom)
            results = None if done.explained is None else tuple(t.detach().cpu() for t in done.explained[1:])
            out.append(pickle.dumps({"ok": done.ok, "errors": done.errors, "indices": job["indices"],
                                     "results": results, "device": str(self.device), "decode_s": job["decode_s"],
                                     "explain_s": time.perf_counter() - started}, protocol=5))
        return {"batch": np.asarray(batch["batch"]), "payload": np.asarray(out, dtype=object)}


class _RunCommitter:
    """The run's writer, in the driver (which holds the shard's writer lock): writes each explained batch with
    the shard's `ShardWriter` and commits them in order; a batch delivered again (a retried task) is ignored."""

    def __init__(self, directory: RunDirectory, n_items: int, batch_size: int, dtype: str,
                 fingerprints: np.ndarray | None, dataset: Any, max_skip_fraction: float) -> None:
        self.writer = ShardWriter(directory.root, 0, 1, n_items, batch_size, dtype, fingerprints=fingerprints)
        self.todo = self.writer.plan()
        self.ids: list[Any] = read_json(directory.ids_json)
        #: the local engine's rules for skipped samples (`fastcam.pipeline.skips`), checked as batches arrive
        self.guard = shard_skip_guard(self.writer, self.todo, dataset, self.ids, range(n_items), max_skip_fraction)
        self.planned = set(self.todo)
        self.received: set[int] = set()
        self.waiting: dict[int, tuple[list[dict[str, Any]], int, str]] = {}
        self.messages = [f"fastcam: repairing {damage}" for damage in self.writer.damages]
        if self.writer.changed:
            self.messages.append(f"fastcam: the input files of {len(self.writer.changed)} batch(es) changed since they "
                                 "were explained: explaining them again")
        self.tick = time.perf_counter()
        #: where the job's time went, summed over batches (`explain_dataset` records it in run.json)
        self.seconds = {"decode_tasks": 0.0, "actor_explain": 0.0, "committer_write": 0.0}
        self.first_batch_s: float | None = None

    def store(self, batch: int, payload: bytes) -> None:
        """Write one explained batch's chunks, then commit every batch that is ready, in order."""
        if batch in self.received or batch not in self.planned:
            return
        started = time.perf_counter()
        if self.first_batch_s is None:
            self.first_batch_s = started - self.tick
        job = pickle.loads(payload)
        lowres, logits, targets = job["results"] if job["results"] is not None else (None, None, None)
        self.writer.write_batch(batch, job["ok"], lowres, logits, targets)
        skipped = [{"index": int(i), "id": self.ids[i], "error": e}
                   for i, e, good in zip(job["indices"], job["errors"], job["ok"].tolist()) if not good]
        self.messages += [f"fastcam: skipping {s['id']!r}: {s['error']}" for s in skipped]
        self.received.add(batch)
        self.waiting[batch] = (skipped, int(job["ok"].sum()), job["device"])
        redo = self.writer.progress["redo"]
        ready = True
        while ready:
            ready = False
            for b in sorted(self.waiting):
                if b in redo or b == self.writer.committed_batches:
                    skipped, images, device = self.waiting.pop(b)
                    now = time.perf_counter()
                    self.writer.commit(b, skipped, now - self.tick, images, device)
                    self.tick, ready = now, True
                    break
        self.seconds["decode_tasks"] += job["decode_s"]
        self.seconds["actor_explain"] += job["explain_s"]
        self.seconds["committer_write"] += time.perf_counter() - started
        self.guard.add((i, self.ids[i], None if good else e)
                       for i, e, good in zip(job["indices"], job["errors"], job["ok"].tolist()))
        self.guard.check()  # the batch is stored (and commits in order): a stopped run resumes after it

    def progress(self) -> tuple[int, list[str]]:
        """(rows stored this session, messages since the last call)."""
        rows = sum(len(self.writer.batch_rows(b)) for b in self.received if b not in self.waiting)
        messages, self.messages = self.messages, []
        return rows, messages

    def close(self) -> tuple[bool, dict[str, Any]]:
        """(whether every batch is committed, where this session's time went)."""
        split = {f"{k}_s": round(v, 3) for k, v in self.seconds.items()}
        split["first_batch_s"] = round(self.first_batch_s, 3) if self.first_batch_s is not None else None
        return self.writer.done, split


def run_datasink(queue: Any) -> Any:
    """The `ray.data.Datasink` that hands explained store batches to the driver over `queue` (a
    `ray.util.queue.Queue` on the driver's node; bounded, so a slow disk holds the job back). Its class is made
    here: Ray's `Datasink` base is importable only once Ray is."""
    from ray.data import Datasink

    class RunDatasink(Datasink):
        """Hands explained store batches to the run's writer (write tasks on the driver's node)."""

        def __init__(self, queue: Any) -> None:
            self.queue = queue

        @property
        def supports_distributed_writes(self) -> bool:
            return False  # the writer is the driver: the blocks travel to its node once

        def write(self, blocks: Any, ctx: Any) -> int:
            from ray.data.block import BlockAccessor

            written = 0
            for block in blocks:
                columns = BlockAccessor.for_block(block).to_numpy(["batch", "payload"])
                for batch, payload in zip(columns["batch"], columns["payload"]):
                    self.queue.put((int(batch), payload))
                    written += 1
            return written

    return RunDatasink(queue)


# ---------------------------------------------------------------------------------------------- cluster
def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse, within `timeout` seconds, an address nothing listens at (ray.init would retry for minutes)."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if not parsed.hostname or not parsed.port:
        raise ValueError(f"--ray-address {address!r} is not HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as exc:
        raise ValueError(f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}); check --ray-address "
                         "or RAY_ADDRESS, and that the cluster is up") from None


@contextlib.contextmanager
def connect(address: str | None) -> Iterator[str]:
    """Ray, for the duration: the running one (ray.init already called), the cluster at `address` (default
    RAY_ADDRESS), else a local Ray started for the run and stopped after it. Yields where it is. Usage
    statistics stay off unless the user turned them on (RAY_USAGE_STATS_ENABLED)."""
    import ray

    if address:
        _check_reachable(address)
    if ray.is_initialized():
        yield "the running Ray instance"
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
    saved = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        try:
            ray.init(address=address, include_dashboard=False if not address else None, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise ValueError(f"cannot connect to the Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
        try:
            yield address or "a local Ray started for this run"
        finally:
            ray.shutdown()
    finally:
        if saved is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)


def plan_resources(actors: int | None, gpus_per_actor: float | None, cpus_per_actor: float | None,
                   where: str, stage_cpus: float = DECODE_CPUS) -> tuple[int, float, float, int | None]:
    """(actors, GPUs per actor, CPUs per actor, torch threads per actor or None for the CPUs Ray assigns) the
    cluster can give beside the `stage_cpus` its loading stage asks for, refusing what it cannot (a request
    it cannot place would wait forever)."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if gpus_per_actor < 0 or (actors is not None and actors < 1):
        raise ValueError(f"--ray-actors must be >= 1 and --ray-gpus-per-actor >= 0, got {actors} and {gpus_per_actor}")
    if gpus_per_actor > 0 and gpus < gpus_per_actor:
        raise ValueError(f"--ray-gpus-per-actor {gpus_per_actor:g}: {where} has {gpus:g} GPUs ({cpus:g} CPUs); "
                         "use --ray-gpus-per-actor 0 to explain on CPUs")
    if actors is None:
        actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor > 0 else 1
    if gpus_per_actor * actors > gpus:
        raise ValueError(f"--ray-actors {actors} x --ray-gpus-per-actor {gpus_per_actor:g} needs "
                         f"{actors * gpus_per_actor:g} GPUs; {where} has {gpus:g}")
    threads = None
    if cpus_per_actor is None and gpus_per_actor > 0:
        cpus_per_actor = 1.0
    elif cpus_per_actor is None:
        # CPU actors compute with the CPUs decoding leaves, but ask Ray for at most one each: decode tasks
        # (light, short) then always find room beside them instead of queueing behind the actors
        # (a shuffle's tasks, asking for more, run before the explaining starts: threads leave them out)
        share = (cpus - stage_cpus) / actors
        cpus_per_actor = max(0.1, min(1.0, share))
        threads = max(1, round((cpus - DECODE_CPUS) / actors))
    if actors * cpus_per_actor + stage_cpus > cpus + 1e-9:
        raise ValueError(f"{actors} actor(s) x {cpus_per_actor:g} CPUs and {stage_cpus:g} for loading need "
                         f"{actors * cpus_per_actor + stage_cpus:g} CPUs; {where} has {cpus:g}")
    return actors, float(gpus_per_actor), float(cpus_per_actor), threads


#: the errors of a user's input or settings, given back as themselves out of Ray's task errors
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, RunLockedError)
#: those a Ray Data function raises, known to the driver by their traceback's last line only
_TRACEBACK_ERRORS = {cls.__name__: cls for cls in (ValueError, TypeError, FileNotFoundError)}
_TRACEBACK_ERROR_LINE = re.compile(rf"^({'|'.join(_TRACEBACK_ERRORS)}): (.+)$", re.MULTILINE)


def _user_error(exc: BaseException) -> BaseException:
    """The user's error inside a Ray task error (a bad file, a locked shard, a dataset that changed), else the
    error itself. Ray keeps an actor's or a task's error as the cause; a Ray Data function's error reaches the
    driver only as the text of its traceback, so it is read back from there."""
    from ray.exceptions import UserCodeException

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, _USER_ERRORS):
            return cause
        seen.add(id(cause))
        cause = getattr(cause, "cause", None) or cause.__cause__
    found = _TRACEBACK_ERROR_LINE.search(str(exc)) if isinstance(exc, UserCodeException) else None
    return _TRACEBACK_ERRORS[found.group(1)](found.group(2)) if found else exc


# ---------------------------------------------------------------------------------------------- main API
def explain_dataset(
    model: str,
    data: str | os.PathLike[str] | Sequence[str] | Any,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    method_kwargs: Mapping[str, Any] | None = None,
    reshape: str | None = None,
    targets: None | str | int | os.PathLike[str] | Mapping[str, int] = "predicted",
    size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 32,
    amp: str | None = None,
    dtype: str = "float16",
    resume: bool = True,
    progress: bool = True,
    fingerprint: str = "stat",
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float | None = None,
    blocks: int | None = None,
) -> Run:
    """Explain a folder, a folder URI, a list of image paths/URIs or a `ray.data.Dataset` on Ray into the run
    directory `out`.

    The arguments up to `max_skip_fraction` are `fastcam.pipeline.explain_folder`'s, and the run directory is the
    one the local engine writes (the same settings, so either engine resumes the other's run); returns
    `open_run(out)`. run.json also records the engine, the Ray version and the cluster's resources.

    Args:
        model: model spec (`fastcam.pipeline.load_model`).
        data: a folder, a folder URI (s3://bucket/prefix/), a list of image paths or URIs, or a `ray.data.Dataset`
            of rows with an `id` column (a unique string or integer per row: the run's ids, in the dataset's
            order) and either `bytes` (the encoded file, with `path` naming it when the suffix matters: DICOM) or
            `image` (a decoded (H, W[, C]) array, as `ray.data.read_images` gives), and optionally `target`. A
            dataset is read twice: a first pass indexes its ids and the digests of its images (the run's input
            fingerprints), then the explain pass groups its rows into store batches (a hash shuffle). It must
            give the same rows each time it runs; a row that changed between the passes stops the run.
        out: the run directory, on a file system of the driver's node.
        weights: the model's weights file.
        num_classes: classes of the model.
        in_channels: input channels (fastcam.models builders).
        layer: the target layer.
        method: a registered method id.
        method_kwargs: keyword arguments of the method's constructor.
        reshape: a `fastcam.reshape.from_spec` layout.
        targets: as `explain_folder`'s; also "column": a dataset's `target` column.
        size: resize (one side or (H, W)).
        mean: normalisation mean per channel.
        std: normalisation std per channel.
        batch_size: images per store batch (per commit, and per actor call).
        amp: None, "bf16" or "fp16".
        dtype: storage dtype of the maps.
        resume: continue a run directory with the same settings.
        progress: a tqdm bar (images/s, ETA).
        fingerprint: "stat" or "content" (see `fastcam.pipeline.explain_folder`); a dataset's rows are always
            fingerprinted by content.
        max_skip_fraction: the share of samples that may be skipped before the run stops with
            `fastcam.errors.TooManySkippedError`, not marked complete (`fastcam.pipeline.skips`, as the local
            engine).
        address: the Ray cluster (default: the running Ray, else RAY_ADDRESS, else a local Ray for the run).
        actors: size of the actor pool (default: one per GPU of the cluster, else 1).
        gpus_per_actor: default 1 when the cluster has GPUs, else 0.
        cpus_per_actor: default 1 with GPUs; on CPUs, the cluster's CPUs left by decoding shared by the actors
            (Ray is asked for at most 1 per actor; torch's threads are the share).
        blocks: how many blocks the job's batches are split into (default: one store batch a block); for a
            `ray.data.Dataset`, the shuffle's partitions (default: up to 4 per actor).
    """
    import ray

    info = check_options(method, amp, dtype, fingerprint)
    max_skip_fraction = check_max_skip_fraction(max_skip_fraction)
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    rows = is_ray_dataset(data)
    if rows:
        fingerprint = "content"  # a dataset's rows have no file times: their images are fingerprinted
    directory = RunDirectory(Path(out))
    with directory.writer_lock(0, 1), contextlib.ExitStack() as cluster:  # as the local engine's rank 0
        prepared = prepare_folder(model, data if isinstance(data, (str, os.PathLike)) else "", weights=weights,
                                  num_classes=num_classes, in_channels=in_channels, method=info,
                                  method_kwargs=method_kwargs, size=size, mean=mean, std=std, reshape=reshape)
        assert prepared.preprocess is not None
        # a dataset is read on its Ray (the running one, else the one `address` names) to index its rows; files
        # are listed before Ray is started, so that a wrong folder fails at once
        where = cluster.enter_context(connect(address)) if rows else None
        source: IndexedInput | RowsInput = (rows_input(data, prepared.preprocess, progress) if rows
                                            else indexed_input(data, prepared.preprocess))
        ids, data_info = source.ids, source.info
        if isinstance(targets, str) and targets == "column":
            targets = source.labels()
        resolve_targets, targets_info = targets_resolver(targets, ids)
        built = prepared.model.eval()
        if not (targets is None or isinstance(targets, str)):
            classes = model_classes(built, source.items, torch.device("cpu"))
            if classes is not None:
                check_targets_range(targets, ids, classes)
        explainer = info.build(built, layer, **prepared.method_kwargs)
        try:
            ids_json = [i if isinstance(i, int) else str(i) for i in ids]
            settings = run_settings(built, explainer, info, prepared.method_kwargs, prepared.model_info, data_info,
                                    ids_json, targets_info, batch_size, 1, dtype, amp, fingerprint)
        finally:
            explainer.close()
        if where is None:
            where = cluster.enter_context(connect(address))
        actors, gpus_per_actor, cpus_per_actor, threads = plan_resources(actors, gpus_per_actor, cpus_per_actor,
                                                                         where, source.stage_cpus)
        create_or_resume(directory, settings, ids_json, resume, data_info)
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        started = time.perf_counter()
        committer = _RunCommitter(directory, len(ids), batch_size, dtype, source.fingerprints(fingerprint),
                                  source.dataset if isinstance(source, IndexedInput) else None,
                                  max_skip_fraction)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        queue = Queue(maxsize=2 * actors + 2, actor_options={"num_cpus": 0, "scheduling_strategy": here})
        try:
            options = dict(num_classes=num_classes, in_channels=in_channels, layer=layer, method=method,
                           method_kwargs=method_kwargs, reshape=reshape, preprocess=prepared.preprocess, amp=amp,
                           dtype=dtype, threads=threads)
            _run(ray, committer, queue, source, len(ids), batch_size, resolve_targets, built, model, options,
                 actors, gpus_per_actor, cpus_per_actor, blocks, progress, f"{method}[ray]")
            complete, time_split = committer.close()
            if not complete:
                raise RuntimeError("the Ray job ended with batches left uncommitted; re-run to finish them")
        except ray.exceptions.RayError as exc:
            raise _user_error(exc) from exc
        finally:
            queue.shutdown(force=True)
        devices = "cuda" if gpus_per_actor > 0 else "cpu"
        directory.finalize(devices)
        meta = directory.read_meta()
        meta["engine"] = {"name": "ray", "ray": ray.__version__, "where": where, "actors": actors,
                          "gpus_per_actor": gpus_per_actor, "cpus_per_actor": cpus_per_actor,
                          "threads_per_actor": threads,
                          "cluster_resources": {k: v for k, v in sorted(ray.cluster_resources().items())
                                                if not k.startswith("node:")},
                          "nodes": sum(1 for node in ray.nodes() if node.get("Alive")),
                          "seconds": round(time.perf_counter() - started, 3),
                          # this session's: batches summed (decode tasks and actors run in parallel), and the
                          # wait from the writer's start to the first explained batch (actors starting)
                          "time_split": time_split}
        write_json_atomic(directory.run_json, meta)
    return open_run(directory.root)


def _run(ray: Any, committer: _RunCommitter, queue: Any, source: IndexedInput | RowsInput, n_items: int,
         batch_size: int, resolve_targets: TargetsResolver, built: torch.nn.Module, spec: str, options: dict[str, Any],
         actors: int, gpus_per_actor: float, cpus_per_actor: float, blocks: int | None, show_progress: bool,
         desc: str) -> None:
    """Run the Ray Data job over the committer's planned batches, storing what the sink hands over."""
    from ray.util.queue import Empty
    from tqdm.auto import tqdm

    todo = committer.todo
    for message in committer.progress()[1]:  # repairs found by the plan
        tqdm.write(message)
    if not todo:
        return
    state = {k: v.detach().cpu() for k, v in built.state_dict().items()}  # every actor explains the driver's model
    # CPU actors load their batches themselves: decode tasks beside them would take the cores their torch threads
    # wait on (a 2-core machine explained 25-35% slower so); GPU actors leave loading to CPU tasks, which overlap it
    ds, load = source.load_stage(ray, todo, batch_size, blocks, actors, in_actors=gpus_per_actor == 0)
    ds = ds.map_batches(_StoreBatchExplainer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
                        num_gpus=gpus_per_actor, num_cpus=cpus_per_actor,
                        fn_constructor_kwargs={"model": spec, "state": state, "resolve_targets": resolve_targets,
                                               "queue": queue, "load": load, **options})
    ds = own_context(ds, ordered=False)  # Ray's bars off (fastcam's counts stored images); the caller's untouched
    failure: list[BaseException] = []

    def write() -> None:
        try:
            ds.write_datasink(run_datasink(queue), ray_remote_args={"num_cpus": 0})
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            failure.append(exc)

    done_before = n_items - sum(len(committer.writer.batch_rows(b)) for b in todo)
    bar = tqdm(total=n_items, initial=done_before, unit="img", desc=desc, disable=not show_progress,
               dynamic_ncols=True, file=sys.stderr)
    started_actors: list[Any] = []  # handles of the explaining actors, as they announce themselves
    job = threading.Thread(target=write, name="fastcam-ray-job", daemon=True)
    job.start()
    try:
        seen = 0
        while True:
            try:
                batch, payload = queue.get(timeout=0.25)
            except Empty:
                if job.is_alive() or not queue.empty():
                    continue
                break  # the job has ended and every batch it handed over is stored
            if batch == ACTOR_STARTED:
                started_actors.append(payload)
                continue
            committer.store(batch, payload)
            stored, messages = committer.progress()
            for message in messages:
                bar.write(message)
            bar.update(stored - seen)
            seen = stored
    except BaseException:
        # The driver stops the run (too many skipped samples, an interrupt): end the job before returning
        queue.shutdown(force=True)  # the sink's next hand-over fails, which ends the job
        job.join(timeout=120)
        failure.clear()  # the job's own error (the queue gone) only follows from this one
        raise
    finally:
        bar.close()
        # Ray Data does not always end its pool when a job fails (an idle actor was seen holding a CPU after a
        # stopped run, so the next run on that Ray waited for ever): end every explaining actor of this run.
        for actor in started_actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
    job.join()
    if failure:
        raise failure[0]
