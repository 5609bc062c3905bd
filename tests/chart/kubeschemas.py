"""JSON schemas for kubeconform, generated offline from a real API server's OpenAPI v3.

kubeconform downloads its schemas from GitHub by default, which this machine cannot reach.
Instead, the schemas come from the API server the tests run (testkit.controlplane: the
pinned Kubernetes version, with the Dapr, cert-manager and prometheus-operator CRDs
installed), so built-in kinds and CRDs are checked against exactly what that server serves.

Each kind becomes one standalone, strict JSON schema (draft 2020-12):

- ``$ref`` to ``#/components/schemas/X`` becomes ``#/$defs/X``, with every reachable
  definition copied into ``$defs`` (recursive types such as JSONSchemaProps stay finite);
- OpenAPI's ``nullable`` becomes a ``null`` type, ``x-kubernetes-int-or-string`` an
  integer-or-string, and every object with ``properties`` and no
  ``additionalProperties`` gets ``additionalProperties: false`` (strict: unknown fields are
  errors), except where ``x-kubernetes-preserve-unknown-fields`` allows them.

Files are laid out for the kubeconform schema-location template ``LOCATION``:
``<group>/<kind>_<version>.json``, the core group under ``v1/``.

    python -m tests.chart.kubeschemas --kubeconfig PATH --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LOCATION = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
REF_PREFIX = "#/components/schemas/"


def _get(api_client, path: str) -> dict:
    response = api_client.call_api(
        path, "GET", auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True
    )
    return json.loads(response.data)


def fetch_openapi(api_client) -> dict[str, dict]:
    """Every group-version's OpenAPI v3 document: {"apis/apps/v1": {...}, "api/v1": {...}}."""
    index = _get(api_client, "/openapi/v3")
    documents = {}
    for path, entry in index["paths"].items():
        if path == "api/v1" or (path.startswith("apis/") and path.count("/") == 2):
            documents[path] = _get(api_client, entry["serverRelativeURL"])
    return documents


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _convert(value) for key, value in node.items() if key not in ("nullable", "description")}
    if isinstance(out.get("$ref"), str) and out["$ref"].startswith(REF_PREFIX):
        out["$ref"] = "#/$defs/" + out["$ref"][len(REF_PREFIX) :]
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if node.get("nullable"):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif "$ref" in out or "allOf" in out or "anyOf" in out:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX) :])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def standalone(name: str, schemas: dict[str, dict]) -> dict:
    """The schema of definition `name` with every definition it reaches in $defs."""
    needed: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in needed:
            continue
        needed.add(current)
        found: set[str] = set()
        _refs(schemas[current], found)
        todo.extend(found - needed)
    root = _convert(schemas[name])
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    root["$defs"] = {n: _convert(schemas[n]) for n in sorted(needed)}
    return root


def write_schemas(documents: dict[str, dict], out: Path) -> list[str]:
    """Write one schema per kind served; returns the relative paths written."""
    written = []
    for path, document in sorted(documents.items()):
        group_version = path.removeprefix("api/").removeprefix("apis/")
        group, _, version = group_version.rpartition("/")
        schemas = document.get("components", {}).get("schemas", {})
        for name, schema in schemas.items():
            gvks = schema.get("x-kubernetes-group-version-kind") or []
            if len(gvks) != 1 or gvks[0].get("group", "") != group or gvks[0]["version"] != version:
                continue
            kind = gvks[0]["kind"]
            if kind.endswith("List") or kind in ("DeleteOptions", "WatchEvent", "Status"):
                continue
            result = standalone(name, schemas)
            api_version = f"{group}/{version}" if group else version
            result["properties"]["apiVersion"] = {"const": api_version}
            result["properties"]["kind"] = {"const": kind}
            relative = f"{group or version}/{kind.lower()}_{version}.json"
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(result, sort_keys=True))
            written.append(relative)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    from kubernetes import config

    api_client = config.new_client_from_config(str(args.kubeconfig), persist_config=False)
    written = write_schemas(fetch_openapi(api_client), args.out)
    print(f"{len(written)} schemas in {args.out}; kubeconform -schema-location '{args.out}/{LOCATION}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
