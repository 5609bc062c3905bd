"""scripts/registry.py, the workflows' registry steps: push with retries and backoff, and the
promotion of a tested image to a version and `production` by digest, without rebuilding.

GHCR is not reachable here. Its place is taken by the reference implementation of the same
registry API, CNCF Distribution (Debian's docker-registry), with podman pushing real images to
it; test doubles stand only for what a real registry will not do on request: an outage that
answers 503 to everything (registry_outage_double) and GHCR's token flow (GhcrTokenDouble).
The backoff arithmetic is checked as pure logic (unit, L0); the rest runs real processes
against real servers on loopback (integration; no cluster involved)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import secrets
import subprocess
import tarfile
import uuid

import pytest
from wf_testlib import (
    PYTHON,
    SCRIPTS,
    Answer,
    GhcrTokenDouble,
    ScriptedServer,
    distribution,
    registry_outage_double,
    run_script,
)

from testkit.procs import free_port

registry = importlib.import_module("registry")  # scripts/registry.py (testkit puts scripts/ on sys.path)
images = importlib.import_module("images")

PODMAN = list(images.PODMAN)
MANIFEST_ACCEPT = ", ".join(registry.MANIFEST_TYPES)


def _sha() -> str:
    return secrets.token_hex(20)


def _registry(*args: str, env: dict | None = None):
    return run_script("registry.py", "--plain-http", *args, env={**os.environ, **(env or {})})


def _manifest_digest(host: str, name: str, reference: str) -> str | None:
    """The digest a tag names, read with plain HTTP (independently of the script under test)."""
    import httpx

    answer = httpx.get(f"http://{host}/v2/{name}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    return "sha256:" + hashlib.sha256(answer.content).hexdigest()


@pytest.fixture
def local_image(tmp_path):
    """A small image of podman's, labelled as built from a fresh commit: (reference, commit)."""

    def make(revision: str) -> str:
        rootfs = tmp_path / f"rootfs-{revision[:8]}"
        rootfs.mkdir()
        (rootfs / "revision.txt").write_text(revision)
        archive = tmp_path / f"{revision[:8]}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        ref = f"localhost/todo-registry-test:{revision[:12]}-{uuid.uuid4().hex[:6]}"
        label = f"LABEL {registry.REVISION_LABEL}={revision}"
        subprocess.run(
            [*PODMAN, "import", "--change", label, str(archive), ref], check=True, capture_output=True
        )
        made.append(ref)
        return ref

    made: list[str] = []
    yield make
    for ref in made:
        subprocess.run([*PODMAN, "rmi", "--force", ref], check=False, capture_output=True)


def _podman_push(local: str, remote: str) -> list[str]:
    return [*PODMAN, "push", "--quiet", "--tls-verify=false", local, remote]


@pytest.fixture
def real_registry(tmp_path):
    with distribution(tmp_path / "registry") as found:
        yield found


# -- unit: backoff and references (L0) --------------------------------------------------------


@pytest.mark.unit
def test_backoff_doubles_from_the_first_delay_up_to_the_cap_spread_over_its_upper_half():
    backoff = registry.Backoff(attempts=6, delay=2, max_delay=10)
    for attempt, full in [(1, 2), (2, 4), (3, 8), (4, 10), (5, 10)]:
        pauses = [backoff.pause(attempt) for _ in range(200)]
        assert full / 2 <= min(pauses) and max(pauses) <= full
    assert backoff.pause(1, floor=7) == 7  # a Retry-After above the backoff wins, within the cap
    assert backoff.pause(1, floor=99) == 10


@pytest.mark.unit
def test_with_retries_gives_up_after_the_attempts_and_says_why():
    slept: list[float] = []
    answers = iter([registry.http_call.Response(503, {}, b"", "u")] * 3)
    with pytest.raises(registry.Unavailable, match="HTTP 503 after 3 attempts"):
        registry.with_retries("GET u", lambda: next(answers), registry.Backoff(3, 1, 8), sleep=slept.append)
    assert len(slept) == 2 and 0.5 <= slept[0] <= 1 and 1 <= slept[1] <= 2


@pytest.mark.unit
def test_with_retries_returns_the_first_answer_that_is_not_an_outage():
    answers = iter(
        [
            registry.http_call.Response(502, {}, b"", "u"),
            registry.http_call.Response(404, {}, b"", "u"),
            registry.http_call.Response(200, {}, b"", "u"),
        ]
    )
    got = registry.with_retries(
        "GET u", lambda: next(answers), registry.Backoff(5, 0, 0), sleep=lambda _: None
    )
    assert got.status == 404  # a 404 is an answer, not an outage


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("ghcr.io/todo-cloud/todo-api:0123abc", ("ghcr.io", "todo-cloud/todo-api", "0123abc")),
        ("127.0.0.1:5000/todo/api:v1.2.3", ("127.0.0.1:5000", "todo/api", "v1.2.3")),
        ("ghcr.io/o/n@sha256:" + "a" * 64, ("ghcr.io", "o/n", "sha256:" + "a" * 64)),
    ],
)
def test_references(text, parsed):
    ref = registry.parse_ref(text)
    assert (ref.host, ref.name, ref.reference) == parsed
    assert str(ref) == text


