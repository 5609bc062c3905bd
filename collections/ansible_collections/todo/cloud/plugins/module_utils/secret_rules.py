# Copyright: (c) 2026, Todo platform team
# Apache License 2.0
"""The rules behind todo.cloud.secret_assert, with no Kubernetes in sight.

Everything here works on plain Python values so it can be unit-tested: the module reads
the Secrets and hands their decoded values (bytes) to `evaluate()`.

The one rule every function here keeps: a value never leaves this file. Problems name
the Secret and the key and say what is wrong; they never quote the value, a part of
it, its length or its digest. Digests are compared in memory and then dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

FORMATS = ("any", "url", "pem")

# Whole-value placeholders: the value, trimmed and case-folded, is exactly one of these.
PLACEHOLDER_WORDS = frozenset(
    {
        "password",
        "passw0rd",
        "pass",
        "passwd",
        "pwd",
        "secret",
        "s3cr3t",
        "secret123",
        "password123",
        "mysecret",
        "my-secret",
        "supersecret",
        "super-secret",
        "topsecret",
        "secret-key",
        "secret_key",
        "secretkey",
        "your-secret-key",
        "your_secret_key",
        "api-key",
        "api_key",
        "apikey",
        "token",
        "todo",
        "tbd",
        "fixme",
        "example",
        "sample",
        "demo",
        "test",
        "testing",
        "dummy",
        "fake",
        "default",
        "admin",
        "root",
        "user",
        "guest",
        "letmein",
        "qwerty",
        "abc123",
        "123456",
        "12345678",
        "none",
        "null",
        "nil",
        "undefined",
        "empty",
        "n/a",
        "na",
        "foo",
        "bar",
        "foobar",
        "temp",
        "changeme",
        "change-me",
        "change_me",
        "change me",
        "changethis",
        "change-this",
        "change_this",
        "replaceme",
        "replace-me",
        "replace_me",
        "placeholder",
        "insecure",
    }
)

WHOLE_VALUE_PATTERNS = (
    re.compile(r"x{3,}"),  # xxx, XXXXXXXX
    re.compile(r"\*{3,}"),  # ***** (a masked copy pasted back)
    re.compile(r"\.{3,}|…"),  # ...
    re.compile(r"<[^<>]*>"),  # <password>, <your token here>
    re.compile(r"\$\{[^{}]*\}"),  # ${DB_PASSWORD}
    re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*"),  # $DB_PASSWORD
    re.compile(r"(your|insert|enter|put)[-_ ].*[-_ ]here"),  # your-key-here, insert_token_here
)

# Markers that make a value a placeholder wherever they appear in it, so that
# postgresql://todo:changeme@db/todo is refused as well as changeme.
PLACEHOLDER_MARKERS = (
    "changeme",
    "change-me",
    "change_me",
    "changethis",
    "change-this",
    "change_this",
    "replaceme",
    "replace-me",
    "replace_me",
    "placeholder",
)
MARKER_PATTERNS = (
    re.compile(r"xxxx|XXXX"),  # case-sensitive: a random key rarely holds a run of four
    re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_.-]*\}"),  # an unexpanded ${VARIABLE} inside a value
    re.compile(r"\{\{.*?\}\}", re.S),  # an unrendered {{ template }}
)

URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9][A-Z0-9 ]*)-----\r?\n(.*?)-----END ([A-Z0-9][A-Z0-9 ]*)-----", re.S
)
PEM_ANY_MARKER = re.compile(r"-----(BEGIN|END) [^-\n]*-----")

# Kubernetes names: Secret names are DNS subdomains, namespaces DNS labels, keys [-._a-zA-Z0-9]+.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


class SpecError(ValueError):
    """The module's parameters are malformed; the message lists every mistake found."""


@dataclass(frozen=True)
class KeyRule:
    name: str
    format: str = "any"
    min_length: int | None = None


@dataclass(frozen=True)
class SecretRule:
    name: str
    keys: tuple[KeyRule, ...] = ()


@dataclass(frozen=True)
class Problem:
    secret: str
    key: str | None
    problem: str
    message: str
    shared_with: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        result = {"secret": self.secret, "key": self.key, "problem": self.problem, "message": self.message}
        if self.shared_with:
            result["shared_with"] = list(self.shared_with)
        return result


# -- parameters --------------------------------------------------------------------------------


