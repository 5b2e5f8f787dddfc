"""The test section's result as JSON: passed / failed / skipped / errors and the list of failures.

    python bench/campaign/junit_summary.py OUT/junit.xml --log OUT/tests.log --env OUT/environment.json --out OUT/tests.json

Without a junit report (pytest cut by the section's time limit writes none) the counts and the failures' names
come from pytest's `-v` log, one line per test as it ran.
"""
from __future__ import annotations

import argparse
import json
import re
import xml.etree.ElementTree as ET  # our own pytest's report, not untrusted input
from pathlib import Path


def summarize(junit: Path) -> dict:
    root = ET.parse(junit).getroot()
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failures, skips = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "errors"
                failures.append({"test": name, "kind": child.tag,
                                 "message": (child.get("message") or child.text or "").strip()[:2000]})
            elif child.tag == "skipped":
                outcome = "skipped"
                reason = (child.get("message") or "").strip()[:300]
                skips[reason] = skips.get(reason, 0) + 1
        counts[outcome] += 1
    return {**counts, "failures": failures, "skip_reasons": skips}


_VERBOSE_LINE = re.compile(r"^(\S+::\S.*?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def summarize_log(log: Path) -> dict:
    """Counts and failures from a `pytest -v` log, as far as it got."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failures = []
    kinds = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped",
             "XFAIL": "skipped"}
    for line in log.read_text(errors="replace").splitlines():
        found = _VERBOSE_LINE.match(line)
        if found:
            outcome = kinds[found.group(2)]
            counts[outcome] += 1
            if outcome in ("failed", "errors"):
                failures.append({"test": found.group(1), "kind": outcome, "message": "(cut run: no traceback)"})
    return {**counts, "failures": failures, "skip_reasons": {}, "incomplete": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path)
    parser.add_argument("--log", type=Path, help="the `pytest -v` log, read when there is no junit report")
    parser.add_argument("--env", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wall-s", type=float)
    args = parser.parse_args()
    if args.junit.is_file():
        result = summarize(args.junit)
    elif args.log and args.log.is_file():
        result = summarize_log(args.log)
    else:
        result = {"passed": 0, "failed": 0, "skipped": 0, "errors": 1,
                  "failures": [{"test": "(session)", "kind": "error", "message": "no junit report: pytest did not finish"}]}
    if args.env and args.env.is_file():
        result["environment"] = json.loads(args.env.read_text())
    result["wall_s"] = args.wall_s
    args.out.write_text(json.dumps(result, indent=1))
    print(f"tests: {result['passed']} passed, {result['failed']} failed, {result['skipped']} skipped, "
          f"{result['errors']} errors")
    for failure in result["failures"][:20]:
        print(f"  FAILED {failure['test']}: {failure['message'].splitlines()[0] if failure['message'] else ''}")


if __name__ == "__main__":
    main()
