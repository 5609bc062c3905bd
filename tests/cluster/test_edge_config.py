"""The local edge's nginx configuration (rung L0): rendered from roles/cluster's template the way
Ansible renders it (Jinja2 with trim_blocks), it passes `nginx -t` (Debian's nginx, the edge
image's), routes every one of the chart's ingress routes, and sends a read whose connection
failed once more, never a write. The L3 suite runs it for real (`make up`, the release tests)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "collections/ansible_collections/todo/cloud/roles/cluster/templates/local-data.yaml.j2"
DEFAULTS = ROOT / "collections/ansible_collections/todo/cloud/roles/cluster/defaults/main.yml"


def edge_config() -> str:
    """The edge ConfigMap's nginx.conf, rendered with the role's defaults."""
    text = TEMPLATE.read_text()
    start = text.index("kind: ConfigMap\nmetadata:\n  name: todo-edge")
    configmap = text[start : text.index("\n---", start)]
    edge = yaml.safe_load(DEFAULTS.read_text())["cluster_local_edge"]
    edge["routes"] = yaml.safe_load((ROOT / "charts/todo/values.yaml").read_text())["ingress"]["routes"]
    environment = jinja2.Environment(
        trim_blocks=True,  # as Ansible's template module
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(default_for_string=False),  # YAML, not HTML
    )
    rendered = environment.from_string("{% set ns = 'todo-data' %}" + configmap)
    values = {
        "cluster_local_edge": edge,
        "cluster_local_dns_ip": "10.96.0.10",
        "todo_namespace": "todo-local",
        "cluster_local_cluster_domain": "cluster.local",
    }
    return yaml.safe_load(rendered.render(values))["data"]["nginx.conf"]


def locations(config: str) -> dict[str, str]:
    """Each multi-line `location` block's body, by its path or name."""
    blocks = {}
    for match in re.finditer(r"location (\S+) \{\n(.*?)\n {4}\}", config, re.DOTALL):
        blocks[match.group(1)] = match.group(2)
    return blocks


def test_L0_the_edge_config_is_valid_nginx(tmp_path):
    (tmp_path / "nginx.conf").write_text(edge_config())
    checked = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_L0_every_route_sends_a_failed_read_once_more_and_never_a_write():
    blocks = locations(edge_config())
    routes = yaml.safe_load((ROOT / "charts/todo/values.yaml").read_text())["ingress"]["routes"]
    for route in routes:
        body = blocks[route["path"]]
        assert "proxy_connect_timeout 5s;" in body
        retry = re.search(r"error_page 502 504 = (@retry\d+);", body)
        assert retry, f"{route['path']}: no retry"
        again = blocks[retry.group(1)]
        assert re.search(r"if \(\$request_method !~ \^\(GET\|HEAD\)\$\) \{ return 502; \}", again)
        upstream = re.search(r"set \$upstream (\S+);", body).group(1)
        assert f"set $upstream {upstream};" in again, f"{route['path']}: the retry goes elsewhere"
        assert f"todo-{route['service']}.todo-local.svc.cluster.local:80" in upstream