def _int_or_none(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _key_rule(secret: str, index: int, item, errors: list[str]) -> KeyRule | None:
    where = f"secrets[{secret}].keys[{index}]"
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping):
        errors.append(
            f"{where} must be a key name or a mapping with name, format and min_length, "
            f"not {type(item).__name__}"
        )
        return None
    unknown = sorted(str(k) for k in item if k not in ("name", "format", "min_length"))
    if unknown:
        errors.append(f"{where} has unknown option(s) {', '.join(unknown)} (known: name, format, min_length)")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        errors.append(f"{where} needs a name")
        return None
    if not SECRET_KEY.fullmatch(name) or len(name) > 253:
        errors.append(f"{where}: {name!r} is not a valid Secret key (letters, digits, '-', '_' and '.')")
    fmt = item.get("format")
    fmt = "any" if fmt is None else fmt
    if fmt not in FORMATS:
        errors.append(f"{where} ({name}): format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    min_length = item.get("min_length")
    if min_length is not None:
        parsed = _int_or_none(min_length)
        if parsed is None or parsed < 1:
            errors.append(
                f"{where} ({name}): min_length must be a whole number of at least 1, got {min_length!r}"
            )
        min_length = parsed
    return KeyRule(name=name, format=fmt if fmt in FORMATS else "any", min_length=min_length)


def parse_rules(secrets, namespace: str, distinct_from: Iterable[str] = ()) -> list[SecretRule]:
    """Turn the module's `secrets` parameter into rules, or raise SpecError naming every mistake."""
    errors: list[str] = []
    if not isinstance(namespace, str) or not DNS_LABEL.fullmatch(namespace) or len(namespace) > 63:
        errors.append(f"namespace {namespace!r} is not a valid namespace name (a DNS label)")
    for other in distinct_from:
        if other == namespace:
            errors.append(f"distinct_from must not name the asserted namespace {namespace} itself")
        elif not isinstance(other, str) or not DNS_LABEL.fullmatch(other) or len(other) > 63:
            errors.append(f"distinct_from: {other!r} is not a valid namespace name (a DNS label)")
    if not secrets:
        errors.append("secrets must list at least one Secret")
    rules: list[SecretRule] = []
    seen: set[str] = set()
    for index, entry in enumerate(secrets or ()):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            errors.append(f"secrets[{index}] needs a name")
            continue
        if not DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
            errors.append(f"secrets[{index}]: {name!r} is not a valid Secret name")
        if name in seen:
            errors.append(f"secrets lists {name} more than once")
        seen.add(name)
        keys_param = entry.get("keys") or []
        if not isinstance(keys_param, list):
            errors.append(f"secrets[{name}].keys must be a list")
            keys_param = []
        keys: list[KeyRule] = []
        for key_index, item in enumerate(keys_param):
            rule = _key_rule(name, key_index, item, errors)
            if rule is None:
                continue
            if any(k.name == rule.name for k in keys):
                errors.append(f"secrets[{name}] lists key {rule.name} more than once")
                continue
            keys.append(rule)
        rules.append(SecretRule(name=name, keys=tuple(keys)))
    if errors:
        raise SpecError("; ".join(errors))
    return rules


def placeholder_words(extra: Iterable[str] = ()) -> frozenset[str]:
    return PLACEHOLDER_WORDS | {w.strip().casefold() for w in extra if isinstance(w, str) and w.strip()}


# -- single values ------------------------------------------------------------------------------


def as_text(value: bytes) -> str | None:
    """The value as text, or None when it is not UTF-8 (binary keys, keystores ...)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def length(value: bytes) -> int:
    """Characters for UTF-8 text, bytes otherwise."""
    text = as_text(value)
    return len(text) if text is not None else len(value)


def is_whole_placeholder(text: str, words: frozenset[str] = PLACEHOLDER_WORDS) -> bool:
    norm = text.strip().casefold()
    if not norm:
        return False
    if norm in words:
        return True
    return any(p.fullmatch(norm) for p in WHOLE_VALUE_PATTERNS)


def has_placeholder_marker(text: str) -> bool:
    folded = text.casefold()
    if any(marker in folded for marker in PLACEHOLDER_MARKERS):
        return True
    return any(p.search(text) for p in MARKER_PATTERNS)


def placeholder_reason(text: str, words: frozenset[str] = PLACEHOLDER_WORDS) -> str | None:
    """Why `text` is a placeholder, in words that do not repeat it; None when it is not one."""
    if is_whole_placeholder(text, words):
        return "is a placeholder, not a real secret"
    if has_placeholder_marker(text):
        return "contains a placeholder marker (such as changeme, replace-me, xxxx or an unexpanded ${...})"
    return None


def url_problem(text: str) -> str | None:
    """What makes `text` not a usable URL (scheme and host); None when it is one."""
    if text != text.strip():
        return "has leading or trailing whitespace (a stray newline?); a URL must not"
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        return "contains whitespace or control characters; not a valid URL"
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if not parts.scheme or not URL_SCHEME.fullmatch(parts.scheme) or "://" not in text:
        return "is not a URL: it needs a scheme such as postgresql:// or https://"
    if not host:
        return "is not a URL: it has no host"
    return None


def url_password(text: str) -> str | None:
    try:
        password = urlsplit(text.strip()).password
    except ValueError:
        return None
    return unquote(password) if password else None


def _pem_body_ok(body: str) -> bool:
    lines = [line.strip() for line in body.splitlines()]
    # RFC 1421 headers (Proc-Type, DEK-Info) end with a blank line before the base64 body.
    if lines and ":" in lines[0]:
        lines = lines[lines.index("") + 1 :] if "" in lines else []
    data = "".join(lines)
    if not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def pem_problem(text: str) -> str | None:
    """What makes `text` not PEM (BEGIN/END blocks around valid base64); None when it is PEM."""
    blocks = list(PEM_BLOCK.finditer(text))
    if not blocks:
        return "is not PEM: no -----BEGIN ...----- / -----END ...----- block"
    if len(PEM_ANY_MARKER.findall(text)) != 2 * len(blocks):
        return "is not valid PEM: a BEGIN or END line has no partner"
    for block in blocks:
        if block.group(1) != block.group(3):
            return "is not valid PEM: a block's BEGIN and END labels differ"
        if not _pem_body_ok(block.group(2)):
            return "is not valid PEM: a block's body is not base64"
    return None


def value_problems(
    value: bytes, rule: KeyRule, words: frozenset[str] = PLACEHOLDER_WORDS, allow_placeholders: bool = False
) -> list[tuple[str, str]]:
    """(problem, reason) pairs for one value; reasons never contain the value."""
    try:
        return _value_problems(value, rule, words, allow_placeholders)
    except Exception:  # an exception's text could quote the value, so only the fact is reported
        return [("unreadable", "could not be checked")]


def _value_problems(
    value: bytes, rule: KeyRule, words: frozenset[str], allow_placeholders: bool
) -> list[tuple[str, str]]:
    text = as_text(value)
    if not value or (text is not None and not text.strip()):
        return [("empty", "is empty" if not value else "is only whitespace")]
    found: list[tuple[str, str]] = []
    if text is not None and not allow_placeholders:
        reason = placeholder_reason(text, words)
        if reason is None and rule.format == "url":
            password = url_password(text)
            if password is not None and is_whole_placeholder(password, words):
                reason = "has a placeholder as the URL's password"
        if reason:
            found.append(("placeholder", reason))
    if rule.format in ("url", "pem"):
        problem = "invalid_url" if rule.format == "url" else "invalid_pem"
        if text is None:
            found.append((problem, "is not UTF-8 text"))
        else:
            reason = url_problem(text) if rule.format == "url" else pem_problem(text)
            if reason:
                found.append((problem, reason))
    if rule.min_length and length(value) < rule.min_length:
        unit = "characters" if text is not None else "bytes"
        found.append(("too_short", f"is shorter than {rule.min_length} {unit}"))
    return found


# -- whole run ----------------------------------------------------------------------------------


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def decode_data(data: Mapping[str, str] | None) -> dict[str, bytes]:
    """A Secret's `data` (base64 strings, as the API returns them) as bytes per key."""
    return {key: base64.b64decode(encoded or "") for key, encoded in (data or {}).items()}


def evaluate(
    rules: Iterable[SecretRule],
    found: Mapping[str, Mapping[str, bytes] | None],
    namespace: str,
    words: frozenset[str] = PLACEHOLDER_WORDS,
    allow_placeholders: bool = False,
) -> list[Problem]:
    """Every problem of the asserted Secrets. `found` maps a Secret name to its data, None if absent."""
    problems: list[Problem] = []
    for rule in rules:
        data = found.get(rule.name)
        if data is None:
            problems.append(
                Problem(
                    rule.name,
                    None,
                    "missing_secret",
                    f"Secret {rule.name} does not exist in namespace {namespace}",
                )
            )
            continue
        for key in rule.keys:
            if key.name not in data:
                problems.append(
                    Problem(rule.name, key.name, "missing_key", f"Secret {rule.name} has no key {key.name}")
                )
                continue
            for problem, reason in value_problems(data[key.name], key, words, allow_placeholders):
                problems.append(Problem(rule.name, key.name, problem, f"{rule.name}/{key.name} {reason}"))
    return problems


def shared_values(
    own: Mapping[str, Mapping[str, bytes] | None], others: Mapping[str, Mapping[str, Mapping[str, bytes]]]
) -> list[Problem]:
    """One problem per asserted secret/key whose value also appears in another namespace.

    `own` is Secret name -> key -> value for the asserted namespace; `others` is
    namespace -> Secret name -> key -> value. Values are compared by SHA-256 digest;
    empty values are not compared (the empty check reports them).
    """
    index: dict[str, list[str]] = {}
    for namespace in sorted(others):
        for secret in sorted(others[namespace]):
            for key, value in sorted(others[namespace][secret].items()):
                if value.strip():
                    index.setdefault(digest(value), []).append(f"{namespace}/{secret}/{key}")
    problems = []
    for secret in sorted(s for s in own if own[s] is not None):
        for key, value in sorted(own[secret].items()):
            matches = index.get(digest(value)) if value.strip() else None
            if matches:
                problems.append(
                    Problem(
                        secret,
                        key,
                        "shared",
                        f"{secret}/{key} has the same value as {', '.join(matches)}",
                        shared_with=tuple(matches),
                    )
                )
    return problems


def summary(problems: list[Problem], namespace: str) -> str:
    """One readable message listing every problem."""
    count = len(problems)
    head = f"{count} problem{'s' if count != 1 else ''} with the Secrets in namespace {namespace}:"
    return "\n".join([head, *(f"  - {p.message}" for p in problems)])
