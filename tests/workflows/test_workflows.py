"""The delivery workflows (.github/workflows) read as data and held to the invariants of
docs/delivery.md (rung L0; actionlint checks their syntax and scripts in `make lint`):
triggers; a needs-graph in which nothing deploys without the tests and scans; the image tags;
least-privilege permissions; per-environment concurrency that never cancels a rollout; every
action pinned by commit SHA; a timeout on every job; no persisted git credentials; no
expression inside a script; secrets only in environment jobs; short-lived cluster
credentials; versions read from versions.env; the deploy steps running the README's commands.

Each check returns the problems it finds. Every test runs its check on the real workflows
(no problem) and on a copy broken on purpose (the problem found), so no check passes by
finding nothing to look at.
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import re
import shlex
import tomllib
from collections.abc import Callable

import pytest
import yaml
from wf_testlib import ROOT, WORKFLOWS, load, triggers

gha = importlib.import_module("gha")  # scripts/gha.py
images = importlib.import_module("images")

pytestmark = pytest.mark.unit

FILES = ("ci.yml", "release.yml", "rollback.yml", "online.yml")
# What must have passed before each deploy job of a workflow may start (transitively).
REQUIRED_BEFORE_DEPLOY = {
    "ci.yml": {"lint", "test", "secret-scan", "resource-policy", "images", "push", "image-scan"},
    "release.yml": {"ci-passed", "secret-scan", "promote", "image-scan"},
}
# ... and what each of those jobs has to do to deserve its place (a regex over its run scripts
# and `uses:`), so that renaming a job cannot keep the graph while emptying the gate.
JOB_DOES = {
    ("ci.yml", "lint"): r"^make system-deps lint$",
    ("ci.yml", "test"): r"^make test$",
    ("ci.yml", "secret-scan"): r"gitleaks dir .*--exit-code 1 \.$(?s:.*)gitleaks git .*--exit-code 1",
    ("ci.yml", "resource-policy"): r"pytest tests/chart/test_chart_static\.py",
    ("ci.yml", "images"): r"docker/build-push-action@",
    ("ci.yml", "push"): r"scripts/registry\.py .*retry --registry ghcr\.io -- docker push",
    ("ci.yml", "image-scan"): r"docker export(?s:.*)gitleaks\" dir .*rootfs(?s:.*)gitleaks\" dir .*metadata",
    ("release.yml", "ci-passed"): r"scripts/gha\.py wait-for-ci --workflow ci\.yml --branch main",
    ("release.yml", "secret-scan"): r"gitleaks dir .*--exit-code 1 \.",
    ("release.yml", "promote"): r"scripts/registry\.py promote --revision \"\$GITHUB_SHA\"",
    (
        "release.yml",
        "image-scan",
    ): r"docker export(?s:.*)gitleaks\" dir .*rootfs(?s:.*)gitleaks\" dir .*metadata",
}
MAIN_ONLY = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
# The only jobs that may write anything: packages, to push and tag images.
WRITERS = {("ci.yml", "push"), ("ci.yml", "staging-latest"), ("release.yml", "promote")}
PIN = re.compile(
    r"^(?P<action>[\w.-]+/[\w.-]+(?:/[\w./-]+)?)@(?P<sha>[0-9a-f]{40}) # (?P<version>v\d+\.\d+\.\d+)$"
)
UNTRUSTED = re.compile(r"github\.event\.|github\.head_ref|inputs\.|github\.event_path")
MAX_CREDENTIAL_SECONDS = 3600


def workflows() -> dict[str, dict]:
    return {name: load(name) for name in FILES}


def texts() -> dict[str, str]:
    return {name: (WORKFLOWS / name).read_text() for name in FILES}


# --- reading jobs ------------------------------------------------------------------------------


def needs(job: dict) -> list[str]:
    found = job.get("needs", [])
    return [found] if isinstance(found, str) else list(found)


def upstream(wf: dict, job_id: str) -> set[str]:
    """Every job `job_id` waits for, directly or not."""
    seen: set[str] = set()
    todo = needs(wf["jobs"][job_id])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(needs(wf["jobs"].get(current, {})))
    return seen


def environment_of(job: dict) -> str | None:
    env = job.get("environment")
    return env.get("name") if isinstance(env, dict) else env


def deploy_jobs(wf: dict) -> list[str]:
    return [job_id for job_id, job in wf["jobs"].items() if environment_of(job)]


def scripts(job: dict) -> list[str]:
    return [step["run"] for step in job.get("steps", []) if "run" in step]


def job_text(job: dict) -> str:
    """The job's scripts and actions, one a line, for the role checks."""
    parts = scripts(job) + [step["uses"] for step in job.get("steps", []) if "uses" in step]
    return "\n".join(parts)


