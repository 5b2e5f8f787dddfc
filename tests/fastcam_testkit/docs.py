"""The documentation's executed examples: each marked ```python (or ```bash) block of a docs/ page, read as written."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def marked_names(page: str, prefix: str) -> set[str]:
    """The names of the `<!-- doc-example: NAME -->` markers on docs/`page` that start with `prefix`."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return set(re.findall(rf"<!-- doc-example: ({re.escape(prefix)}[\w-]*) -->", text))


def example_block(page: str, name: str, language: str = "python") -> str:
    """The ```LANGUAGE block right after the marker `<!-- doc-example: NAME -->` on docs/`page`."""
    marker = f"<!-- doc-example: {name} -->"
    text = (DOCS / page).read_text(encoding="utf-8")
    assert text.count(marker) == 1, f"docs/{page} must hold {marker!r} once"
    found = re.match(rf"\s*```{language}\n(.*?)```", text[text.index(marker) + len(marker):], flags=re.S)
    assert found, f"no ```{language} block right after {marker!r} in docs/{page}"
    return found.group(1)


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a ```bash block as argument lists: backslash continuations joined, comments and
    blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
