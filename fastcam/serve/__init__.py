"""Explanations as a service: `fastcam serve` on Ray Serve, with dynamic batching (the `serve` extra).

- `ServeOptions`: what a replica explains with (what `fastcam explain` takes) and the limits;
- `ExplainEngine`: a replica's work without Ray (check, decode, explain a batch, answer);
- `build_app` / `app_builder` (`fastcam.serve.app`): the Serve application, for `serve.run` or Serve's config files;
- `start` / `stop` / `run_until_signal` (`fastcam.serve.runner`): a local Ray (or a cluster's) and the HTTP proxy.

The HTTP contract is in docs/serve.md. Names load lazily: importing `fastcam.serve` imports neither Ray nor torch.
"""
from __future__ import annotations

from fastcam._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ServeOptions": "fastcam.serve.engine",
    "ExplainEngine": "fastcam.serve.engine",
    "RequestError": "fastcam.serve.engine",
    "build_app": "fastcam.serve.app",
    "app_builder": "fastcam.serve.app",
    "FastcamExplainer": "fastcam.serve.app",
    "start": "fastcam.serve.runner",
    "stop": "fastcam.serve.runner",
    "run_until_signal": "fastcam.serve.runner",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