@pytest.mark.unit
@pytest.mark.parametrize("text", ["todo-api:1", "ghcr.io/Todo/API:1", "ghcr.io/o/n@sha256:short"])
def test_references_that_are_refused(text):
    with pytest.raises(SystemExit):
        registry.parse_ref(text)


# -- promote: a real registry (CNCF Distribution) ---------------------------------------------


@pytest.mark.integration
def test_promote_adds_the_version_and_production_by_digest_without_moving_a_layer(real_registry, local_image):
    commit = _sha()
    source = f"{real_registry.host}/todo/api:{commit}"
    subprocess.run(_podman_push(local_image(commit), source), check=True, capture_output=True)
    digest = _manifest_digest(real_registry.host, "todo/api", commit)
    blobs = real_registry.blobs()

    result = _registry("promote", "--revision", commit, source, "v1.2.3", "production")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "image": f"{real_registry.host}/todo/api",
        "digest": digest,
        "tags": ["v1.2.3", "production"],
    }
    for tag in ("v1.2.3", "production"):
        assert _manifest_digest(real_registry.host, "todo/api", tag) == digest
    assert real_registry.blobs() == blobs  # nothing rebuilt or uploaded: the same layers, retagged
    again = _registry("promote", "--revision", commit, source, "v1.2.3", "production")
    assert again.returncode == 0, again.stderr  # a re-run of the release changes nothing
    digest_cmd = _registry("digest", f"{real_registry.host}/todo/api:v1.2.3")
    assert digest_cmd.stdout.strip() == digest


@pytest.mark.integration
def test_promote_refuses_an_image_built_from_another_commit(real_registry, local_image):
    commit, tagged = _sha(), _sha()
    source = f"{real_registry.host}/todo/web:{tagged}"
    subprocess.run(_podman_push(local_image(commit), source), check=True, capture_output=True)

    result = _registry("promote", "--revision", tagged, source, "v2.0.0", "production")

    assert result.returncode == 1
    assert f"was built from {commit}, not {tagged}" in result.stderr
    assert _manifest_digest(real_registry.host, "todo/web", "v2.0.0") is None
    assert _manifest_digest(real_registry.host, "todo/web", "production") is None


@pytest.mark.integration
def test_a_version_never_moves_but_production_does(real_registry, local_image):
    first, second = _sha(), _sha()
    for commit in (first, second):
        remote = f"{real_registry.host}/todo/notifier:{commit}"
        subprocess.run(_podman_push(local_image(commit), remote), check=True, capture_output=True)
    ok = _registry("promote", f"{real_registry.host}/todo/notifier:{first}", "v1.0.0", "production")
    assert ok.returncode == 0, ok.stderr
    first_digest = _manifest_digest(real_registry.host, "todo/notifier", first)

    moved = _registry("promote", f"{real_registry.host}/todo/notifier:{second}", "v1.0.0")
    assert moved.returncode == 1
    assert "a version never moves" in moved.stderr
    assert _manifest_digest(real_registry.host, "todo/notifier", "v1.0.0") == first_digest

    floating = _registry("promote", f"{real_registry.host}/todo/notifier:{second}", "production")
    assert floating.returncode == 0, floating.stderr
    second_digest = _manifest_digest(real_registry.host, "todo/notifier", second)
    assert _manifest_digest(real_registry.host, "todo/notifier", "production") == second_digest


@pytest.mark.integration
def test_promote_missing_image_says_so(real_registry):
    result = _registry("promote", f"{real_registry.host}/todo/api:{_sha()}", "v9.9.9")
    assert result.returncode == 1
    assert "no manifest" in result.stderr


# -- retry: pushes through an outage ----------------------------------------------------------


