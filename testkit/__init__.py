"""Test harness: real engines started on loopback for the project's tests.

scripts/ is not a package; importing testkit puts it on sys.path once, so the harness
and the tests import `toolchain` and `kafka_jars` like any module.
"""

import sys
from pathlib import Path

SCRIPTS = str(Path(__file__).resolve().parent.parent / "scripts")
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)
