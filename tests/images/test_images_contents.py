"""What is inside the built images (podman + runc): size within the 200 MB budget, the numeric
non-root user, signal, port and OCI labels, no compiler, linker or package installer, every
module loaded from precompiled bytecode, and gitleaks' 0 findings over the whole filesystem (the
shared base once, then what each image adds to it), each image's own code, its configuration and
its history.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import string
import subprocess
from pathlib import Path

import pytest
from image_testlib import ROOT, RUN, build_script, podman, run_in_image

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

SERVICES = build_script.SERVICES
SIZE_BUDGET = 200 * 1000**2  # bytes, uncompressed (podman's "MB")
GITLEAKS = ROOT / ".tools" / "bin" / "gitleaks"


def inspect(image: str) -> dict:
    return json.loads(podman("image", "inspect", image).stdout)[0]


@pytest.mark.parametrize("service", SERVICES)
def test_size_within_budget(service, images):
    size = inspect(images[service])["Size"]
    print(f"{images[service]}: {size / 1e6:.1f} MB")
    assert size <= SIZE_BUDGET


@pytest.mark.parametrize("service", SERVICES)
def test_configuration_user_signal_port_and_labels(service, images):
    config = inspect(images[service])["Config"]
    assert config["User"] == f"{build_script.UID}:{build_script.UID}"
    assert config["StopSignal"] == "SIGTERM"
    assert set(config["ExposedPorts"]) == {f"{build_script.PORT}/tcp"}
    assert config["Entrypoint"] == [f"/opt/venv/bin/todo-{service}"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    labels = config["Labels"]
    oci = "org.opencontainers.image."
    assert labels[oci + "title"] == f"todo-{service}"
    assert labels[oci + "version"] == build_script.service_version(service)
    revision = labels[oci + "revision"]
    assert re.fullmatch(r"[0-9a-f]{40}", revision)
    assert images[service].split(":")[-1].startswith(revision[:12])  # tagged with its commit
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d|Z)", labels[oci + "created"])
    assert labels[oci + "source"]
    assert labels[oci + "base.name"]
    # with no --user at all, the image's own user is the numeric non-root one
    whoami = subprocess.run(
        [*RUN, "--rm", "--network", "none", "--entrypoint", "id", images[service], "-u"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert whoami.stdout.strip() == str(build_script.UID)


@pytest.mark.parametrize("service", SERVICES)
def test_no_compiler_linker_or_package_installer(service, images):
    probe = run_in_image(
        images[service],
        "-c",
        "for tool in gcc cc c++ make ld as strip uv pip pip3; do command -v $tool; done;"
        " for path in /opt/uv /src /opt/code /opt/deps.list /root/.cache /opt/venv/bin/pip /opt/venv/bin/uv;"
        " do [ -e $path ] && echo $path; done; python3 -m pip --version >/dev/null 2>&1 && echo pip-module;"
        " true",
        entrypoint="/bin/sh",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_module_loads_from_precompiled_bytecode(service, images):
    """On a read-only root filesystem nothing may need compiling: each module the app imports,
    the standard library's included, comes from a .pyc that matches its source."""
    verbose = run_in_image(images[service], "-v", "-c", f"import todo_{service}.app", entrypoint="python3")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    loaded = re.findall(r"^# code object from '?([^'\n]+)'?$", verbose.stderr, re.M)
    ours = [path for path in loaded if f"/todo_{service}/" in path]
    assert ours, "the app's modules were not imported"
    assert [path for path in loaded if not path.endswith(".pyc")] == []
    assert "bytecode is stale" not in verbose.stderr


def _gitleaks(target: Path, report: Path) -> list[dict]:
    # run from the report's folder: no .gitleaksignore or config of the repository applies
    result = subprocess.run(
        [
            str(GITLEAKS),
            "dir",
            str(target),
            "--no-banner",
            "--report-format",
            "json",
            "--report-path",
            str(report),
            "--redact",
            "--exit-code",
            "0",
            "--log-level",
            "warn",
        ],
        cwd=report.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(report.read_text() or "[]")


def _export(image: str, into: Path, only: list[str] | None = None) -> Path:
    """The image's filesystem under `into` (podman export); given `only`, just those paths."""
    into.mkdir()
    select = []
    if only is not None:
        listing = into.with_name(into.name + ".paths")
        listing.write_text("\n".join(only) + "\n")
        select = ["--no-recursion", "--files-from", str(listing)]
    container = podman("create", image).stdout.strip()
    try:
        with subprocess.Popen([*build_script.PODMAN, "export", container], stdout=subprocess.PIPE) as export:
            subprocess.run(["tar", "-C", str(into), "-xf", "-", *select], stdin=export.stdout, check=True)
    finally:
        podman("rm", container, check=False)
    return into


def _base(image: str) -> str:
    return inspect(image)["Config"]["Labels"]["org.opencontainers.image.base.name"]


def test_gitleaks_finds_no_secret_in_the_base(images, tmp_path):
    """The base the four images share, scanned once with gitleaks' default rules; each image's
    own test below scans what it adds to or changes in it."""
    bases = {_base(image) for image in images.values()}
    assert len(bases) == 1, bases
    assert _gitleaks(_export(bases.pop(), tmp_path / "rootfs"), tmp_path / "base.json") == []


@pytest.mark.parametrize("service", SERVICES)
def test_gitleaks_finds_no_secret_in_the_image(service, images, tmp_path):
    assert GITLEAKS.is_file(), "gitleaks is built by `make tools`"
    # 1. Every file the image adds to its base or changes in it (`podman image diff`; the base
    #    is scanned above) with gitleaks' default rules (which leave out third-party Python
    #    libraries: public packages' documentation tokens are not ours).
    diff = podman("image", "diff", images[service], _base(images[service])).stdout.splitlines()
    changed = [line[2:].lstrip("/") for line in diff if line[:2] in ("A ", "C ")]
    rootfs = _export(images[service], tmp_path / "rootfs", only=changed)
    assert _gitleaks(rootfs, tmp_path / "filesystem.json") == []

    # 2. The image's own code (the todo_* packages, their metadata and commands) under neutral
    #    names, so no default path rule leaves it out; a planted token proves the scan reads it.
    site = rootfs / "opt/venv/lib/python3.11/site-packages"
    code = tmp_path / "code"
    copied = [*site.glob("todo_*"), *(rootfs / "opt/venv/bin").glob("todo-*")]
    assert {path.name for path in copied} >= {"todo_shared", f"todo_{service}", f"todo-{service}"}
    for path in copied:
        target = code / path.name.replace(".dist-info", "-metadata")
        shutil.copytree(path, target) if path.is_dir() else shutil.copyfile(path, target)
    assert _gitleaks(code, tmp_path / "code.json") == []
    token = "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
    (code / "planted.py").write_text(f'TOKEN = "{token}"\n')
    planted = _gitleaks(code, tmp_path / "planted.json")
    assert [finding["File"].rsplit("/", 1)[-1] for finding in planted] == ["planted.py"]

    # 3. The configuration (environment, labels, command, user) and the history (each step as
    #    run, build arguments included). Not the tags: `todo-api:<commit>` is a name and hash
    #    that gitleaks' generic rule takes for an API key.
    metadata = tmp_path / "metadata"
    metadata.mkdir()
    (metadata / "config.json").write_text(json.dumps(inspect(images[service])["Config"], indent=1))
    history = json.loads(podman("history", "--no-trunc", "--format", "json", images[service]).stdout)
    (metadata / "history.txt").write_text("\n".join(step.get("CreatedBy", "") for step in history))
    assert _gitleaks(metadata, tmp_path / "metadata.json") == []
