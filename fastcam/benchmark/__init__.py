"""`fastcam bench`: time every explainer (fastcam's and the peer libraries') on one model, batch and device.

- `contenders`: what is timed, in table order (torch-free, for `fastcam bench --help`);
- `setting`: `BenchConfig` and the shared model, batch and targets (`make_setting`);
- `builders`: `build(key, setting)`, each contender made runnable;
- `released`: `ReleasedCFCAMLoop`, the CF-CAM authors' per-image loop (CF-CAM's baseline);
- `timing`: synchronised timing and its statistics;
- `provenance`: `environment()`, the device, versions and commit of a benchmark's numbers;
- `report`: results, ratios, the issue's targets, Markdown and JSON;
- `runner`: `run_benchmark`, the interleaved rounds.

The names below load on first access, so importing `fastcam.benchmark.contenders` imports no torch.
"""
from fastcam._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CONTENDERS": "fastcam.benchmark.contenders",
    "CONTENDER_KEYS": "fastcam.benchmark.contenders",
    "DEFAULT_CONTENDER_KEYS": "fastcam.benchmark.contenders",
    "Contender": "fastcam.benchmark.contenders",
    "BenchConfig": "fastcam.benchmark.setting",
    "Setting": "fastcam.benchmark.setting",
    "make_setting": "fastcam.benchmark.setting",
    "resolve_layer_name": "fastcam.benchmark.setting",
    "Skip": "fastcam.benchmark.builders",
    "build": "fastcam.benchmark.builders",
    "ReleasedCFCAMLoop": "fastcam.benchmark.released",
    "Timing": "fastcam.benchmark.timing",
    "time_callable": "fastcam.benchmark.timing",
    "environment": "fastcam.benchmark.provenance",
    "TARGETS": "fastcam.benchmark.report",
    "BenchReport": "fastcam.benchmark.report",
    "Result": "fastcam.benchmark.report",
    "check_targets": "fastcam.benchmark.report",
    "default_json_path": "fastcam.benchmark.report",
    "markdown_tables": "fastcam.benchmark.report",
    "ratios": "fastcam.benchmark.report",
    "write_results": "fastcam.benchmark.report",
    "run_benchmark": "fastcam.benchmark.runner",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