def commands(script: str) -> list[list[str]]:
    """The script's commands as argument lists (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


# --- the checks --------------------------------------------------------------------------------


def trigger_problems(name: str, wf: dict) -> list[str]:
    on = triggers(wf)
    problems = [
        f"{name}: {bad} is never a trigger here"
        for bad in ("pull_request_target", "workflow_run")
        if bad in on
    ]
    expected = {
        "ci.yml": {"pull_request": None, "push": {"branches": ["main"]}},
        "release.yml": {"push": {"tags": ["v*.*.*"]}},
        "online.yml": {"workflow_dispatch": None},
    }
    if name in expected and on != expected[name]:
        problems.append(f"{name}: triggers {on}, expected {expected[name]}")
    if name == "rollback.yml":
        inputs = (on.get("workflow_dispatch") or {}).get("inputs", {})
        if set(on) != {"workflow_dispatch"}:
            problems.append(f"rollback.yml: triggers {sorted(on)}")
        environment = inputs.get("environment", {})
        if environment.get("type") != "choice" or environment.get("options") != ["staging", "production"]:
            problems.append("rollback.yml: input environment must be a choice of staging, production")
        if not environment.get("required") or (inputs.get("revision") or {}).get("required", True):
            problems.append("rollback.yml: environment is required, revision optional")
    return problems


def gate_problems(name: str, wf: dict) -> list[str]:
    problems = []
    jobs = wf["jobs"]
    for deploy in deploy_jobs(wf):
        if name not in REQUIRED_BEFORE_DEPLOY:
            continue
        before = upstream(wf, deploy)
        missing = REQUIRED_BEFORE_DEPLOY[name] - before
        if missing:
            problems.append(f"{name}: {deploy} may run without {sorted(missing)}")
        for job_id in {deploy} | before:
            condition = str(jobs.get(job_id, {}).get("if", ""))
            if re.search(r"always\(\)|failure\(\)|cancelled\(\)", condition):
                problems.append(f"{name}: {job_id} runs even when what it needs failed: if: {condition}")
    for (file, job_id), pattern in JOB_DOES.items():
        if file == name and not re.search(pattern, job_text(jobs.get(job_id, {})), re.M):
            problems.append(f"{name}: job {job_id} does not do its part ({pattern})")
    if name == "ci.yml":
        for job_id in ("push", "image-scan", "staging-latest", "deploy-staging"):
            if jobs[job_id].get("if") != MAIN_ONLY:
                problems.append(f"ci.yml: {job_id} must run only on pushes to main (if: {MAIN_ONLY})")
    return problems


def tag_problems(name: str, wf: dict) -> list[str]:
    """The tags each image gets: the commit SHA, staging-latest, the version, production."""
    wanted = {
        "ci.yml": {
            "push": [
                [
                    "python3",
                    "scripts/registry.py",
                    "*",
                    "retry",
                    "--registry",
                    "ghcr.io",
                    "--",
                    "docker",
                    "push",
                    "$IMAGE_PREFIX/todo-$SERVICE:$GITHUB_SHA",
                ]
            ],
            "staging-latest": [
                [
                    "python3",
                    "scripts/registry.py",
                    "promote",
                    "--revision",
                    "$GITHUB_SHA",
                    "$IMAGE_PREFIX/todo-$service:$GITHUB_SHA",
                    "staging-latest",
                ]
            ],
        },
        "release.yml": {
            "promote": [
                [
                    "python3",
                    "scripts/registry.py",
                    "promote",
                    "--revision",
                    "$GITHUB_SHA",
                    "$IMAGE_PREFIX/todo-$SERVICE:$GITHUB_SHA",
                    "$GITHUB_REF_NAME",
                    "production",
                ]
            ],
        },
    }
    problems = []
    for job_id, expected in wanted.get(name, {}).items():
        found = [
            c for s in scripts(wf["jobs"].get(job_id, {})) for c in commands(s) if "scripts/registry.py" in c
        ]
        for command in expected:
            if not any(_matches(command, have) for have in found):
                problems.append(f"{name}: {job_id} does not run {' '.join(command)} (has {found})")
    if name == "ci.yml":
        for job_id in ("images", "push"):
            tags = [
                s["with"]["tags"]
                for s in wf["jobs"][job_id]["steps"]
                if "build-push-action" in s.get("uses", "")
            ]
            if not tags or not all(t.endswith(":${{ github.sha }}") for t in tags):
                problems.append(f"ci.yml: {job_id} must build the image tagged with the commit SHA")
    return problems


def _matches(expected: list[str], have: list[str]) -> bool:
    """`have` is `expected`, where "*" in expected stands for any run of arguments."""
    pattern = "\x00".join(re.escape(a) if a != "*" else ".*" for a in expected)
    return re.fullmatch(pattern, "\x00".join(have)) is not None


def permission_problems(name: str, wf: dict) -> list[str]:
    problems = [] if wf.get("permissions") == {} else [f"{name}: top-level permissions must be {{}}"]
    for job_id, job in wf["jobs"].items():
        granted = job.get("permissions")
        if not isinstance(granted, dict):
            problems.append(f"{name}: {job_id} must list its permissions (got {granted!r})")
            continue
        for scope, level in granted.items():
            if level not in ("read", "none", "write"):
                problems.append(f"{name}: {job_id}: {scope}: {level}")
            if level == "write" and (scope != "packages" or (name, job_id) not in WRITERS):
                problems.append(f"{name}: {job_id} may not write {scope}")
            if scope == "id-token":
                problems.append(f"{name}: {job_id} asks for an OIDC token it does not use")
        if environment_of(job) and granted.get("packages") == "write":
            problems.append(f"{name}: {job_id} deploys and writes packages: keep those apart")
    return problems


def concurrency_problems(name: str, wf: dict) -> list[str]:
    problems = []
    top = wf.get("concurrency")
    if top is not None and top.get("cancel-in-progress") not in (
        False,
        "${{ github.event_name == 'pull_request' }}",
    ):
        problems.append(f"{name}: the workflow's concurrency may cancel a run on main")
    for job_id in deploy_jobs(wf):
        job = wf["jobs"][job_id]
        group = (job.get("concurrency") or {}).get("group")
        if group != f"deploy-{environment_of(job)}":
            problems.append(f"{name}: {job_id} must queue on deploy-{environment_of(job)} (group: {group})")
        if (job.get("concurrency") or {}).get("cancel-in-progress") is not False:
            problems.append(f"{name}: {job_id} must never cancel a deploy in progress")
    for job_id, job in wf["jobs"].items():
        if (job.get("concurrency") or {}).get("cancel-in-progress") not in (None, False):
            problems.append(f"{name}: {job_id} cancels in progress")
    return problems


def pin_problems(all_texts: dict[str, str]) -> list[str]:
    problems, seen = [], {}
    for name, text in all_texts.items():
        for number, line in enumerate(text.splitlines(), 1):
            found = re.match(r"^\s*(?:-\s+)?uses:\s*(.*)$", line)
            if not found:
                continue
            pinned = PIN.match(found.group(1).strip())
            if not pinned:
                problems.append(
                    f"{name}:{number}: not pinned by commit SHA with a # vX.Y.Z comment: {line.strip()}"
                )
                continue
            action, pin = pinned["action"], (pinned["sha"], pinned["version"])
            if seen.setdefault(action, pin) != pin:
                problems.append(f"{name}:{number}: {action} pinned to {pin}, elsewhere to {seen[action]}")
    return problems


def timeout_problems(name: str, wf: dict) -> list[str]:
    return [
        f"{name}: {job_id} needs timeout-minutes (1-60)"
        for job_id, job in wf["jobs"].items()
        if not (isinstance(job.get("timeout-minutes"), int) and 1 <= job["timeout-minutes"] <= 60)
    ]


def checkout_problems(name: str, wf: dict) -> list[str]:
    return [
        f"{name}: {job_id} checks out with persisted credentials"
        for job_id, job in wf["jobs"].items()
        for step in job.get("steps", [])
        if step.get("uses", "").startswith("actions/checkout@")
        and (step.get("with") or {}).get("persist-credentials") is not False
    ]


def injection_problems(name: str, wf: dict) -> list[str]:
    """No expression at all inside a script: data reaches scripts through env: only."""
    problems = []
    for job_id, job in wf["jobs"].items():
        for script in scripts(job):
            if "${{" in script:
                problems.append(f"{name}: {job_id}: an expression inside run: {script.strip()[:80]}")
            if UNTRUSTED.search(script):
                problems.append(f"{name}: {job_id}: event data or inputs named in a script")
    return problems


def secret_problems(name: str, wf: dict) -> list[str]:
    """Secrets other than the job's own GITHUB_TOKEN come from a GitHub environment only."""
    problems = []
    for job_id, job in wf["jobs"].items():
        used = set(re.findall(r"secrets\.(\w+)", yaml.safe_dump(job))) - {"GITHUB_TOKEN"}
        if used and not environment_of(job):
            problems.append(f"{name}: {job_id} reads {sorted(used)} outside a GitHub environment")
    return problems


