"""Where a test run's time went, per worker: `python -m testkit.timeline [artifacts/test-timeline.json]`.

The root conftest.py writes the file: one entry per test phase (setup, call, teardown) with the
xdist worker that ran it and its start and end in epoch seconds.
"""

from __future__ import annotations

import collections
import json
import pathlib
import sys


def summary(entries: list[dict], longer_than: float = 20) -> str:
    """Each worker's busy time per phase, then every phase longer than `longer_than` seconds in
    the order they started (a setup that waits for testkit/machine.py's lock shows here)."""
    begin = min(e["start"] for e in entries)
    lines = []
    for worker in sorted({e["worker"] for e in entries}):
        phases = [e for e in entries if e["worker"] == worker]
        spent = collections.Counter()
        for phase in phases:
            spent[phase["phase"]] += phase["stop"] - phase["start"]
        last = max(p["stop"] for p in phases) - begin
        totals = ", ".join(f"{name} {spent[name]:.0f}s" for name in ("setup", "call", "teardown"))
        lines.append(f"{worker}: done at +{last:.0f}s; {totals}")
    for e in sorted(entries, key=lambda e: e["start"]):
        took = e["stop"] - e["start"]
        if took > longer_than:
            lines.append(f"+{e['start'] - begin:5.0f}s {took:5.0f}s {e['worker']} {e['phase']:8} {e['test']}")
    return "\n".join(lines)


if __name__ == "__main__":
    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/test-timeline.json")
    print(summary(json.loads(path.read_text())))
