#!/usr/bin/env python3
"""GitHub Actions glue: what the workflows need, each value read from its one place.

    scripts/gha.py env                   versions.env's pins, IMAGE_PREFIX and APP_IMAGE_VALUES -> $GITHUB_ENV
    scripts/gha.py output KEY ...        pins as step outputs (KEY=value) -> $GITHUB_OUTPUT; `services`
                                         and `shards` give the services and the test shards as
                                         JSON lists (job matrices)
    scripts/gha.py services              the services, one a line
    scripts/gha.py build-args SERVICE    the Dockerfile's build arguments (scripts/images.py) as the
                                         step output `args` (--as-flags: as --build-arg flags)
    scripts/gha.py wait-for-ci --sha SHA [--workflow ci.yml] [--branch main]
                                         wait until that workflow has succeeded for SHA on a push to
                                         the branch (GitHub's REST API, token from GH_TOKEN); fail
                                         at once when it failed, or when no run shows up

Each runs on the runner's own python3 with the standard library only, before any setup step.
The pins the workflows read (KEYS below) must be in versions.env: `env` fails otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.parse
from pathlib import Path

import http_call
import images  # scripts/ is this script's folder: the service list and the build arguments
import toolchain

# The pins the workflows use (with `${{ env.KEY }}` or "$KEY"): tests/workflows checks the
# workflows name no other.
KEYS = (
    "PYTHON_VERSION",
    "GO_MIN_VERSION",
    "KUBERNETES_VERSION",
    "GITLEAKS_VERSION",
    "PYTHON_BASE_IMAGE",
    # doctl: the DigitalOcean CLI that writes the deploy jobs' short-lived kubeconfig
    "DOCTL_VERSION",
    # kind: the online workflow's cluster
    "KIND_VERSION",
)
# What `env` derives: where CI pushes the images, and the chart value that points the release
# at them (ansible-playbook ... -e "$APP_IMAGE_VALUES").
DERIVED = ("IMAGE_PREFIX", "APP_IMAGE_VALUES")
REGISTRY = "ghcr.io"


def pins() -> dict[str, str]:
    found = {key: value.strip('"') for key, value in toolchain.read_versions().items()}
    missing = [key for key in KEYS if not found.get(key)]
    if missing:
        raise SystemExit(f"gha: versions.env lacks {', '.join(missing)} (the workflows read them)")
    return found


def image_prefix(owner: str) -> str:
    """GHCR's namespace of the repository's owner; image names are lower case."""
    if not owner:
        raise SystemExit("gha: GITHUB_REPOSITORY_OWNER is not set (run inside GitHub Actions)")
    return f"{REGISTRY}/{owner.lower()}"


def environment(owner: str) -> dict[str, str]:
    values = pins()
    prefix = image_prefix(owner)
    values["IMAGE_PREFIX"] = prefix
    values["APP_IMAGE_VALUES"] = json.dumps(
        {"app_extra_values": {"image": {"repository": prefix}}}, separators=(",", ":")
    )
    return values


MOLECULE_TEST = "tests/molecule/test_molecule.py::test_scenario"


def test_shards() -> list[dict[str, str]]:
    """`make test` split for ci's test matrix: one shard per Molecule scenario (the slowest
    tests), one for services/, and `platform` with everything the others do not take, so a
    new test always runs somewhere. PYTEST_ARGS of each."""
    molecule = (
        toolchain.ROOT / "collections" / "ansible_collections" / "todo" / "cloud" / "extensions" / "molecule"
    )
    # *_online scenarios need the real cloud: tests/cluster/test_cluster_online.py (online tier).
    scenarios = sorted(
        path.parent.name
        for path in molecule.glob("*/molecule.yml")
        if not path.parent.name.endswith("_online")
    )
    return [
        *({"shard": f"molecule-{name}", "pytest-args": f"{MOLECULE_TEST}[{name}]"} for name in scenarios),
        {"shard": "services", "pytest-args": "services"},
        {"shard": "platform", "pytest-args": f"--ignore=services --deselect={MOLECULE_TEST}"},
    ]


def _append(variable: str, lines: list[str]) -> None:
    path = os.environ.get(variable)
    if not path:
        raise SystemExit(f"gha: ${variable} is not set (run inside GitHub Actions)")
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)


def _line(key: str, value: str) -> str:
    if "\n" in value:
        raise SystemExit(f"gha: {key} spans lines; GitHub's env files take one line per KEY=value")
    return f"{key}={value}"


def write_env() -> None:
    values = environment(os.environ.get("GITHUB_REPOSITORY_OWNER", ""))
    _append("GITHUB_ENV", [_line(key, value) for key, value in values.items()])
    print(f"gha: {len(values)} values into $GITHUB_ENV (versions.env, IMAGE_PREFIX={values['IMAGE_PREFIX']})")


def write_outputs(keys: list[str]) -> None:
    values = pins()
    lines = []
    for key in keys:
        if key == "services":
            lines.append(_line(key, json.dumps(list(images.SERVICES))))
        elif key == "shards":
            lines.append(_line(key, json.dumps(test_shards())))
        elif key in values:
            lines.append(_line(key, values[key]))
        else:
            raise SystemExit(f"gha: no pin {key} in versions.env")
    _append("GITHUB_OUTPUT", lines)
    print("\n".join(lines))


def build_args(service: str) -> dict[str, str]:
    """The same build arguments `make images` gives, on the real upstream base."""
    if service not in images.SERVICES:
        raise SystemExit(f"gha: unknown service {service!r} (of {', '.join(images.SERVICES)})")
    v = images.versions()
    return images.build_args(v, v["PYTHON_BASE_IMAGE"], service, images.revision())


def write_build_args(service: str, as_flags: bool = False) -> None:
    args = build_args(service)
    if as_flags:  # for `docker buildx build`: one argument a line (mapfile -t)
        print("\n".join(f"--build-arg\n{_line(key, value)}" for key, value in args.items()))
        return
    delimiter = f"EOF_{secrets.token_hex(8)}"
    body = [_line(key, value) for key, value in args.items()]
    _append("GITHUB_OUTPUT", [f"args<<{delimiter}", *body, delimiter])
    print("\n".join(body))


# --- wait-for-ci -----------------------------------------------------------------------------

PENDING = {"queued", "in_progress", "waiting", "pending", "requested"}


def _runs(api: str, repository: str, workflow: str, sha: str, branch: str, token: str) -> list[dict]:
    query = urllib.parse.urlencode({"head_sha": sha, "branch": branch, "event": "push", "per_page": 50})
    url = f"{api}/repos/{repository}/actions/workflows/{urllib.parse.quote(workflow)}/runs?{query}"
    headers = {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "todo-cloud-gha",
    }
    answer = http_call.request("GET", url, headers=headers)
    if 400 <= answer.status < 500:  # the token or the request is wrong: asking again will not help
        raise SystemExit(f"gha: GET {url}: HTTP {answer.status} {answer.body[:300]!r}")
    if answer.status != 200:
        raise ConnectionError(f"HTTP {answer.status}")
    return json.loads(answer.body).get("workflow_runs", [])


def wait_for_ci(sha: str, workflow: str, branch: str, timeout: float, interval: float, grace: float) -> int:
    """0 once a run of `workflow` for `sha` on `branch` concluded success; 1 when every run
    failed, when none appeared within `grace` seconds, or at `timeout`."""
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    token = os.environ.get("GH_TOKEN", "")
    if not (repository and token):
        raise SystemExit("gha: wait-for-ci needs GITHUB_REPOSITORY and GH_TOKEN")
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        try:
            runs = _runs(api, repository, workflow, sha, branch, token)
        except http_call.ERRORS as exc:
            print(f"gha: GitHub API: {exc}; asking again", flush=True)
            runs = None
        if runs is not None:
            if any(run.get("conclusion") == "success" for run in runs):
                good = next(run for run in runs if run.get("conclusion") == "success")
                print(f"gha: {workflow} succeeded for {sha} on {branch}: {good.get('html_url', '')}")
                return 0
            pending = [run for run in runs if run.get("status") in PENDING]
            if runs and not pending:
                print(f"gha: {workflow} did not succeed for {sha} on {branch}:", file=sys.stderr)
                for run in runs:
                    print(f"  {run.get('conclusion')}: {run.get('html_url', '')}", file=sys.stderr)
                print("  fix it on main and tag the fixed commit (or re-run the failed run)", file=sys.stderr)
                return 1
            if not runs and waited >= grace:
                print(
                    f"gha: no {workflow} run for {sha} on a push to {branch}: tag a commit of "
                    f"{branch} that CI has built",
                    file=sys.stderr,
                )
                return 1
            state = f"{len(pending)} run(s) still going" if pending else "no run yet"
            print(f"gha: {workflow} for {sha}: {state} ({waited:.0f}s)", flush=True)
        if waited >= timeout:
            print(f"gha: gave up waiting for {workflow} after {timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("env", help="pins and derived values into $GITHUB_ENV")
    cmd_output = commands.add_parser("output", help="pins (or `services`, `shards`) as step outputs")
    cmd_output.add_argument("keys", nargs="+")
    commands.add_parser("services", help="the services, one a line (shell loops)")
    cmd_args = commands.add_parser("build-args", help="a service's build arguments as the step output `args`")
    cmd_args.add_argument("service")
    cmd_args.add_argument("--as-flags", action="store_true", help="print --build-arg flags instead")
    cmd_wait = commands.add_parser("wait-for-ci", help="wait until a workflow succeeded for a commit")
    cmd_wait.add_argument("--sha", required=True)
    cmd_wait.add_argument("--workflow", default="ci.yml")
    cmd_wait.add_argument("--branch", default="main")
    cmd_wait.add_argument("--timeout", type=float, default=1500, help="seconds to wait in all")
    cmd_wait.add_argument("--interval", type=float, default=30, help="seconds between questions")
    cmd_wait.add_argument("--grace", type=float, default=120, help="seconds a run may take to show up")
    args = parser.parse_args(argv)
    if args.command == "env":
        write_env()
    elif args.command == "output":
        write_outputs(args.keys)
    elif args.command == "services":
        print("\n".join(images.SERVICES))
    elif args.command == "build-args":
        write_build_args(args.service, args.as_flags)
    elif args.command == "wait-for-ci":
        return wait_for_ci(args.sha, args.workflow, args.branch, args.timeout, args.interval, args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
