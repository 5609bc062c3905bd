# Copyright: (c) 2026, Todo platform team
# Apache License 2.0
"""The deploy lock's rules, without I/O: a coordination.k8s.io/v1 Lease held by one run.

A Lease is free when it does not exist, has no holder, or its holder stopped renewing it
(``renewTime + leaseDurationSeconds`` is in the past: a run that was killed). A run takes a
free Lease, renews its own, and waits for one held by someone else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(MICRO_TIME)


def parse_time(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class LeaseView:
    """What matters of an existing Lease."""

    holder: str | None
    renewed: datetime | None
    duration: int | None
    acquired: datetime | None
    transitions: int
    resource_version: str | None
    annotations: dict

    @classmethod
    def from_object(cls, lease: dict) -> LeaseView:
        spec = lease.get("spec") or {}
        metadata = lease.get("metadata") or {}
        return cls(
            holder=spec.get("holderIdentity") or None,
            renewed=parse_time(spec.get("renewTime")),
            duration=spec.get("leaseDurationSeconds"),
            acquired=parse_time(spec.get("acquireTime")),
            transitions=spec.get("leaseTransitions") or 0,
            resource_version=metadata.get("resourceVersion"),
            annotations=dict(metadata.get("annotations") or {}),
        )

    def expires(self) -> datetime | None:
        if self.renewed is None or self.duration is None:
            return None
        return self.renewed + timedelta(seconds=self.duration)

    def expired(self, now: datetime) -> bool:
        expires = self.expires()
        return expires is None or expires <= now

    def describe(self) -> str:
        parts = [f"held by {self.holder}"]
        if self.acquired:
            parts.append(f"since {format_time(self.acquired)}")
        expires = self.expires()
        if expires:
            parts.append(f"until {format_time(expires)} unless renewed")
        details = ", ".join(f"{k.split('/')[-1]}={v}" for k, v in sorted(self.annotations.items()))
        return " ".join(parts) + (f" ({details})" if details else "")


# What to do with the Lease as found.
CREATE, TAKE, RENEW, WAIT = "create", "take", "renew", "wait"


def decide(current: LeaseView | None, holder: str, now: datetime) -> str:
    """CREATE (no Lease), RENEW (ours), TAKE (free or expired), or WAIT (someone else's, live)."""
    if current is None:
        return CREATE
    if current.holder == holder:
        return RENEW
    if current.holder is None or current.expired(now):
        return TAKE
    return WAIT


def lease_body(
    name: str,
    holder: str,
    duration: int,
    now: datetime,
    *,
    current: LeaseView | None,
    annotations: dict,
) -> dict:
    """The Lease to write for `holder` (a create, or an update of `current`)."""
    renewing = current is not None and current.holder == holder
    acquired = current.acquired if renewing and current.acquired else now
    transitions = (current.transitions if current else 0) + (0 if renewing or current is None else 1)
    metadata = {"name": name, "annotations": annotations}
    if current is not None:
        metadata["resourceVersion"] = current.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": format_time(acquired),
            "renewTime": format_time(now),
            "leaseTransitions": transitions,
        },
    }
