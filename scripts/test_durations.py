"""Write tests/durations.json, the seconds each test file took, from the JUnit XML of a parallel run.

`make test` runs pytest-xdist with `--dist loadfile`; tests/conftest.py hands the workers the slowest files first
(longest-first scheduling), so that no long file starts last and keeps one worker busy while the other idles.
Refresh the figures after a file's time changed a lot (docs/testing.md):

    .venv/bin/pytest -n 2 --dist loadfile --junitxml=/tmp/junit.xml
    .venv/bin/python scripts/test_durations.py /tmp/junit.xml > tests/durations.json

A test's JUnit time includes its set-up and tear-down (module fixtures count once, in the test that starts them).
"""

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def file_seconds(junit_paths: list[str]) -> dict[str, float]:
    """Return the test file (as a node id, tests/...py) -> seconds of its tests, set-up and tear-down."""
    seconds: dict[str, float] = defaultdict(float)
    for path in junit_paths:
        for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314 - pytest wrote it, on this machine
            parts = case.get("classname", "").split(".")
            while parts and not parts[-1].startswith("test_"):  # drop test classes
                parts.pop()
            if parts:
                seconds["/".join(parts) + ".py"] += float(case.get("time") or 0)
    return {name: round(total, 1) for name, total in sorted(seconds.items())}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/test_durations.py JUNIT.xml [MORE.xml ...] > tests/durations.json")
    json.dump(file_seconds(sys.argv[1:]), sys.stdout, indent=0, sort_keys=True)
    sys.stdout.write("\n")
