#!/usr/bin/env python3
"""Container registry steps of the delivery workflows (GHCR), with retries and backoff.

    registry.py retry --registry HOST [--attempts N] [--delay S] [--max-delay S] -- COMMAND ...
        Run COMMAND (`docker push ...`) once the registry answers, and again, after an
        exponential backoff, while the registry is unavailable or the command fails. Exits
        non-zero when the attempts run out: the workflow stops there, before any deploy.
    registry.py digest REF
        The digest (sha256:...) of the manifest REF names.
    registry.py promote SOURCE TAG [TAG ...] [--revision SHA]
        Point each TAG at the image SOURCE names, by digest and without rebuilding: the
        manifest's bytes are read once and put under each tag (the registry's own retag; no
        layer moves), and every tag is then checked to resolve to the same digest. With
        --revision, the image must carry the label org.opencontainers.image.revision=SHA
        (scripts/images.py sets it). A version tag (v1.2.3) that names another image already
        is never moved; floating tags (production, staging-latest) are.

REF is HOST/NAME:TAG or HOST/NAME@sha256:.... Every registry request is retried the same way
on connection errors and on 429/5xx answers. Credentials come from the environment,
REGISTRY_USERNAME and REGISTRY_PASSWORD (GHCR: the actor and GITHUB_TOKEN), never from
arguments; token (Bearer) and Basic challenges are both answered. --plain-http talks HTTP
to a local registry (the tests' CNCF Distribution).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import http_call

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
# Release versions never move once they name an image (floating tags do).
VERSION_TAG = re.compile(r"v\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
REVISION_LABEL = "org.opencontainers.image.revision"
_JITTER = secrets.SystemRandom()


def log(message: str) -> None:
    print(f"registry: {message}", file=sys.stderr, flush=True)


class RegistryError(Exception):
    """A registry refused or failed a request, for good (after the retries)."""


class Unavailable(RegistryError):
    """The registry did not answer, or answered 429/5xx, every time it was asked."""


# --- backoff ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    attempts: int = 5
    delay: float = 2.0  # before the second attempt; doubles each time
    max_delay: float = 60.0

    def pause(self, failed_attempt: int, floor: float = 0.0) -> float:
        """Seconds to wait after the n-th failed attempt (1-based): delay * 2**(n-1), capped,
        and spread over its upper half so parallel jobs do not retry in step."""
        full = min(self.max_delay, self.delay * 2 ** (failed_attempt - 1))
        return min(self.max_delay, max(floor, full / 2 + _JITTER.uniform(0, full / 2)))


def with_retries(what: str, call: Callable[[], http_call.Response], backoff: Backoff, sleep=time.sleep):
    """call() until it answers something other than 429/5xx; Unavailable after backoff.attempts."""
    reason = ""
    for attempt in range(1, backoff.attempts + 1):
        retry_after = 0.0
        try:
            answer = call()
        except http_call.ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if answer.status not in RETRYABLE:
                return answer
            reason = f"HTTP {answer.status}"
            retry_after = _seconds(answer.headers.get("retry-after", ""))
        if attempt == backoff.attempts:
            break
        pause = backoff.pause(attempt, retry_after)
        log(f"{what}: {reason} (attempt {attempt}/{backoff.attempts}); again in {pause:.1f}s")
        sleep(pause)
    raise Unavailable(f"{what}: {reason} after {backoff.attempts} attempts")


def _seconds(value: str) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


# --- references ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    host: str
    name: str
    reference: str  # a tag, or a digest (sha256:...)

    @property
    def is_digest(self) -> bool:
        return self.reference.startswith("sha256:")

    def __str__(self) -> str:
        return f"{self.host}/{self.name}{'@' if self.is_digest else ':'}{self.reference}"


def parse_ref(text: str) -> Ref:
    host, _, rest = text.partition("/")
    if not rest or not ("." in host or ":" in host or host == "localhost"):
        raise SystemExit(f"registry: {text!r} must name its registry (ghcr.io/OWNER/NAME:TAG)")
    if "@" in rest:
        name, _, reference = rest.partition("@")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", reference):
            raise SystemExit(f"registry: {text!r}: not a sha256 digest")
    else:
        name, _, reference = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
    if not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", name):
        raise SystemExit(f"registry: {text!r}: repository names are lower case")
    return Ref(host, name, reference)


# --- the client ------------------------------------------------------------------------------


class Registry:
    """The OCI distribution API of one registry: manifests by tag or digest, blobs, auth."""

    def __init__(self, host: str, *, plain_http: bool = False, backoff: Backoff | None = None):
        self.host = host
        self.base = f"{'http' if plain_http else 'https'}://{host}"
        self.backoff = backoff or Backoff()
        self.username = os.environ.get("REGISTRY_USERNAME", "")
        self.password = os.environ.get("REGISTRY_PASSWORD", "")
        self.authorization = ""

    # -- requests

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> http_call.Response:
        url = self.base + path

        def send() -> http_call.Response:
            sent = dict(headers or {})
            if self.authorization:
                sent["Authorization"] = self.authorization
            return http_call.request(method, url, headers=sent, body=body)

        answer = with_retries(f"{method} {url}", send, self.backoff)
        if answer.status == 401 and self._authenticate(answer.headers.get("www-authenticate", "")):
            answer = with_retries(f"{method} {url}", send, self.backoff)
        return answer

    def _authenticate(self, challenge: str) -> bool:
        """Answer a 401's challenge; False when there is nothing (new) to answer it with."""
        scheme, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if scheme.lower() == "basic":
            if not self.username or self.authorization == f"Basic {basic}":
                return False
            self.authorization = f"Basic {basic}"
            return True
        if scheme.lower() != "bearer" or "realm" not in fields:
            return False
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
        realm = fields["realm"] + ("&" if "?" in fields["realm"] else "?") + query
        headers = {"Authorization": f"Basic {basic}"} if self.username else {}
        answer = with_retries(
            f"token from {fields['realm']}",
            lambda: http_call.request("GET", realm, headers=headers),
            self.backoff,
        )
        if answer.status != 200:
            raise RegistryError(
                f"the registry refused a token (HTTP {answer.status}); check REGISTRY_USERNAME/PASSWORD"
            )
        token = json.loads(answer.body)
        bearer = f"Bearer {token.get('token') or token.get('access_token')}"
        if bearer == self.authorization:
            return False
        self.authorization = bearer
        return True

    # -- manifests and blobs

    def manifest(self, name: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest; the digest is computed from the bytes."""
        answer = self.request(
            "GET", f"/v2/{name}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if answer.status == 404:
            raise RegistryError(f"{self.host}/{name}: no manifest {reference}")
        if answer.status != 200:
            raise RegistryError(f"GET manifest {self.host}/{name}:{reference}: HTTP {answer.status}")
        digest = "sha256:" + hashlib.sha256(answer.body).hexdigest()
        said = answer.headers.get("docker-content-digest")
        if said and said != digest:
            raise RegistryError(
                f"{self.host}/{name}:{reference}: the registry says {said}, the bytes are {digest}"
            )
        media_type = answer.headers.get("content-type", "").split(";")[0].strip()
        return answer.body, media_type or json.loads(answer.body).get("mediaType", ""), digest

    def digest(self, name: str, reference: str) -> str | None:
        """The digest a tag names now, or None when the tag does not exist."""
        answer = self.request(
            "HEAD", f"/v2/{name}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise RegistryError(f"HEAD manifest {self.host}/{name}:{reference}: HTTP {answer.status}")
        return answer.headers.get("docker-content-digest") or self.manifest(name, reference)[2]

    def put_manifest(self, name: str, tag: str, body: bytes, media_type: str) -> str:
        answer = self.request(
            "PUT", f"/v2/{name}/manifests/{tag}", headers={"Content-Type": media_type}, body=body
        )
        if answer.status not in (200, 201):
            detail = answer.body[:300].decode(errors="replace")
            raise RegistryError(f"PUT {self.host}/{name}:{tag}: HTTP {answer.status} {detail}")
        return answer.headers.get("docker-content-digest", "")

    def blob(self, name: str, digest: str) -> bytes:
        """A blob, through the redirect registries answer with (GHCR: a CDN), whose host gets
        no credentials of ours; checked against its digest."""
        answer = self.request("GET", f"/v2/{name}/blobs/{digest}")
        for _ in range(3):
            if answer.status not in (301, 302, 303, 307, 308):
                break
            location = urllib.parse.urljoin(
                f"{self.base}/v2/{name}/blobs/{digest}", answer.headers["location"]
            )
            answer = with_retries(
                f"GET {location}", lambda u=location: http_call.request("GET", u), self.backoff
            )
        if answer.status != 200:
            raise RegistryError(f"GET blob {self.host}/{name}@{digest}: HTTP {answer.status}")
        if "sha256:" + hashlib.sha256(answer.body).hexdigest() != digest:
            raise RegistryError(f"blob {digest} of {self.host}/{name} does not match its digest")
        return answer.body

    def labels(self, name: str, body: bytes, media_type: str) -> dict[str, str]:
        """The image configuration's labels (of the linux/amd64 image of an index)."""
        document = json.loads(body)
        if media_type in INDEX_TYPES:
            images = [
                m
                for m in document.get("manifests", [])
                if (m.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"
            ]
            chosen = next(
                (m for m in images if (m.get("platform") or {}).get("architecture") == "amd64"),
                images[0] if images else None,
            )
            if chosen is None:
                raise RegistryError(f"{self.host}/{name}: the index lists no image")
            body, media_type, _ = self.manifest(name, chosen["digest"])
            document = json.loads(body)
        config = json.loads(self.blob(name, document["config"]["digest"]))
        return (config.get("config") or {}).get("Labels") or {}


# --- commands --------------------------------------------------------------------------------


def probe(registry: Registry) -> str:
    """ "" when the registry answers its API root (200, or 401: it is up and wants a login);
    else why not. One request, no retries: `retry` does the waiting."""
    try:
        answer = http_call.request("GET", f"{registry.base}/v2/", timeout=15)
    except http_call.ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return "" if answer.status in (200, 401) else f"HTTP {answer.status}"


def retry(command: list[str], registry: Registry | None, backoff: Backoff, sleep=time.sleep) -> int:
    started = time.monotonic()
    reason = ""
    for attempt in range(1, backoff.attempts + 1):
        reason = probe(registry) if registry else ""
        if reason:
            reason = f"registry {registry.host} unavailable ({reason})"
        else:
            code = subprocess.run(command, check=False).returncode
            if code == 0:
                if attempt > 1:
                    log(f"{command[0]} succeeded at attempt {attempt}/{backoff.attempts}")
                return 0
            reason = f"{' '.join(command[:2])} exited {code}"
        if attempt == backoff.attempts:
            break
        pause = backoff.pause(attempt)
        log(f"attempt {attempt}/{backoff.attempts}: {reason}; retrying in {pause:.1f}s")
        sleep(pause)
    log(f"giving up after {backoff.attempts} attempts in {time.monotonic() - started:.0f}s: {reason}")
    return 1


def promote(source: Ref, tags: list[str], registry: Registry, revision: str = "") -> dict:
    for tag in tags:
        if not TAG.fullmatch(tag):
            raise SystemExit(f"registry: {tag!r} is not a valid tag")
    body, media_type, digest = registry.manifest(source.name, source.reference)
    if source.is_digest and digest != source.reference:
        raise RegistryError(f"{source}: the registry served {digest}")
    if revision:
        built_from = registry.labels(source.name, body, media_type).get(REVISION_LABEL, "")
        if built_from != revision:
            raise RegistryError(
                f"{source} ({digest}) was built from {built_from or 'an unknown revision'}, not {revision}"
            )
    for tag in tags:
        if VERSION_TAG.fullmatch(tag):
            current = registry.digest(source.name, tag)
            if current not in (None, digest):
                raise RegistryError(
                    f"{registry.host}/{source.name}:{tag} names {current} already; a version never moves"
                )
    for tag in tags:
        said = registry.put_manifest(source.name, tag, body, media_type)
        if said and said != digest:
            raise RegistryError(
                f"{registry.host}/{source.name}:{tag}: the registry stored {said}, not {digest}"
            )
    for tag in tags:
        now = registry.digest(source.name, tag)
        if now != digest:
            raise RegistryError(f"{registry.host}/{source.name}:{tag} names {now}, not {digest}")
    image = f"{registry.host}/{source.name}"
    log(f"{image}@{digest} is now also {', '.join(tags)}")
    return {"image": image, "digest": digest, "tags": tags}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain-http", action="store_true", help="HTTP, not HTTPS (local registries)")
    parser.add_argument("--attempts", type=int, default=5, help="tries in all (default 5)")
    parser.add_argument("--delay", type=float, default=2.0, help="first backoff, seconds (doubles)")
    parser.add_argument("--max-delay", type=float, default=60.0, help="longest backoff, seconds")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd_retry = commands.add_parser("retry", help="run a command (a push) with retries and backoff")
    cmd_retry.add_argument("--registry", help="HOST[:PORT] to wait for before each attempt")
    cmd_retry.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    cmd_digest = commands.add_parser("digest", help="the digest a reference names")
    cmd_digest.add_argument("ref")
    cmd_promote = commands.add_parser("promote", help="add tags to an image by digest, without rebuilding")
    cmd_promote.add_argument("source")
    cmd_promote.add_argument("tags", nargs="+")
    cmd_promote.add_argument("--revision", default="", help="the commit the image must be built from")
    args = parser.parse_args(argv)
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    backoff = Backoff(args.attempts, args.delay, args.max_delay)
    try:
        if args.command == "retry":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not command:
                parser.error("retry needs a command after --")
            registry = (
                Registry(args.registry, plain_http=args.plain_http, backoff=backoff)
                if args.registry
                else None
            )
            return retry(command, registry, backoff)
        source = parse_ref(args.source if args.command == "promote" else args.ref)
        registry = Registry(source.host, plain_http=args.plain_http, backoff=backoff)
        if args.command == "digest":
            found = registry.digest(source.name, source.reference)
            if found is None:
                raise RegistryError(f"{source}: no such tag")
            print(found)
        else:
            print(json.dumps(promote(source, args.tags, registry, args.revision)))
    except RegistryError as exc:
        log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
