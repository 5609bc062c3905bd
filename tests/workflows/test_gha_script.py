"""scripts/gha.py, the glue every workflow job starts with: the pins of versions.env into the
job's environment (each value from its one place), the build arguments of scripts/images.py,
and the release's wait for ci to have passed for the tagged commit, the last against a test
double of GitHub's REST API (not reachable here)."""

from __future__ import annotations

import importlib
import json
import os

import pytest
from wf_testlib import GitHubApiDouble, run_script

gha = importlib.import_module("gha")  # scripts/gha.py (testkit puts scripts/ on sys.path)
images = importlib.import_module("images")
toolchain = importlib.import_module("toolchain")

SHA = "0123456789abcdef0123456789abcdef01234567"


def _env_file(path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def _outputs(path) -> dict[str, str]:
    """GitHub's output file: KEY=value lines and KEY<<DELIMITER ... DELIMITER blocks."""
    lines, found = path.read_text().splitlines(), {}
    i = 0
    while i < len(lines):
        if "<<" in lines[i] and "=" not in lines[i].split("<<")[0]:
            key, delimiter = lines[i].split("<<", 1)
            end = lines.index(delimiter, i + 1)
            found[key] = "\n".join(lines[i + 1 : end])
            i = end + 1
        else:
            key, value = lines[i].split("=", 1)
            found[key] = value
            i += 1
    return found


@pytest.mark.unit
def test_env_gives_every_pin_unquoted_and_where_the_images_go(tmp_path):
    target = tmp_path / "github_env"
    result = run_script(
        "gha.py",
        "env",
        env={**os.environ, "GITHUB_ENV": str(target), "GITHUB_REPOSITORY_OWNER": "Todo-Cloud"},
    )
    assert result.returncode == 0, result.stderr
    written = _env_file(target)
    pins = {key: value.strip('"') for key, value in toolchain.read_versions().items()}
    assert {key: written[key] for key in pins} == pins
    assert written["DEBIAN_PACKAGES"].split()[0] == "postgresql-15"  # quotes gone, words kept
    assert written["IMAGE_PREFIX"] == "ghcr.io/todo-cloud"  # GHCR names are lower case
    assert json.loads(written["APP_IMAGE_VALUES"]) == {
        "app_extra_values": {"image": {"repository": "ghcr.io/todo-cloud"}}
    }


@pytest.mark.unit
def test_env_refuses_a_versions_env_without_a_pin_the_workflows_read(monkeypatch):
    pins = toolchain.read_versions()
    monkeypatch.setattr(
        gha.toolchain, "read_versions", lambda: {k: v for k, v in pins.items() if k != "DOCTL_VERSION"}
    )
    with pytest.raises(SystemExit, match="lacks DOCTL_VERSION"):
        gha.environment("todo-cloud")


@pytest.mark.unit
def test_outputs_give_pins_and_the_service_list(tmp_path):
    target = tmp_path / "github_output"
    result = run_script(
        "gha.py",
        "output",
        "PYTHON_BASE_IMAGE",
        "services",
        "shards",
        env={**os.environ, "GITHUB_OUTPUT": str(target)},
    )
    assert result.returncode == 0, result.stderr
    written = _outputs(target)
    assert written["PYTHON_BASE_IMAGE"] == toolchain.read_versions()["PYTHON_BASE_IMAGE"]
    assert json.loads(written["services"]) == list(images.SERVICES)
    assert json.loads(written["shards"]) == gha.test_shards()
    listed = run_script("gha.py", "services")
    assert listed.stdout.split() == list(images.SERVICES)


@pytest.mark.unit
def test_build_args_are_make_images_build_args_on_the_real_base(tmp_path):
    target = tmp_path / "github_output"
    result = run_script("gha.py", "build-args", "api", env={**os.environ, "GITHUB_OUTPUT": str(target)})
    assert result.returncode == 0, result.stderr
    given = dict(line.split("=", 1) for line in _outputs(target)["args"].splitlines())
    v = images.versions()
    assert given == images.build_args(v, v["PYTHON_BASE_IMAGE"], "api", images.revision())
    assert given["PYTHON_BASE"] == v["PYTHON_BASE_IMAGE"]  # the Dockerfile's own default, pinned by digest
    flags = run_script("gha.py", "build-args", "api", "--as-flags").stdout.splitlines()
    assert flags[0::2] == ["--build-arg"] * len(given) and dict(f.split("=", 1) for f in flags[1::2]) == given
    unknown = run_script("gha.py", "build-args", "nope", env={**os.environ, "GITHUB_OUTPUT": str(target)})
    assert unknown.returncode == 1 and "unknown service" in unknown.stderr


# -- wait-for-ci (GitHub's REST API: test double) ---------------------------------------------


def _wait(api: GitHubApiDouble, *extra: str):
    env = {
        **os.environ,
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": "todo-cloud/todo",
        "GH_TOKEN": "t0ken",
    }
    args = ("wait-for-ci", "--sha", SHA, "--interval", "0.05", "--grace", "0.3", "--timeout", "10", *extra)
    return run_script("gha.py", *args, env=env, timeout=60)


def _run(status: str, conclusion: str | None = None) -> dict:
    return {"status": status, "conclusion": conclusion, "html_url": f"https://github.test/run/{status}"}


@pytest.mark.integration
def test_wait_for_ci_passes_once_ci_succeeded_and_asks_for_the_right_runs():
    with GitHubApiDouble(
        [[_run("in_progress")], [_run("in_progress")], [_run("completed", "success")]]
    ) as api:
        result = _wait(api)
        asked = api.requests()
    assert result.returncode == 0, result.stderr
    assert len(asked) == 3
    assert asked[0].path.startswith("/repos/todo-cloud/todo/actions/workflows/ci.yml/runs?")
    for part in (f"head_sha={SHA}", "branch=main", "event=push"):
        assert part in asked[0].path
    assert asked[0].headers["Authorization"] == "Bearer t0ken"


@pytest.mark.integration
def test_wait_for_ci_fails_at_once_when_ci_failed():
    with GitHubApiDouble([[_run("completed", "failure")]]) as api:
        result = _wait(api)
        asked = len(api.requests())
    assert result.returncode == 1
    assert asked == 1
    assert "did not succeed" in result.stderr and "https://github.test/run/completed" in result.stderr


@pytest.mark.integration
def test_wait_for_ci_fails_when_the_commit_never_went_through_ci():
    with GitHubApiDouble([[]]) as api:
        result = _wait(api)
    assert result.returncode == 1
    assert "no ci.yml run" in result.stderr


@pytest.mark.integration
def test_wait_for_ci_stops_on_a_refused_token():
    with GitHubApiDouble([[]], status=401) as api:
        result = _wait(api)
        asked = len(api.requests())
    assert result.returncode == 1
    assert asked == 1 and "HTTP 401" in result.stderr