def credential_problems(name: str, wf: dict) -> list[str]:
    """Every deploy gets its cluster credentials from doctl with an expiry no longer than an
    hour and no shorter than the job may run, in the runner's temporary folder, and removes
    them at the end whatever happened."""
    problems = []
    for job_id in deploy_jobs(wf):
        job = wf["jobs"][job_id]
        saves = [c for s in scripts(job) for c in commands(s) if _is_kubeconfig_save(c)]
        if len(saves) != 1:
            problems.append(f"{name}: {job_id} must write one kubeconfig with doctl (found {len(saves)})")
            continue
        save = saves[0]
        expiry = int(save[save.index("--expiry-seconds") + 1]) if "--expiry-seconds" in save else 0
        if not job["timeout-minutes"] * 60 <= expiry <= MAX_CREDENTIAL_SECONDS:
            problems.append(f"{name}: {job_id}: --expiry-seconds {expiry} is not within [job timeout, 1 h]")
        if not save[0].startswith("KUBECONFIG=$RUNNER_TEMP/") or save[-2:] != ["--alias", "do-todo"]:
            problems.append(f"{name}: {job_id}: the kubeconfig goes to $RUNNER_TEMP with the context do-todo")
        last = job["steps"][-1]
        if last.get("if") != "always()" or last.get("run") != 'rm -f "$RUNNER_TEMP/kubeconfig"':
            problems.append(f"{name}: {job_id} must remove the kubeconfig in a last step, if: always()")
    return problems


