"""The public surface, checked in a fresh interpreter: every name of `fastcam.__all__` resolves after a plain
`import fastcam` (which loads no torch), the explainers are the registry's, and every `:::` target of the API
reference (docs/api/) imports."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SURFACE = r"""
import importlib, json, sys
import fastcam
cheap = "torch" not in sys.modules
missing = [name for name in fastcam.__all__ if not hasattr(fastcam, name)]
from fastcam.methods import registry
classes = {name: getattr(fastcam, info.class_path.rpartition(":")[2]) is info.load()
           for name, info in registry.METHODS.items()}

def resolve(path):
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            value = getattr(value, attr)
        return value
    raise ModuleNotFoundError(path)

unresolved = {}
for target in json.loads(sys.argv[1]):
    try:
        module = resolve(target)
        for name in getattr(module, "__all__", ()):  # a documented module's __all__ names exist too
            getattr(module, name)
    except Exception as exc:
        unresolved[target] = repr(exc)
print(json.dumps({"cheap": cheap, "missing": missing, "classes": classes, "unresolved": unresolved}))
"""


def doc_targets() -> list[str]:
    return [m for page in sorted((ROOT / "docs" / "api").glob("*.md"))
            for m in re.findall(r"^:::\s*([\w.]+)", page.read_text(encoding="utf-8"), flags=re.M)]


def test_every_public_name_and_documented_target_resolves_in_a_fresh_interpreter() -> None:
    targets = doc_targets()
    assert len(targets) > 20, targets
    done = subprocess.run([sys.executable, "-c", SURFACE, json.dumps(targets)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["cheap"], "`import fastcam` imported torch"
    assert found["missing"] == [], f"names of fastcam.__all__ that do not resolve: {found['missing']}"
    assert found["classes"] and all(found["classes"].values()), found["classes"]
    assert found["unresolved"] == {}, found["unresolved"]


def test_the_surface_names_what_a_user_reaches_for() -> None:
    import fastcam
    from fastcam.methods import registry

    wanted = {"cluster", "io", "ops", "errors", "pipeline", "models", "metrics", "Run", "verify_run", "Explainer",
              "Preprocess", "explain_dataset", "open_run", "NonFiniteError", "RunLockedError", "RunDamagedError"}
    assert wanted <= set(fastcam.__all__), wanted - set(fastcam.__all__)
    registered = {info.class_path.rpartition(":")[2] for info in registry.METHODS.values()}
    assert registered <= set(fastcam.__all__) and registered <= set(fastcam.methods.__all__)
    assert set(fastcam.__all__) <= set(dir(fastcam))
    errors = {name for name, value in vars(fastcam.errors).items()
              if isinstance(value, type) and issubclass(value, (Exception, Warning))
              and value.__module__ == "fastcam.errors"}
    assert errors == set(fastcam.errors.__all__) and errors <= set(fastcam.__all__)
