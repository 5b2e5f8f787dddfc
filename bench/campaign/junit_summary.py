"""The test section's result as JSON: passed / failed / skipped / errors and the list of failures.

    python bench/campaign/junit_summary.py OUT/junit.xml --env OUT/environment.json --out OUT/tests.json
"""
from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path)
    parser.add_argument("--env", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wall-s", type=float)
    args = parser.parse_args()
    result = summarize(args.junit) if args.junit.is_file() else {
        "passed": 0, "failed": 0, "skipped": 0, "errors": 1,
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
