"""Unit tests (rung L0) of the secret_assert rules: parameters, placeholders, formats, sharing."""

from __future__ import annotations

import base64
import secrets as pysecrets
import string

import pytest
from ansible_collections.todo.cloud.plugins.module_utils import secret_rules as rules
from ansible_collections.todo.cloud.plugins.module_utils.secret_rules import KeyRule, SecretRule

pytestmark = pytest.mark.unit

ANY = KeyRule("k")
URL = KeyRule("k", format="url")
PEM = KeyRule("k", format="pem")

PEM_CERT = (
    "-----BEGIN CERTIFICATE-----\n"
    + "\n".join(base64.b64encode(bytes(range(256)) * 2).decode()[i : i + 64] for i in range(0, 684, 64))
    + "\n-----END CERTIFICATE-----\n"
)


def problems_of(value: bytes | str, rule: KeyRule = ANY, **kwargs) -> list[str]:
    raw = value.encode() if isinstance(value, str) else value
    return [p for p, _ in rules.value_problems(raw, rule, **kwargs)]


# -- placeholders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "changeme",
        "CHANGEME",
        "  ChangeMe \n",
        "change-me",
        "change_me",
        "changethis",
        "change-this",
        "password",
        "Password",
        "PASSWORD",
        "passw0rd",
        "secret",
        "todo",
        "TODO",
        "example",
        "test",
        "dummy",
        "default",
        "admin",
        "xxx",
        "XXXXXXXX",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "replace-me",
        "replaceme",
        "placeholder",
        "<password>",
        "<your jwt signing key>",
        "${DB_PASSWORD}",
        "${}",
        "$JWT_KEY",
        "*****",
        "...",
        "your-secret-key",
        "your-api-key-here",
        "insert_token_here",
        "none",
        "null",
        "undefined",
        "tbd",
        "fixme",
        "letmein",
        "123456",
        "foobar",
    ],
)
def test_whole_value_placeholders_are_refused(value):
    assert problems_of(value) == ["placeholder"]


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://todo:changeme@db/todo",
        "my-CHANGEME-key-0123456789abcdef0123456789",
        "sk_live_REPLACE_ME_0000000000000000",
        "this-is-a-placeholder-for-the-real-key",
        "abcdXXXXefgh1234567890",
        "redis://:${REDIS_PASSWORD}@redis:6379/0",
        "Bearer {{ lookup('env', 'TOKEN') }}",
        "changethisbeforeproduction",
    ],
)
def test_placeholder_markers_anywhere_are_refused(value):
    assert "placeholder" in problems_of(value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://todo:password@db:5432/todo",
        "postgresql://todo:PASSWORD@db/todo",
        "postgresql://todo:secret@db/todo",
        "postgresql://todo:%3Cpassword%3E@db/todo",
        "redis://:todo@redis:6379/0",
        "amqp://user:xxx@mq/",
    ],
)
def test_url_password_component_is_checked_whole_value(url):
    assert problems_of(url, URL) == ["placeholder"]


def test_url_password_is_only_checked_for_url_format():
    # Without format: url the value is not parsed, and as a whole it is not a placeholder.
    assert problems_of("postgresql://todo:password@db/todo") == []


def test_extra_placeholder_words_add_to_the_built_in_list():
    words = rules.placeholder_words(["todo-dev-password", " Redpanda "])
    assert problems_of("todo-dev-password", words=words) == ["placeholder"]
    assert problems_of("REDPANDA", words=words) == ["placeholder"]
    assert problems_of("changeme", words=words) == ["placeholder"]
    assert problems_of("todo-dev-password") == []
    assert problems_of("postgresql://u:redpanda@db/x", URL, words=words) == ["placeholder"]


def test_allow_placeholders_skips_only_the_placeholder_rule():
    assert problems_of("changeme", allow_placeholders=True) == []
    assert problems_of("postgresql://todo:password@db/todo", URL, allow_placeholders=True) == []
    assert problems_of("", allow_placeholders=True) == ["empty"]
    assert problems_of("changeme", KeyRule("k", min_length=32), allow_placeholders=True) == ["too_short"]
    assert problems_of("changeme", URL, allow_placeholders=True) == ["invalid_url"]


