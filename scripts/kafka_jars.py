#!/usr/bin/env python3
"""Fetch Apache Kafka's broker jars (KAFKA_VERSION in versions.env) from Maven Central.

Kafka comes as jars, not as the release tarball: tools/kafka/pom.xml names the broker
(kafka_2.13) and a log4j2 binding, and `mvn dependency:copy-dependencies` copies them and
their runtime dependencies into a cache folder outside the clone, keyed by the version and
the pom's hash: $TODO_CLOUD_CACHE/kafka/<version>-<hash>/libs. Maven's own download cache
stays in ~/.m2. The folder appears atomically (filled under a temporary name, then renamed).

Prints the libs folder (the last line on stdout); progress goes to stderr.

Usage: scripts/kafka_jars.py
Needs: java 17+ and mvn (Debian: openjdk-17-jre-headless, maven; see versions.env).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toolchain import ROOT, _pid_alive, cache_root, read_versions

POM = ROOT / "tools" / "kafka" / "pom.xml"
# The jars the harness runs: the broker's main class and the storage tool's live in kafka_2.13.
REQUIRED = ("kafka_2.13-{KAFKA_VERSION}.jar", "kafka-clients-{KAFKA_VERSION}.jar")


def cache_key(versions: dict[str, str]) -> str:
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return f"{versions['KAFKA_VERSION']}-{digest}"


def libs_dir(versions: dict[str, str] | None = None) -> Path:
    versions = versions or read_versions()
    return cache_root() / "kafka" / cache_key(versions) / "libs"


def _complete(libs: Path, versions: dict[str, str]) -> bool:
    return all((libs / name.format(**versions)).is_file() for name in REQUIRED)


def say(message: str) -> None:
    print(f"kafka_jars: {message}", file=sys.stderr, flush=True)


def ensure() -> Path:
    """Return the libs folder, fetching it first (with progress on stderr) when it is not cached."""
    versions = read_versions()
    libs = libs_dir(versions)
    target = libs.parent
    if _complete(libs, versions):
        return libs
    for tool in ("mvn", "java"):
        if not shutil.which(tool):
            raise FileNotFoundError(
                f"{tool} not found: install openjdk-17-jre-headless and maven (scripts/system-deps.sh)"
            )
    started = time.monotonic()
    say(f"fetching Apache Kafka {versions['KAFKA_VERSION']} and its runtime jars from Maven Central ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(target.name + ".tmp*"):
        if not _pid_alive(int(stale.suffix[4:] or 0)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "libs").mkdir(parents=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={versions['KAFKA_VERSION']}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging / 'libs'}",
    ]
    try:
        # Quiet Maven still writes colour resets; keep its output for when it fails.
        run = subprocess.run(
            cmd, check=False, cwd=staging, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if run.returncode:
            tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-40:])
            raise RuntimeError(f"{' '.join(cmd[:2])} ... exited {run.returncode}:\n{tail}")
        if not _complete(staging / "libs", versions):
            raise RuntimeError(f"mvn finished but {staging / 'libs'} lacks {', '.join(REQUIRED)}")
        (staging / "pom.xml").write_bytes(POM.read_bytes())  # what this folder was made from
        try:
            staging.rename(target)
        except OSError:
            # Another process finished first (the target exists and is complete): keep theirs.
            if not _complete(libs, versions):
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    count = len(list(libs.glob("*.jar")))
    say(f"fetched {count} jars in {time.monotonic() - started:.0f}s into {libs}")
    return libs


def main() -> int:
    try:
        versions = read_versions()
        if _complete(libs_dir(versions), versions):
            say(f"cached: Apache Kafka {versions['KAFKA_VERSION']} in {libs_dir(versions)}")
        print(ensure())
    except (RuntimeError, OSError) as exc:
        print(f"kafka_jars: failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
