"""Helpers of the delivery tests: the workflows as data, a scripted local HTTP server, the test
doubles of endpoints this machine cannot reach (GHCR in an outage or asking for a token,
GitHub's REST API), and a real CNCF Distribution registry (Debian's docker-registry).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from testkit.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPTS = ROOT / "scripts"
PYTHON = sys.executable


def run_script(
    name: str, *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """scripts/<name> as the workflows run it: its own process, the interpreter of this run."""
    return subprocess.run(
        [PYTHON, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


# --- the workflows as data -------------------------------------------------------------------


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    """`on:` (YAML 1.1 reads the bare key `on` as the boolean True)."""
    found = workflow.get("on", workflow.get(True))
    return {found: None} if isinstance(found, str) else dict(found or {})


# --- a local HTTP server answering as a test says --------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow service)


class ScriptedServer:
    """A real HTTP/1.1 server on 127.0.0.1 whose answers a function gives: respond(Seen) -> Answer.
    Every request is recorded in .seen (in order)."""

    def __init__(self, respond: Callable[[Seen], Answer]):
        self.respond = respond
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                with server.lock:
                    server.seen.append(seen)
                answer = server.respond(seen)
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if path is None or s.path.split("?")[0] == path]


def registry_outage_double() -> ScriptedServer:
    """Test double of GHCR in an outage: every request, the API root included, answers 503."""
    return ScriptedServer(lambda seen: Answer(503, b'{"errors":[{"code":"UNAVAILABLE"}]}'))


class GhcrTokenDouble(ScriptedServer):
    """Test double of GHCR's token flow (GHCR is not reachable here): /v2/ answers 401 with a
    Bearer challenge until a request carries the token that /token hands out for the right
    Basic credentials; then it serves one manifest, and takes manifest PUTs."""

    def __init__(self, username: str, password: str, manifest: bytes):
        self.token = secrets.token_hex(16)
        self.credentials = (username, password)
        self.manifest = manifest
        self.stored: dict[str, bytes] = {}
        super().__init__(self._answer)

    def _answer(self, seen: Seen) -> Answer:
        import base64
        import hashlib

        if seen.path.startswith("/token"):
            expected = base64.b64encode(":".join(self.credentials).encode()).decode()
            if seen.headers.get("Authorization") != f"Basic {expected}":
                return Answer(401, b'{"errors":[{"code":"DENIED"}]}')
            return Answer(200, json.dumps({"token": self.token}).encode())
        if seen.headers.get("Authorization") != f"Bearer {self.token}":
            scope = "repository:todo/api:pull,push" if seen.method == "PUT" else "repository:todo/api:pull"
            challenge = f'Bearer realm="{self.url}/token",service="ghcr-double",scope="{scope}"'
            return Answer(401, b"", {"WWW-Authenticate": challenge})
        media = "application/vnd.oci.image.manifest.v1+json"
        digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        if seen.method == "PUT":
            self.stored[seen.path.rsplit("/", 1)[1]] = seen.body
            return Answer(
                201, b"", {"Docker-Content-Digest": "sha256:" + hashlib.sha256(seen.body).hexdigest()}
            )
        if seen.path.startswith("/v2/todo/api/manifests/"):
            return Answer(200, self.manifest, {"Content-Type": media, "Docker-Content-Digest": digest})
        return Answer(404)


class GitHubApiDouble(ScriptedServer):
    """Test double of GitHub's REST API (not reachable here): the workflow-runs listing answers
    with the next of `pages` each time it is asked (the last one repeats)."""

    def __init__(self, pages: list[list[dict]], status: int = 200):
        self.pages = pages
        self.status = status
        super().__init__(self._answer)

    def _answer(self, seen: Seen) -> Answer:
        if self.status != 200:
            return Answer(self.status, b'{"message":"Bad credentials"}')
        asked = len(self.requests()) - 1
        runs = self.pages[min(asked, len(self.pages) - 1)]
        return Answer(200, json.dumps({"total_count": len(runs), "workflow_runs": runs}).encode())


# --- a real registry -------------------------------------------------------------------------

REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


class Distribution:
    """CNCF Distribution (Debian's docker-registry 2.8): the reference implementation of the
    registry API GHCR serves. Plain HTTP on 127.0.0.1, storage in a folder of the test."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = root
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = root / "storage"
        self.proc: subprocess.Popen | None = None
        self.log = None

    def start(self) -> Distribution:
        assert Path(REGISTRY_BINARY).is_file(), "docker-registry is missing: run `make system-deps`"
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        (self.root / "config.yml").write_text(yaml.safe_dump(config))
        self.log = (self.root / "registry.log").open("ab")
        command = [REGISTRY_BINARY, "serve", str(self.root / "config.yml")]
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=self.log)
        from testkit.procs import http_status

        wait_until(
            lambda: http_status(f"http://{self.host}/v2/") == 200, 30, f"docker-registry on {self.host}"
        )
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()

    def blobs(self) -> set[str]:
        """The blob files the registry stores (a push adds some; a retag must not)."""
        base = self.storage / "docker" / "registry" / "v2" / "blobs"
        return {str(p.relative_to(base)) for p in base.rglob("data")}


@contextlib.contextmanager
def distribution(root: Path, port: int | None = None) -> Iterator[Distribution]:
    root.mkdir(parents=True, exist_ok=True)
    registry = Distribution(root, port)
    try:
        yield registry.start()
    finally:
        registry.stop()