# -- false positives to avoid ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(pysecrets.token_hex(32), id="random-hex"),
        pytest.param(pysecrets.token_urlsafe(48), id="random-urlsafe"),
        base64.b64encode(bytes(range(48))).decode(),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "correct horse battery staple orbit",
        "Tr0ub4dor&3-but-longer-and-random-7Q",
        "todo-api-7d1f0c",  # contains "todo", but is not the word alone
        "password-reset-signing-9f8a7b6c5d4e",  # contains "password", not a marker
        "$2b$12$KIXQJ3f1Yx0d0Gf5rM8Dvu0m5k2Yq1xkqzq8wE4s8Jq8m5u7b2n6a",  # a bcrypt hash
        "a<b9>c",
        "k9xXxXq2" + "7" * 30,  # mixed-case x runs are not the xxxx marker
    ],
)
def test_real_looking_values_are_not_placeholders(value):
    assert problems_of(value) == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://todo_app:q8S2vN4xW9pL1mZ7@db.todo-staging.svc.cluster.local:5432/todo?sslmode=require",
        pytest.param(
            "postgresql+asyncpg://todo:" + pysecrets.token_urlsafe(24) + "@10.0.0.5/todo", id="random-db"
        ),
        pytest.param(
            "https://hooks.slack.com/services/T000/B000/" + pysecrets.token_hex(12), id="random-hook"
        ),
        "redis://redis-master.todo.svc:6379/0",
        "kafka://seed-abc.redpanda.cloud:9092",
        "https://[2001:db8::1]:8443/api",
    ],
)
def test_real_looking_urls_pass(url):
    assert problems_of(url, URL) == []


def test_many_random_keys_never_look_like_placeholders():
    alphabet = string.ascii_letters + string.digits + "-_"
    for _ in range(2000):
        key = "".join(pysecrets.choice(alphabet) for _ in range(64))
        found = problems_of(key, KeyRule("k", min_length=32))
        # A random 64-character key can only trip the xxxx marker, and that is vanishingly rare.
        assert found == [] or "xxxx" in key or "XXXX" in key


# -- empty, length ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"", b" ", b"\n", b"\t \r\n"])
def test_empty_or_blank_values_are_refused_and_nothing_else_is_said(value):
    assert problems_of(value, KeyRule("k", format="url", min_length=32)) == ["empty"]


def test_min_length_counts_characters():
    assert problems_of("a" * 31 + "Z", KeyRule("k", min_length=32)) == []
    assert problems_of("a" * 30 + "Z", KeyRule("k", min_length=32)) == ["too_short"]
    # 16 characters, 48 bytes in UTF-8: characters count.
    assert problems_of("é€漢" * 4 + "日本語中文字あいう", KeyRule("k", min_length=16)) == []
    assert rules.length("漢字".encode()) == 2


def test_min_length_counts_bytes_for_binary_values():
    binary = bytes([0xFF, 0xFE]) + bytes(range(30))
    assert rules.as_text(binary) is None
    assert rules.length(binary) == 32
    assert problems_of(binary, KeyRule("k", min_length=32)) == []
    assert problems_of(binary, KeyRule("k", min_length=33)) == ["too_short"]


def test_binary_values_are_never_placeholders_but_are_not_urls_or_pem():
    binary = b"\xff\xfe" + b"changeme"
    assert problems_of(binary) == []
    assert problems_of(binary, URL) == ["invalid_url"]
    assert problems_of(binary, PEM) == ["invalid_pem"]


def test_a_value_can_have_several_problems_at_once():
    assert problems_of("changeme", KeyRule("k", format="url", min_length=32)) == [
        "placeholder",
        "invalid_url",
        "too_short",
    ]


# -- url ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "db:5432",  # no scheme
        "localhost",
        "postgresql:///todo",  # no host
        "postgresql://",
        "mailto:ops@example.org",
        "//db/todo",
        "postgresql://todo:pw@db/todo\n",  # a stray newline
        " https://api.todo.dev",
        "https://api todo.dev",
        "1http://host",
        "https://[::1",
    ],
)
def test_invalid_urls(value):
    assert problems_of(value, URL) == ["invalid_url"]


