"""The docs hold together (rung L0).

- The committed architecture SVG is what Graphviz's `dot` renders from the committed .dot
  today (scripts/render_docs.py; the PNG is held to the fresh render's size).
- Every relative link in docs/**/*.md and README.md resolves to a file of the repository,
  and every #anchor to a heading of the target.
- Every runbook in docs/runbooks/ is linked from the docs index (docs/README.md), and the
  runbooks the deployment spec's edge cases call for exist.
- The commands the docs give run what exists: `ansible-playbook <file>` names a playbook of
  the repository, and every `--tags` value is a tag of a play site.yml imports.
- docs/runbooks/first-bootstrap.md creates every Secret the inventories require, with every
  key (roles/app checks them with todo.cloud.secret_assert before each deploy).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("render_docs", ROOT / "scripts" / "render_docs.py")
render_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_docs)
DOCS = ROOT / "docs"
INDEX = DOCS / "README.md"
RUNBOOKS = DOCS / "runbooks"
FIRST_BOOTSTRAP = RUNBOOKS / "first-bootstrap.md"
ROLES = ROOT / "collections" / "ansible_collections" / "todo" / "cloud" / "roles"
MARKDOWN = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
ENVIRONMENTS = ("staging", "production")
# One runbook per operational edge case of the deployment spec (and issue 7's docs list).
REQUIRED_RUNBOOKS = (
    "first-bootstrap.md",
    "rollback.md",
    "teardown.md",
    "certificates.md",
    "redpanda-outage.md",
    "dapr-sidecar-injection.md",
    "metrics-server-outage.md",
    "node-capacity.md",
)

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# The target of every inline link and image, nested ones included: [![alt](img)](target).
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """Markdown without code blocks and inline code, where links are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    text = prose(path.read_text())
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    result = set(HTML_ANCHOR.findall(text))
    for heading in HEADING.findall(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def resolve(source: Path, target: str) -> tuple[Path, str] | None:
    """(file, anchor) a relative link points at; None for absolute URLs (http:, mailto: ...)."""
    if SCHEME.match(target):
        return None
    path, _, anchor = target.partition("#")
    file = (source.parent / unquote(path)).resolve() if path else source
    return file, anchor


def link_problems(source: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(source):
        resolved = resolve(source, target)
        if resolved is None:
            continue
        file, anchor = resolved
        if not file.is_relative_to(root) or not file.exists():
            problems.append(f"{target}: no such file in the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: {file.relative_to(root)} has no heading with anchor #{anchor}")
    return problems


def _tags_and_roles(node, tags: set[str], roles: set[str]) -> None:
    """Collect every `tags` value and every todo.cloud role named anywhere in a YAML tree."""
    if isinstance(node, list):
        for item in node:
            _tags_and_roles(item, tags, roles)
    elif isinstance(node, dict):
        value = node.get("tags", [])
        # (a module's own `tags` argument, templated, is not an Ansible tag)
        tags.update(t for t in ([value] if isinstance(value, str) else value) if "{{" not in str(t))
        for key in ("role", "name"):
            name = node.get(key)
            if isinstance(name, str) and name.startswith("todo.cloud."):
                roles.add(name.removeprefix("todo.cloud."))
        for item in node.values():
            _tags_and_roles(item, tags, roles)


def site_tags() -> set[str]:
    """Every tag `--tags` can select in site.yml: on its plays, and on the tasks of the plays
    and of the todo.cloud roles they run."""
    tags: set[str] = set()
    roles: set[str] = set()
    for entry in yaml.safe_load((ROOT / "site.yml").read_text()):
        _tags_and_roles(
            yaml.safe_load((ROOT / entry["ansible.builtin.import_playbook"]).read_text()), tags, roles
        )
    for role in roles:
        for tasks in sorted((ROLES / role / "tasks").glob("*.yml")):
            _tags_and_roles(yaml.safe_load(tasks.read_text()), tags, roles)
    return tags


# ---- the picture ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dot_sources() -> list[Path]:
    assert shutil.which("dot"), "Graphviz's dot is missing: apt-get install graphviz (versions.env)"
    found = render_docs.sources()
    assert DOCS / "architecture" / "architecture.dot" in found
    return found


def test_l0_committed_svg_is_a_fresh_render_of_the_dot(dot_sources):
    version = subprocess.run(["dot", "-V"], capture_output=True, text=True, check=True).stderr.strip()
    for source in dot_sources:
        svg = source.with_suffix(".svg")
        assert svg.exists(), f"{svg.relative_to(ROOT)} is missing: run scripts/render_docs.py"
        assert svg.read_bytes() == render_docs.render(source, "svg"), (
            f"{svg.relative_to(ROOT)} is not what {version} renders from {source.name}: "
            "run scripts/render_docs.py and commit the result"
        )


def test_l0_committed_png_has_the_fresh_render_size(dot_sources):
    for source in dot_sources:
        png = source.with_suffix(".png")
        assert png.exists(), f"{png.relative_to(ROOT)} is missing: run scripts/render_docs.py"
        assert render_docs.png_size(png.read_bytes()) == render_docs.png_size(
            render_docs.render(source, "png")
        )


def test_l0_render_docs_check_reports_a_stale_svg(tmp_path, monkeypatch):
    """--check fails, naming the file, when the source changed after the last render."""
    source = tmp_path / "pic.dot"
    source.write_text("digraph g { a -> b; }\n")
    assert render_docs.write(source) == [source.with_suffix(".svg"), source.with_suffix(".png")]
    assert render_docs.write(source) == []
    monkeypatch.setattr(render_docs, "ROOT", tmp_path)
    assert render_docs.stale(source) == []
    source.write_text("digraph g { a -> b -> c; }\n")
    assert render_docs.stale(source) == [
        "pic.svg differs from a fresh render of pic.dot",
        f"pic.png is {render_docs.png_size(source.with_suffix('.png').read_bytes())}, "
        f"a fresh render is {render_docs.png_size(render_docs.render(source, 'png'))}",
    ]


def test_l0_architecture_page_embeds_the_picture():
    page = DOCS / "architecture.md"
    targets = {resolve(page, t)[0] for t in links(page) if resolve(page, t)}
    assert DOCS / "architecture" / "architecture.svg" in targets
    assert DOCS / "architecture" / "architecture.dot" in targets


# ---- links ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_l0_every_relative_link_resolves(page):
    problems = link_problems(page)
    assert not problems, "broken links:\n" + "\n".join(dict.fromkeys(problems))


def test_l0_link_checker_catches_a_broken_link_and_anchor(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "outside.md").write_text("# Outside the repository\n")
    (root / "b.md").write_text("# Title of `B`, with: punctuation\n\n## Title of B\n\n## Title of B\n")
    page = root / "a.md"
    page.write_text(
        "[ok](b.md#title-of-b-with-punctuation) [ok](b.md#title-of-b-1) [web](https://example.com)\n"
        "[gone](missing.md) [bad anchor](b.md#nope) `[code](not-a-link.md)` [self](#nope-here)\n"
        '[![picture](pic.svg "title")](b.md)\n'
        "```\n[fenced](also-not-a-link.md)\n```\n[ref]: ../outside.md\n"
    )
    assert link_problems(page, root) == [
        "missing.md: no such file in the repository",
        "b.md#nope: b.md has no heading with anchor #nope",
        "#nope-here: a.md has no heading with anchor #nope-here",
        "pic.svg: no such file in the repository",
        "../outside.md: no such file in the repository",
    ]


# ---- runbooks ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED_RUNBOOKS)
def test_l0_runbook_exists(name):
    assert (RUNBOOKS / name).is_file(), f"docs/runbooks/{name} is missing"


def test_l0_every_runbook_is_linked_from_the_docs_index():
    indexed = {resolve(INDEX, t)[0] for t in links(INDEX) if resolve(INDEX, t)}
    unlisted = [p.name for p in sorted(RUNBOOKS.glob("*.md")) if p.resolve() not in indexed]
    assert unlisted == [], f"docs/README.md does not link these runbooks: {unlisted}"


def test_l0_playbooks_and_tags_in_the_docs_exist():
    tags = site_tags()
    problems = []
    for page in MARKDOWN:
        text = page.read_text()
        for playbook in re.findall(r"ansible-playbook\s+([\w./-]+\.ya?ml)", text):
            if not (ROOT / playbook).is_file():
                problems.append(f"{page.relative_to(ROOT)}: ansible-playbook {playbook}: no such playbook")
        for value in re.findall(r"--tags[ =]([\w,-]+)", text):
            problems += [
                f"{page.relative_to(ROOT)}: --tags {tag}: nothing site.yml runs has this tag"
                for tag in value.split(",")
                if tag not in tags
            ]
    assert not problems, "\n".join(dict.fromkeys(problems))


# ---- first bootstrap -----------------------------------------------------------------------


def required_secrets(env: str) -> dict[str, set[str]]:
    """Secret name (the environment written `$ENV`) -> its keys: every `*_secrets` list a role
    checks (app_secrets, monitoring_secrets, dapr_component_secrets ...: the roles' defaults and
    the inventory of `env`), and the chart's imagePullSecrets (GHCR)."""
    inventory = ROOT / "inventories" / env
    secrets: dict[str, set[str]] = {}
    variables = [
        *sorted(ROLES.glob("*/defaults/main.yml")),
        *sorted((inventory / "group_vars" / "all").glob("*.yml")),
    ]
    for source in variables:
        for variable, value in (yaml.safe_load(source.read_text()) or {}).items():
            if variable.endswith("_secrets") and isinstance(value, list):
                secrets.update({s["name"]: {k["name"] for k in s["keys"]} for s in value})
    values = yaml.safe_load((inventory / "values" / "todo.yaml").read_text())
    for pull in values.get("imagePullSecrets", []):
        secrets[pull] = {".dockerconfigjson"}
    return {name.replace(f"todo-{env}-", "todo-$ENV-"): keys for name, keys in secrets.items()}


def created_secrets(text: str) -> dict[str, set[str]]:
    """Secret name -> keys of every `kubectl ... create secret` command in `text`."""
    created: dict[str, set[str]] = {}
    for command in text.replace("\\\n", " ").splitlines():
        found = re.search(r"create secret ([\w-]+) \"?([\w$.-]+)\"?", command)
        if not found:
            continue
        kind, name = found.groups()
        keys = set(re.findall(r"--from-(?:file|literal)=([\w.-]+)=", command))
        created.setdefault(name, set()).update({".dockerconfigjson"} if kind == "docker-registry" else keys)
    return created


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_first_bootstrap_creates_every_required_secret(env):
    created = created_secrets(FIRST_BOOTSTRAP.read_text())
    required = required_secrets(env)
    assert {name: created.get(name) for name in required} == required


def test_l0_first_bootstrap_runs_site_yml_per_environment():
    text = FIRST_BOOTSTRAP.read_text()
    for env in ENVIRONMENTS:
        assert f"ansible-playbook site.yml -i inventories/{env}" in text
