#!/usr/bin/env python3
"""Continuous synthetic health checks during a rollout (SC-002): any failed check fails the run.

    synthetic_check.py --url URL [--url URL ...] [--interval S] [--timeout S] [--settle S] -- COMMAND ...
    synthetic_check.py --url URL [--url URL ...] --duration S

With a COMMAND (the deploy), every URL is requested every --interval seconds from just
before the command starts until --settle seconds after it ends; without one, for --duration
seconds. A check passes when the URL answers 2xx within --timeout seconds (TLS verified;
redirects are not followed, so an HTTP URL that only redirects fails). Each failure is printed
when it happens; a summary per URL (checks, failures, p50/p99/max latency) goes to stdout and,
inside GitHub Actions, to the job summary ($GITHUB_STEP_SUMMARY).

Exit status: the command's own when it failed, else 1 when any check failed, else 0.
SIGINT/SIGTERM (a cancelled job) are passed on to the command.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import http_call


@dataclass
class Check:
    at: float  # time.time()
    ok: bool
    detail: str  # "HTTP 200", "HTTP 503", "TimeoutError: ..."
    seconds: float


@dataclass
class Target:
    url: str
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def check_once(url: str, timeout: float) -> Check:
    at, started = time.time(), time.monotonic()
    try:
        answer = http_call.request(
            "GET", url, headers={"User-Agent": "todo-synthetic-check"}, timeout=timeout
        )
    except http_call.ERRORS as exc:
        return Check(at, False, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    took = time.monotonic() - started
    if took > timeout:  # a slow trickle of bytes can outlast the socket timeout
        return Check(at, False, f"HTTP {answer.status} after {took:.1f}s (over {timeout}s)", took)
    return Check(at, 200 <= answer.status < 300, f"HTTP {answer.status}", took)


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def watch(
    target: Target, interval: float, timeout: float, stop: threading.Event, lock: threading.Lock
) -> None:
    """Check target.url every `interval` seconds (on a fixed schedule) until `stop`; at least once."""
    start = time.monotonic()
    n = 0
    while True:
        check = check_once(target.url, timeout)
        with lock:
            target.checks.append(check)
            if not check.ok:
                print(f"synthetic-check: FAIL {_stamp(check.at)}Z {target.url}: {check.detail}", flush=True)
        n += 1
        delay = max(0.0, start + n * interval - time.monotonic())
        if stop.wait(delay):
            return


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def summary(targets: list[Target], seconds: float) -> str:
    lines = [
        f"Synthetic checks over {seconds:.0f}s:",
        "",
        "| URL | checks | failed | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in targets:
        took = [c.seconds * 1000 for c in t.checks]
        lines.append(
            f"| {t.url} | {len(t.checks)} | {len(t.failures)} | {percentile(took, 0.5):.0f} | "
            f"{percentile(took, 0.99):.0f} | {max(took, default=0):.0f} |"
        )
    failed = [(t.url, c) for t in targets for c in t.failures]
    if failed:
        lines += ["", "Failed checks:", ""]
        lines += [f"- {_stamp(c.at)}Z {url}: {c.detail}" for url, c in failed[:50]]
    return "\n".join(lines)


def run(
    urls: list[str], interval: float, timeout: float, command: list[str], duration: float, settle: float
) -> int:
    targets = [Target(url) for url in urls]
    stop, lock = threading.Event(), threading.Lock()
    threads = [
        threading.Thread(target=watch, args=(t, interval, timeout, stop, lock), daemon=True) for t in targets
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    code = 0
    if command:
        print(
            f"synthetic-check: checking {len(urls)} URL(s) every {interval}s while: {' '.join(command)}",
            flush=True,
        )
        child = subprocess.Popen(command)

        def forward(signum, _frame):
            child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        stop.wait(settle)
    else:
        stop.wait(duration)
    stop.set()
    for thread in threads:
        thread.join()
    report = summary(targets, time.monotonic() - started)
    print(report, flush=True)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with Path(os.environ["GITHUB_STEP_SUMMARY"]).open("a", encoding="utf-8") as handle:
            handle.write(report + "\n")
    failures = sum(len(t.failures) for t in targets)
    if code:
        print(f"synthetic-check: the command failed (exit {code})", file=sys.stderr)
        return code
    if failures:
        print(f"synthetic-check: {failures} check(s) failed: availability was not 100%", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", required=True, help="a URL to check (repeatable)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between checks of a URL")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a check may take")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to check, without a command")
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds to go on checking after the command"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    bad = [u for u in args.url if urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).hostname]
    if bad:
        parser.error(f"not an http(s) URL with a host: {', '.join(map(repr, bad))} (is APP_URL set?)")
    if not command and args.duration <= 0:
        parser.error("give a command after -- or a --duration")
    if args.interval <= 0 or args.timeout <= 0:
        parser.error("--interval and --timeout must be positive")
    return run(args.url, args.interval, args.timeout, command, args.duration, args.settle)


if __name__ == "__main__":
    sys.exit(main())