def test_url_problem_says_what_is_missing_without_the_value():
    value = "postgresql:///todo-secret-db"
    reason = rules.url_problem(value)
    assert reason is not None and "host" in reason and value not in reason


# -- pem ----------------------------------------------------------------------------------------


def test_valid_pem_and_chains_pass():
    assert problems_of(PEM_CERT, PEM) == []
    assert problems_of(PEM_CERT + PEM_CERT, PEM) == []
    assert problems_of(PEM_CERT.replace("\n", "\r\n"), PEM) == []


def test_encrypted_legacy_pem_headers_are_accepted():
    body = base64.b64encode(bytes(range(96))).decode()  # not a key: 96 counting bytes
    label = "RSA PRIVATE KEY"
    legacy = (
        f"-----BEGIN {label}-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00FF\n\n"
        f"{body}\n-----END {label}-----\n"
    )
    assert problems_of(legacy, PEM) == []


@pytest.mark.parametrize(
    "value",
    [
        "not a pem at all",
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",  # empty body
        "-----BEGIN CERTIFICATE-----\nnot base64 !!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nQUJD\n-----END PRIVATE KEY-----\n",  # labels differ
        "-----BEGIN CERTIFICATE-----\nQUJDRA==\n",  # no END
        PEM_CERT + "-----END CERTIFICATE-----\n",  # stray END
        "-----BEGIN CERTIFICATE-----\nQUJDR\n-----END CERTIFICATE-----\n",  # bad padding
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",  # base64 without armour
    ],
)
def test_invalid_pem(value):
    assert problems_of(value, PEM) == ["invalid_pem"]


def test_placeholder_inside_pem_is_still_a_placeholder():
    assert problems_of("-----BEGIN PRIVATE KEY-----\nchangeme\n-----END PRIVATE KEY-----\n", PEM) == [
        "placeholder"
    ]


# -- parameters ---------------------------------------------------------------------------------


def test_parse_rules_accepts_the_shorthand_and_the_mapping():
    parsed = rules.parse_rules(
        [
            {"name": "todo-db", "keys": ["password", {"name": "DATABASE_URL", "format": "url"}]},
            {"name": "todo-auth", "keys": [{"name": "JWT_SIGNING_KEY", "min_length": "32"}]},
            {"name": "todo-registry"},
        ],
        "todo-staging",
        ["todo-production"],
    )
    assert parsed == [
        SecretRule("todo-db", (KeyRule("password"), KeyRule("DATABASE_URL", "url"))),
        SecretRule("todo-auth", (KeyRule("JWT_SIGNING_KEY", min_length=32),)),
        SecretRule("todo-registry", ()),
    ]


def test_parse_rules_reports_every_mistake_at_once():
    with pytest.raises(rules.SpecError) as err:
        rules.parse_rules(
            [
                {
                    "name": "todo-db",
                    "keys": [
                        {"name": "url", "format": "uri"},
                        {"name": "k", "min_length": 0},
                        {"name": "k2", "min_length": True},
                        {"format": "url"},
                        42,
                        {"name": "bad key!"},
                        {"name": "x", "minlength": 3},
                        "dup",
                        "dup",
                    ],
                },
                {"name": "Not_A_Name"},
                {"name": "todo-db"},
                {"keys": ["a"]},
            ],
            "Bad Namespace",
            ["Bad Namespace", "UPPER"],
        )
    msg = str(err.value)
    for part in (
        "format must be one of any, url, pem, got 'uri'",
        "min_length must be a whole number",
        "min_length must be a whole number of at least 1, got True",
        "keys[3] needs a name",
        "min_length, not int",
        "'bad key!' is not a valid Secret key",
        "unknown option(s) minlength",
        "lists key dup more than once",
        "'Not_A_Name' is not a valid Secret name",
        "lists todo-db more than once",
        "secrets[3] needs a name",
        "namespace 'Bad Namespace' is not a valid namespace name",
        "must not name the asserted namespace",
        "'UPPER' is not a valid namespace name",
    ):
        assert part in msg, part