@pytest.mark.integration
def test_a_push_waits_for_a_registry_that_comes_back(tmp_path, local_image):
    """The registry is down when the push starts (nothing listens), comes up after two failed
    attempts, and the push then lands: exit 0, the image in the registry."""
    commit = _sha()
    port = free_port()
    local = local_image(commit)
    command = [
        *(PYTHON, str(SCRIPTS / "registry.py"), "--plain-http"),
        *("--attempts", "30", "--delay", "0.2", "--max-delay", "0.5"),
        *("retry", "--registry", f"127.0.0.1:{port}", "--"),
        *_podman_push(local, f"127.0.0.1:{port}/todo/gateway:{commit}"),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        assert proc.stderr is not None
        while sum("unavailable" in line for line in lines) < 2:
            line = proc.stderr.readline()
            assert line, "retry ended before the registry came back:\n" + "".join(lines)
            lines.append(line)
        with distribution(tmp_path / "late-registry", port=port) as late:
            rest = proc.communicate(timeout=120)[1]
            assert proc.returncode == 0, "".join(lines) + rest
            assert _manifest_digest(late.host, "todo/gateway", commit) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_a_registry_answering_503_stops_the_push_after_the_attempts(local_image):
    """The chain stops here: non-zero exit after the attempts, the push never started."""
    commit = _sha()
    with registry_outage_double() as outage:
        result = _registry(
            *("--attempts", "3", "--delay", "0.05", "--max-delay", "0.1"),
            *("retry", "--registry", outage.host, "--"),
            *_podman_push(local_image(commit), f"{outage.host}/todo/api:{commit}"),
        )
        seen = [(s.method, s.path) for s in outage.requests()]
    assert result.returncode == 1
    assert "giving up after 3 attempts" in result.stderr and "HTTP 503" in result.stderr
    assert seen == [("GET", "/v2/")] * 3  # asked three times, pushed nothing


@pytest.mark.integration
def test_a_failing_command_is_retried_too():
    """The registry's root answers but the operation fails every time: the command runs once
    per attempt (here a real registry client, `registry.py digest`, against the outage double
    answering 200 at /v2/ and 503 elsewhere)."""

    def respond(seen):
        return Answer(200, b"{}") if seen.path == "/v2/" else Answer(503)

    with ScriptedServer(respond) as flaky:
        result = _registry(
            *("--attempts", "3", "--delay", "0.05", "--max-delay", "0.1"),
            *("retry", "--registry", flaky.host, "--"),
            *(PYTHON, str(SCRIPTS / "registry.py")),
            *("--plain-http", "--attempts", "1", "digest", f"{flaky.host}/todo/api:latest"),
        )
        manifests = [s for s in flaky.requests() if "/manifests/" in s.path]
    assert result.returncode == 1
    assert len(manifests) == 3
    assert "giving up after 3 attempts" in result.stderr


@pytest.mark.integration
def test_promote_through_an_outage_gives_up_after_the_attempts():
    with registry_outage_double() as outage:
        result = _registry(
            *("--attempts", "4", "--delay", "0.05", "--max-delay", "0.1"),
            *("promote", f"{outage.host}/todo/api:{_sha()}", "v1.0.0"),
        )
        seen = outage.requests()
    assert result.returncode == 1
    assert "HTTP 503 after 4 attempts" in result.stderr
    assert len(seen) == 4


# -- GHCR's token flow (test double) ----------------------------------------------------------


@pytest.mark.integration
def test_the_token_flow_sends_the_credentials_only_to_the_token_endpoint_and_never_prints_them():
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
    ).encode()
    password = secrets.token_urlsafe(24)
    env = {"REGISTRY_USERNAME": "ci-bot", "REGISTRY_PASSWORD": password}
    with GhcrTokenDouble("ci-bot", password, manifest) as ghcr:
        result = _registry("promote", f"{ghcr.host}/todo/api:abc", "production", env=env)
        basic = [s for s in ghcr.requests() if s.headers.get("Authorization", "").startswith("Basic")]
        stored = dict(ghcr.stored)
    assert result.returncode == 0, result.stderr
    assert {s.path.split("?")[0] for s in basic} == {"/token"}
    assert stored == {"production": manifest}
    assert password not in result.stdout + result.stderr
    assert json.loads(result.stdout)["digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()


@pytest.mark.integration
def test_wrong_credentials_are_a_clear_failure():
    manifest = b'{"schemaVersion": 2}'
    env = {"REGISTRY_USERNAME": "ci-bot", "REGISTRY_PASSWORD": "wrong-" + secrets.token_hex(4)}
    with GhcrTokenDouble("ci-bot", secrets.token_hex(8), manifest) as ghcr:
        result = _registry("digest", f"{ghcr.host}/todo/api:abc", env=env)
    assert result.returncode == 1
    assert "refused a token (HTTP 401)" in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize("script", ["registry.py", "synthetic_check.py", "gha.py"])
def test_nothing_is_needed_but_the_standard_library(script, tmp_path):
    """The workflows run these scripts on a bare runner, before any Python environment exists:
    without site-packages (-S), the environment's settings (-E) or user packages (-s) they load.
    (-B: no __pycache__ left in scripts/.)"""
    probe = subprocess.run(
        [PYTHON, "-B", "-S", "-E", "-s", str(SCRIPTS / script), "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
