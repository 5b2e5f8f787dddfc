"""The documentation's executed examples: each marked ```python block of a docs/ page, read as written."""
from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def marked_names(page: str, prefix: str) -> set[str]:
    """The names of the `<!-- doc-example: NAME -->` markers on docs/`page` that start with `prefix`."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return set(re.findall(rf"<!-- doc-example: ({re.escape(prefix)}[\w-]*) -->", text))


def example_block(page: str, name: str) -> str:
    """The first ```python block after the marker `<!-- doc-example: NAME -->` on docs/`page`."""
    marker = f"<!-- doc-example: {name} -->"
    text = (DOCS / page).read_text(encoding="utf-8")
    assert text.count(marker) == 1, f"docs/{page} must hold {marker!r} once"
    found = re.search(r"```python\n(.*?)```", text[text.index(marker):], flags=re.S)
    assert found, f"no ```python block after {marker!r} in docs/{page}"
    return found.group(1)