def _is_kubeconfig_save(command: list[str]) -> bool:
    at = command.index("doctl") if "doctl" in command else -1
    return at >= 0 and command[at + 1 : at + 5] == ["kubernetes", "cluster", "kubeconfig", "save"]


def version_problems(name: str, wf: dict) -> list[str]:
    """Versions come from versions.env (scripts/gha.py env), never written into a workflow."""
    problems = []
    wanted_inputs = {
        "actions/setup-python@": ("python-version", "${{ env.PYTHON_VERSION }}"),
        "actions/setup-go@": ("go-version", "${{ env.GO_MIN_VERSION }}"),
        "digitalocean/action-doctl@": ("version", "${{ env.DOCTL_VERSION }}"),
        "helm/kind-action@": ("version", "${{ env.KIND_VERSION }}"),
    }
    for job_id, job in wf["jobs"].items():
        loaded = False
        for step in job.get("steps", []):
            if step.get("run") == "python3 scripts/gha.py env":
                loaded = True
            for prefix, (key, value) in wanted_inputs.items():
                if step.get("uses", "").startswith(prefix) and (step.get("with") or {}).get(key) != value:
                    problems.append(f"{name}: {job_id}: {prefix} {key} must be {value}")
            used = set(re.findall(r"\benv\.([A-Z_]+)", yaml.safe_dump(step)))
            used |= {v for s in [step.get("run", "")] for v in re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", s)}
            pins = used & (set(gha.KEYS) | set(gha.DERIVED) | set(_versions()))
            if pins - set(gha.KEYS) - set(gha.DERIVED):
                problems.append(
                    f"{name}: {job_id} reads {sorted(pins - set(gha.KEYS))}: add to scripts/gha.py KEYS"
                )
            if pins and not loaded:
                problems.append(f"{name}: {job_id} reads {sorted(pins)} before `python3 scripts/gha.py env`")
    return problems


def _versions() -> dict[str, str]:
    return gha.toolchain.read_versions()


def readme_commands() -> list[list[str]]:
    """The README's ansible-playbook lines (placeholders <...> and options [...] taken out)."""
    found = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("ansible-playbook "):
            bare = re.sub(r"\s*\[[^\]]*\]", "", line.split("#")[0])
            found.append(shlex.split(re.sub(r"<[^>]*>", "@ANY@", bare)))
    return found


def _same(readme: str, workflow: str) -> bool:
    """A README token and a workflow token agree: equal, or equal once the workflow's shell
    variables ($VAR, ${VAR}) and the README's placeholders (<...>) stand for any text."""

    def pattern(token: str, variables: str) -> str:
        return ".+".join(re.escape(part) for part in re.split(variables, token))

    return bool(
        readme == workflow
        or re.fullmatch(pattern(workflow, r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"), readme)
        or re.fullmatch(pattern(readme, "@ANY@"), workflow)
    )


def readme_problems(all_workflows: dict[str, dict]) -> list[str]:
    """Each deploy job runs the README's command for its environment (more -e options may follow)."""
    jobs = {
        ("site.yml", "inventories/staging"): ("ci.yml", "deploy-staging"),
        ("site.yml", "inventories/production"): ("release.yml", "deploy-production"),
        ("playbooks/rollback.yml", "inventories/production"): ("rollback.yml", "rollback"),
    }
    problems = []
    documented = readme_commands()
    if len(documented) != len(jobs):
        problems.append(
            f"README.md documents {len(documented)} ansible-playbook commands, expected {len(jobs)}"
        )
    for readme in documented:
        name, job_id = jobs.get((readme[1], readme[readme.index("-i") + 1]), ("?", "?"))
        job = all_workflows.get(name, {}).get("jobs", {}).get(job_id, {})
        runs = [
            c[c.index("ansible-playbook") :]
            for s in scripts(job)
            for c in commands(s)
            if "ansible-playbook" in c
        ]
        if len(runs) != 1:
            problems.append(f"{name}: {job_id} must run ansible-playbook once (found {len(runs)})")
            continue
        ran = runs[0]
        if len(ran) < len(readme) or not all(_same(r, w) for r, w in zip(readme, ran, strict=False)):
            problems.append(f"{name}: {job_id} runs {' '.join(ran)}; README.md: {' '.join(readme)}")
    return problems


# --- the tests: each check on the real workflows, then on a broken copy ------------------------

PER_WORKFLOW: dict[str, Callable[[str, dict], list[str]]] = {
    "triggers": trigger_problems,
    "gates": gate_problems,
    "tags": tag_problems,
    "permissions": permission_problems,
    "concurrency": concurrency_problems,
    "timeouts": timeout_problems,
    "checkout": checkout_problems,
    "injection": injection_problems,
    "secrets": secret_problems,
    "credentials": credential_problems,
    "versions": version_problems,
}


@pytest.mark.parametrize("check", PER_WORKFLOW)
@pytest.mark.parametrize("name", FILES)
def test_the_workflows_keep_their_invariants(check, name):
    assert PER_WORKFLOW[check](name, load(name)) == []


def test_every_action_is_pinned_by_commit_sha_with_its_version():
    assert pin_problems(texts()) == []
    assert sum(text.count("uses:") for text in texts().values()) > 20


def test_the_deploy_steps_run_the_readmes_commands():
    assert readme_problems(workflows()) == []


def _step(wf: dict, job_id: str, contains: str) -> dict:
    return next(s for s in wf["jobs"][job_id]["steps"] if contains in s.get("run", "") + s.get("uses", ""))


def _drop_need(wf, job_id, need):
    wf["jobs"][job_id]["needs"] = [n for n in needs(wf["jobs"][job_id]) if n != need]


def _break_deploy_graph(wf):
    """deploy-staging waits for the push alone, and the push no longer for the tests."""
    wf["jobs"]["deploy-staging"]["needs"] = ["push"]
    _drop_need(wf, "push", "test")


BROKEN: list[tuple[str, str, Callable[[dict], object], str]] = [
    (
        "triggers",
        "ci.yml",
        lambda wf: wf.__setitem__("on", {"pull_request_target": None}),
        "pull_request_target",
    ),
    ("triggers", "release.yml", lambda wf: wf.__setitem__(True, {"push": {"tags": ["*"]}}), "triggers"),
    (
        "triggers",
        "rollback.yml",
        lambda wf: triggers(wf)["workflow_dispatch"]["inputs"]["environment"].__setitem__("type", "string"),
        "choice",
    ),
    ("gates", "ci.yml", _break_deploy_graph, "'test']"),
    (
        "gates",
        "ci.yml",
        lambda wf: wf["jobs"]["push"].__setitem__("if", f"always() && {MAIN_ONLY}"),
        "even when",
    ),
    ("gates", "ci.yml", lambda wf: wf["jobs"]["deploy-staging"].pop("if"), "only on pushes to main"),
    (
        "gates",
        "ci.yml",
        lambda wf: _step(wf, "test", "make test").__setitem__("run", "make lint"),
        "does not do",
    ),
    (
        "gates",
        "release.yml",
        lambda wf: [_drop_need(wf, job, "ci-passed") for job in ("promote", "deploy-production")],
        "without ['ci-passed']",
    ),
    (
        "tags",
        "ci.yml",
        lambda wf: _step(wf, "staging-latest", "promote").__setitem__(
            "run", _step(wf, "staging-latest", "promote")["run"].replace("staging-latest", "latest")
        ),
        "staging-latest",
    ),
    (
        "tags",
        "release.yml",
        lambda wf: _step(wf, "promote", "promote").__setitem__(
            "run", _step(wf, "promote", "promote")["run"].replace(" production", "")
        ),
        "production",
    ),
    (
        "tags",
        "ci.yml",
        lambda wf: _step(wf, "push", "build-push-action")["with"].__setitem__("tags", "todo:latest"),
        "commit SHA",
    ),
    ("permissions", "ci.yml", lambda wf: wf.__setitem__("permissions", "read-all"), "top-level"),
    (
        "permissions",
        "ci.yml",
        lambda wf: wf["jobs"]["test"].__setitem__("permissions", "write-all"),
        "must list",
    ),
    (
        "permissions",
        "release.yml",
        lambda wf: wf["jobs"]["deploy-production"]["permissions"].update(contents="write"),
        "may not write",
    ),
    (
        "permissions",
        "ci.yml",
        lambda wf: wf["jobs"]["images"]["permissions"].update(packages="write"),
        "may not write",
    ),
    (
        "concurrency",
        "release.yml",
        lambda wf: wf["jobs"]["deploy-production"].pop("concurrency"),
        "queue on deploy-production",
    ),
    (
        "concurrency",
        "ci.yml",
        lambda wf: wf["jobs"]["deploy-staging"]["concurrency"].update({"cancel-in-progress": True}),
        "never cancel",
    ),
    (
        "concurrency",
        "rollback.yml",
        lambda wf: wf["jobs"]["rollback"]["concurrency"].update(group="rollback"),
        "queue on",
    ),
    (
        "concurrency",
        "ci.yml",
        lambda wf: wf["concurrency"].update({"cancel-in-progress": True}),
        "cancel a run on main",
    ),
    ("timeouts", "online.yml", lambda wf: wf["jobs"]["kind"].pop("timeout-minutes"), "timeout-minutes"),
    (
        "checkout",
        "ci.yml",
        lambda wf: _step(wf, "lint", "actions/checkout@")["with"].pop("persist-credentials"),
        "persisted",
    ),
    (
        "injection",
        "rollback.yml",
        lambda wf: _step(wf, "rollback", "ansible-playbook").__setitem__(
            "run", "ansible-playbook playbooks/rollback.yml -e app_rollback_to=${{ inputs.revision }}"
        ),
        "expression inside run",
    ),
    (
        "injection",
        "ci.yml",
        lambda wf: _step(wf, "secret-scan", "BASE_SHA").__setitem__(
            "run", "echo $BASE_SHA github.event.before"
        ),
        "event data",
    ),
    (
        "secrets",
        "ci.yml",
        lambda wf: _step(wf, "push", "docker/login-action")["with"].update(
            {"password": "${{ secrets.DIGITALOCEAN_ACCESS_TOKEN }}"}
        ),
        "outside a GitHub environment",
    ),
    (
        "credentials",
        "release.yml",
        lambda wf: _step(wf, "deploy-production", "kubeconfig save").__setitem__(
            "run",
            _step(wf, "deploy-production", "kubeconfig save")["run"].replace(
                "--expiry-seconds 2700", "--expiry-seconds 604800"
            ),
        ),
        "expiry-seconds 604800",
    ),
    (
        "credentials",
        "ci.yml",
        lambda wf: wf["jobs"]["deploy-staging"]["steps"].pop(),
        "remove the kubeconfig",
    ),
    (
        "versions",
        "ci.yml",
        lambda wf: _step(wf, "resource-policy", "actions/setup-python@")["with"].update(
            {"python-version": "3.12"}
        ),
        "PYTHON_VERSION",
    ),
    (
        "versions",
        "rollback.yml",
        lambda wf: wf["jobs"]["rollback"]["steps"].remove(_step(wf, "rollback", "gha.py env")),
        "before `python3 scripts/gha.py env`",
    ),
]


@pytest.mark.parametrize(
    ("check", "name", "breaking", "expected"),
    BROKEN,
    ids=[f"{c}-{n}-{i}" for i, (c, n, _, _) in enumerate(BROKEN)],
)
def test_each_check_finds_what_it_is_for(check, name, breaking, expected):
    broken = copy.deepcopy(load(name))
    breaking(broken)
    problems = PER_WORKFLOW[check](name, broken)
    assert any(expected in problem for problem in problems), problems


def test_the_pin_check_finds_tags_branches_and_drift():
    real = texts()
    for bad in (
        "uses: actions/checkout@v7",
        "uses: actions/checkout@main # v7.0.1",
        "uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1",
        "uses: docker://alpine:3",
    ):
        broken = {
            **real,
            "ci.yml": real["ci.yml"].replace(
                "uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1", bad, 1
            ),
        }
        assert pin_problems(broken), bad
    drift = {**real, "online.yml": real["online.yml"].replace("# v7.0.1", "# v7.0.0", 1)}
    assert any("elsewhere" in p for p in pin_problems(drift))


def test_the_readme_check_finds_a_deploy_that_runs_something_else():
    for job, old, new in (
        (("ci.yml", "deploy-staging"), "--tags app", "--tags all"),
        (("release.yml", "deploy-production"), "inventories/production", "inventories/staging"),
        (("rollback.yml", "rollback"), "playbooks/rollback.yml", "site.yml"),
    ):
        broken = copy.deepcopy(workflows())
        step = _step(broken[job[0]], job[1], "ansible-playbook")
        step["run"] = step["run"].replace(old, new)
        assert any(job[1] in p for p in readme_problems(broken)), (job, old, new)


# --- what the graph rests on: the shards, the policy selection, the service lists --------------


def _molecule_scenarios() -> list[str]:
    """The scenarios tests/molecule/test_molecule.py parametrizes test_scenario with."""
    spec = importlib.util.spec_from_file_location(
        "molecule_tests", ROOT / "tests" / "molecule" / "test_molecule.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.SCENARIOS)


def test_the_test_shards_together_run_all_of_make_test():
    """Each Molecule scenario test_molecule.py runs has a shard; `services` takes services/;
    `platform` ignores exactly those, so every other test (and any new one) runs there. The
    matrix is scripts/gha.py's list, so a new scenario gets its shard without an edit here."""
    wf = load("ci.yml")
    assert wf["jobs"]["test"]["strategy"]["matrix"] == {
        "include": "${{ fromJSON(needs.versions.outputs.shards) }}"
    }
    assert "shards" in _step(wf, "versions", "gha.py output")["run"].split()
    assert wf["jobs"]["versions"]["outputs"]["shards"] == "${{ steps.pins.outputs.shards }}"
    assert _step(wf, "test", "make test")["env"] == {"PYTEST_ARGS": "${{ matrix.pytest-args }}"}
    shards = {entry["shard"]: entry["pytest-args"] for entry in gha.test_shards()}
    scenarios = _molecule_scenarios()
    assert scenarios
    for scenario in scenarios:
        assert (
            shards.pop(f"molecule-{scenario}")
            == f"tests/molecule/test_molecule.py::test_scenario[{scenario}]"
        )
    assert shards.pop("services") == "services"
    assert shlex.split(shards.pop("platform")) == [
        "--ignore=services",
        "--deselect=tests/molecule/test_molecule.py::test_scenario",
    ]
    assert shards == {}
    testpaths = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
        "testpaths"
    ]
    outside = [path for path in testpaths if not (path.startswith("services/") or (ROOT / path).is_dir())]
    assert outside == []


def test_the_resource_policy_job_selects_the_sc009_tests():
    """Its -k expression, evaluated the way pytest does, picks exactly the policy check on
    rendered pods and the check of that check from tests/chart/test_chart_static.py."""
    from _pytest.mark.expression import Expression

    args = shlex.split(_step(load("ci.yml"), "resource-policy", "pytest")["run"])
    assert args[args.index("pytest") + 1] == "tests/chart/test_chart_static.py"
    expression = Expression.compile(args[args.index("-k") + 1])
    module = ast.parse((ROOT / "tests" / "chart" / "test_chart_static.py").read_text())
    tests = [
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]
    picked = {
        name
        for name in tests
        if expression.evaluate(
            lambda word, name=name: word in name or word in "tests chart test_chart_static.py"
        )
    }
    assert picked == {
        "test_every_pod_has_cpu_and_memory_requests_and_limits",
        "test_the_resource_policy_catches_what_it_should",
    }


def test_service_matrices_come_from_scripts_images_py():
    expected = "${{ fromJSON(needs.versions.outputs.services) }}"
    for name, job_ids in (
        ("ci.yml", ("images", "push", "image-scan")),
        ("release.yml", ("promote", "image-scan")),
    ):
        wf = load(name)
        assert "services" in _step(wf, "versions", "gha.py output")["run"].split()
        for job_id in job_ids:
            assert wf["jobs"][job_id]["strategy"]["matrix"]["service"] == expected, (name, job_id)
            assert "versions" in needs(wf["jobs"][job_id])
    dockerfiles = sorted(p.parent.name for p in (ROOT / "services").glob("*/Dockerfile"))
    assert sorted(images.SERVICES) == dockerfiles


def test_lint_and_tests_run_on_the_pinned_debian_python_image():
    wf = load("ci.yml")
    assert wf["jobs"]["versions"]["outputs"]["ci-image"] == "${{ steps.pins.outputs.PYTHON_BASE_IMAGE }}"
    for job_id in ("lint", "test"):
        assert wf["jobs"][job_id]["container"]["image"] == "${{ needs.versions.outputs.ci-image }}"
    assert "bookworm" in _versions()["PYTHON_BASE_IMAGE"] and "@sha256:" in _versions()["PYTHON_BASE_IMAGE"]


def test_every_pin_gha_hands_out_is_used_by_a_workflow():
    everything = "\n".join(texts().values())
    unused = [key for key in gha.KEYS if key not in everything]
    assert unused == []
