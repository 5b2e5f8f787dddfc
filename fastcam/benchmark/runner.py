"""The engine of `fastcam bench`: one run times every contender on the same model, inputs and device.

Contenders (`fastcam.benchmark.contenders`; each skipped cleanly, with the reason recorded, when its
library is not importable):

- plain inference (`torch.inference_mode()`), the throughput ceiling;
- fastcam's explainers of every registered method, SoftCAM on the converted network (with that
  network's own plain inference beside it);
- torchcam GradCAM, ScoreCAM, LayerCAM and XGradCAM, captum LayerGradCam;
- pytorch-grad-cam's GradCAM, GradCAMPlusPlus, ScoreCAM, AblationCAM and EigenCAM, and the same calls run by
  `fastcam.compat.pytorch_grad_cam` (`compat-*`, fastcam contenders);
- `ReleasedCFCAMLoop`: a per-image loop doing what the CF-CAM authors' released code does
  (github jerryp-hfut/CF-CAM, cfcam.py), the baseline of CF-CAM's speed-up.

Every contender explains the same batch for the same target classes (the model's predictions,
computed once, outside the timings). Each is built, called, and closed before the next is built (peer
libraries keep hooks on the model that would tax the others). After a warm-up round (`warmup` untimed
calls each), the `repeats` timed calls run in rounds, one call per contender per round, so a drift in
the machine's load hits every contender alike (`interleave=False`: all calls of one contender in a row).
Reported (`fastcam.benchmark.report`): the median seconds per batch with the quartiles and extremes,
images/s at the median, ratios to plain inference and to every peer, and the issue's targets checked
against the numbers.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from fastcam.benchmark.builders import Skip, build
from fastcam.benchmark.contenders import CONTENDERS
from fastcam.benchmark.provenance import environment
from fastcam.benchmark.report import BenchReport, Result, check_targets, ratios
from fastcam.benchmark.setting import BenchConfig, make_setting
from fastcam.benchmark.timing import Timing, time_callable
from fastcam._device import check_amp


def run_benchmark(config: BenchConfig, model: nn.Module | None = None, progress: bool = True) -> BenchReport:
    """Time every requested contender on one model / batch / device; see the module docstring."""
    device = torch.device(config.device)
    amp = check_amp(config.amp)
    setting = make_setting(config, model)
    env = environment(device)  # recorded before the run: the commit and tree state that were timed
    results = [Result(key=c.key, name=c.name, group=c.group, method=c.method, status="ok") for c in CONTENDERS
               if c.key in config.contenders]
    times: dict[str, list[float]] = {r.key: [] for r in results}

    def one_session(result: Result, calls: int, warmup: int) -> None:
        """Build the contender, make `warmup` untimed and `calls` timed calls, close it."""
        close: Callable[[], None] = lambda: None  # noqa: E731
        try:
            run, close, result.note = build(result.key, setting)
            if amp is not None:
                plain = run

                def run() -> Any:  # the same call under the requested autocast
                    with torch.autocast(device.type, dtype=amp):
                        return plain()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(warmup):
                run()
            if calls:
                times[result.key] += time_callable(run, device, warmup=0, repeats=calls).times_s
            if device.type == "cuda":
                peak = int(torch.cuda.max_memory_allocated(device))
                result.peak_memory_bytes = max(result.peak_memory_bytes or 0, peak)
        except Skip as exc:
            result.status, result.reason = "skipped", str(exc)
        except Exception as exc:  # a contender failing must not lose the others' numbers
            result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            close()

    # Warm-up round, then `repeats` rounds of one timed call per contender: interleaving spreads any
    # drift of the machine's load (shared CPUs, GPU clocks) over all contenders alike, instead of
    # penalising whichever ran during a busy spell. Each contender is built afresh for its session.
    rounds = [(0, config.warmup)] + [(1, 0)] * config.repeats if config.interleave else [(config.repeats, config.warmup)]
    # within a round, contenders of the same method run back to back (their ratios then see the same load)
    methods = list(dict.fromkeys(r.method for r in results))
    order = sorted(results, key=lambda r: methods.index(r.method))
    for calls, warmup in tqdm(rounds, desc="bench rounds", disable=not progress or len(rounds) == 1):
        for result in order:
            spent = sum(times[result.key])
            # a slow contender (Score-CAM on a CPU) stops after `max_time` seconds of timed calls, with at
            # least one timed call; its repeats are recorded, so the table shows how many it got
            if result.status == "ok" and not (calls and times[result.key] and config.max_time is not None
                                               and spent >= config.max_time):
                one_session(result, calls, warmup)
    for result in results:
        if result.status == "ok":
            result.timing = Timing.of(times[result.key])
            result.images_per_s = config.batch / result.timing.median_s
        if progress:
            shown = f"{result.images_per_s:9.2f} images/s" if result.images_per_s else result.status
            print(f"  {result.name:36s} {shown}  {result.reason}", flush=True)
    report = BenchReport(config=config, environment=env, results=results)
    report.ratios = ratios(results)
    report.targets = check_targets(report)
    return report
