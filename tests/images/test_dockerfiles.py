"""The services' Dockerfiles, read statically (rung L0): hadolint with every rule down to
`style`, and the policies hadolint cannot check through the PYTHON_BASE argument (the base
pinned by digest to versions.env, the runtime stage's user, signal, port and labels)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from image_testlib import ROOT, build_script

pytestmark = pytest.mark.unit

SERVICES = build_script.SERVICES
VERSIONS = build_script.versions()


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The global part (before the first FROM), then one list per stage, each starting with its FROM."""
    parts: list[list[tuple[str, str]]] = [[]]
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            parts.append([])
        parts[-1].append((keyword, rest))
    return parts


def arg_defaults(items: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in items if keyword == "ARG" and "=" in rest)


def dockerfile(service: str) -> Path:
    return ROOT / "services" / service / "Dockerfile"


def test_hadolint_finds_nothing_in_any_dockerfile():
    hadolint = build_script.ensure_hadolint(VERSIONS)
    files = [str(dockerfile(service)) for service in SERVICES]
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", "--format", "json", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_every_service_has_a_dockerfile():
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    served = {Path(member).name for member in members} - {"shared"}
    assert served == set(SERVICES)
    assert sorted(ROOT.glob("services/*/Dockerfile")) == sorted(dockerfile(s) for s in SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_base_is_the_upstream_image_pinned_by_digest(service):
    head, *body = stages(dockerfile(service))
    base = arg_defaults(head)["PYTHON_BASE"]
    assert base == VERSIONS["PYTHON_BASE_IMAGE"]
    assert re.fullmatch(r"docker\.io/library/python:3\.11[\w.-]*@sha256:[0-9a-f]{64}", base)
    names = []
    for stage in body:
        source, *alias = stage[0][1].split(" AS ")
        assert source == "${PYTHON_BASE}" or source in names, f"FROM {source}: neither the base nor a stage"
        names += alias
    assert names[-1] == "runtime"


@pytest.mark.parametrize("service", SERVICES)
def test_build_arguments_default_to_the_pins(service):
    defaults = arg_defaults(instructions(dockerfile(service)))
    uv_x86_64, uv_aarch64 = VERSIONS["UV_WHEEL_SHA256"].split()
    assert defaults["UV_VERSION"] == VERSIONS["UV_VERSION"]
    assert defaults["UV_SHA256_X86_64"] == uv_x86_64
    assert defaults["UV_SHA256_AARCH64"] == uv_aarch64
    assert defaults["BINUTILS_VERSION"] == VERSIONS["BINUTILS_VERSION"]
    # whatever the script passes is declared (an undeclared --build-arg is ignored)
    declared = {
        rest.split("=", 1)[0] for keyword, rest in instructions(dockerfile(service)) if keyword == "ARG"
    }
    passed = build_script.build_args(VERSIONS, "base", service, build_script.Revision("0" * 40, "", "t"))
    assert set(passed) <= declared


@pytest.mark.parametrize("service", SERVICES)
def test_dependencies_come_from_the_lock_for_this_service_only(service):
    items = instructions(dockerfile(service))
    syncs = [rest for keyword, rest in items if keyword == "RUN" and "uv sync" in rest]
    assert len(syncs) == 2
    for sync in syncs:
        assert "--locked" in sync and "--no-dev" in sync and f"--package todo-{service} " in sync
    # uv checks the whole workspace's lock: every member's pyproject.toml is in the build
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    copies = {rest for keyword, rest in items if keyword == "COPY"}
    for member in members:
        assert f"{member}/pyproject.toml {member}/" in copies, member
    sources = {rest.split()[0] for rest in copies if rest.endswith("/src")}
    assert sources == {"services/shared/src", f"services/{service}/src"}


@pytest.mark.parametrize("service", SERVICES)
def test_runtime_stage_runs_as_numeric_user_and_stops_on_sigterm(service):
    runtime = stages(dockerfile(service))[-1]
    last = {keyword: rest for keyword, rest in runtime}
    assert last["USER"] == f"{build_script.UID}:{build_script.UID}"
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert last["EXPOSE"] == str(build_script.PORT)
    assert json.loads(last["ENTRYPOINT"]) == [f"/opt/venv/bin/todo-{service}"]
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    # only the venv comes from the build stages; nothing from the build context
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=deps /opt/venv /opt/venv", "--from=build /opt/code/ /opt/venv/"]


@pytest.mark.parametrize("service", SERVICES)
def test_labels_and_no_secret_shaped_arguments(service):
    items = instructions(dockerfile(service))
    assert not [rest for keyword, rest in items if keyword == "ADD"], (
        "ADD: use COPY (no remote URLs, no archives)"
    )
    labels = " ".join(rest for keyword, rest in items if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "source", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    # the script passes the argument-made labels again (podman 4.3 caches LABEL steps by text)
    passed = build_script.labels(
        build_script.build_args(VERSIONS, "b", service, build_script.Revision("0" * 40, "", "t"))
    )
    assert all(f"{key}=" in labels for key in passed)
    names = [rest.split("=", 1)[0] for keyword, rest in items if keyword == "ARG"]
    names += [pair.split("=", 1)[0] for keyword, rest in items if keyword == "ENV" for pair in rest.split()]
    secretish = re.compile(r"(?i)(password|passwd|secret|token|credential|api_?key|private)")
    assert [name for name in names if secretish.search(name)] == []


def test_build_context_admits_only_what_the_images_copy():
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert patterns[0] == "*", "an allow-list: everything is excluded first"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "services/*/pyproject.toml", "services/*/src"}
    assert "**/__pycache__" in patterns