def test_parse_rules_needs_at_least_one_secret():
    with pytest.raises(rules.SpecError, match="at least one Secret"):
        rules.parse_rules([], "todo-staging")


# -- evaluate and sharing -----------------------------------------------------------------------


def test_evaluate_reports_every_problem_without_values():
    planted = {
        "todo-db": {"password": b"changeme", "DATABASE_URL": b"db:5432", "extra": b"x"},
        "todo-auth": {"JWT_SIGNING_KEY": b"short-key-123", "empty": b""},
    }
    asserted = rules.parse_rules(
        [
            {"name": "todo-db", "keys": ["password", {"name": "DATABASE_URL", "format": "url"}, "missing"]},
            {"name": "todo-auth", "keys": [{"name": "JWT_SIGNING_KEY", "min_length": 32}, "empty"]},
            {"name": "todo-gone", "keys": ["a"]},
        ],
        "todo-staging",
    )
    found = rules.evaluate(asserted, {**planted, "todo-gone": None}, "todo-staging")
    assert [(p.secret, p.key, p.problem) for p in found] == [
        ("todo-db", "password", "placeholder"),
        ("todo-db", "DATABASE_URL", "invalid_url"),
        ("todo-db", "missing", "missing_key"),
        ("todo-auth", "JWT_SIGNING_KEY", "too_short"),
        ("todo-auth", "empty", "empty"),
        ("todo-gone", None, "missing_secret"),
    ]
    text = rules.summary(found, "todo-staging")
    assert text.startswith("6 problems with the Secrets in namespace todo-staging:")
    for value in (b"changeme", b"db:5432", b"short-key-123"):
        assert value.decode() not in text
        assert all(value.decode() not in str(p.as_dict()) for p in found)


def test_shared_values_name_both_sides_and_never_the_value():
    shared = pysecrets.token_hex(16).encode()
    own = {"todo-auth": {"JWT_SIGNING_KEY": shared, "other": b"own-only-value"}, "todo-gone": None}
    others = {
        "todo-production": {
            "todo-auth": {"JWT_SIGNING_KEY": shared},
            "copied": {"k1": shared, "k2": b"something else"},
        },
        "todo-dev": {"x": {"y": b"own-only-value"}, "blank": {"b": b""}},
    }
    found = rules.shared_values(own, others)
    assert [p.as_dict() for p in found] == [
        {
            "secret": "todo-auth",
            "key": "JWT_SIGNING_KEY",
            "problem": "shared",
            "message": "todo-auth/JWT_SIGNING_KEY has the same value as todo-production/copied/k1, "
            "todo-production/todo-auth/JWT_SIGNING_KEY",
            "shared_with": ["todo-production/copied/k1", "todo-production/todo-auth/JWT_SIGNING_KEY"],
        },
        {
            "secret": "todo-auth",
            "key": "other",
            "problem": "shared",
            "message": "todo-auth/other has the same value as todo-dev/x/y",
            "shared_with": ["todo-dev/x/y"],
        },
    ]
    dumped = str([p.as_dict() for p in found])
    assert shared.decode() not in dumped and rules.digest(shared) not in dumped


def test_empty_values_are_not_reported_as_shared():
    assert rules.shared_values({"s": {"k": b"", "w": b"  "}}, {"prod": {"t": {"k": b"", "w": b"  "}}}) == []


def test_decode_data_handles_missing_and_empty_data():
    assert rules.decode_data(None) == {}
    assert rules.decode_data({"a": base64.b64encode(b"\x00\xff").decode(), "b": ""}) == {
        "a": b"\x00\xff",
        "b": b"",
    }


def test_a_check_that_raises_reports_unreadable_without_the_text(monkeypatch):
    def boom(text):
        raise ValueError(f"cannot parse {text}")

    monkeypatch.setattr(rules, "url_problem", boom)
    assert rules.value_problems(b"https://s3cr3t-value.example", URL) == [
        ("unreadable", "could not be checked")
    ]
