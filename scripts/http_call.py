"""One HTTP request with Python's standard library (http.client), for the scripts that run
on a bare GitHub runner before any Python environment exists: gha.py, registry.py and
synthetic_check.py. No redirects are followed: the caller decides (registry.py drops the
credentials before following one to another host).

Errors of the connection (refused, reset, timed out, TLS) raise OSError or
http.client.HTTPException; ERRORS names both for `except`.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from dataclasses import dataclass

ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    url: str


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> Response:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    else:
        raise ValueError(f"not an http(s) URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, target, body=body, headers=headers or {})
        answer = connection.getresponse()
        data = answer.read()
    finally:
        connection.close()
    return Response(answer.status, {name.lower(): value for name, value in answer.getheaders()}, data, url)
