"""Kafka's jars follow versions.env: one pin, a cache key that changes with it (rung L0)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from testkit.kafka import kafka_jars

pytestmark = pytest.mark.unit
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def test_the_pom_takes_the_kafka_version_from_the_command_line_only():
    pom = ET.parse(kafka_jars.POM).getroot()  # noqa: S314 - our own file in the repository
    broker = next(
        d
        for d in pom.iterfind("m:dependencies/m:dependency", POM_NS)
        if d.findtext("m:artifactId", namespaces=POM_NS) == "kafka_2.13"
    )
    assert broker.findtext("m:version", namespaces=POM_NS) == "${kafka.version}"
    # No default in <properties>: a forgotten -Dkafka.version fails instead of fetching another Kafka.
    assert pom.find("m:properties/m:kafka.version", POM_NS) is None


def test_kafka_is_a_4x_release_and_keys_the_cache():
    versions = kafka_jars.read_versions()
    assert re.fullmatch(r"4\.\d+\.\d+", versions["KAFKA_VERSION"])
    libs = kafka_jars.libs_dir(versions)
    assert libs.parent.name.startswith(versions["KAFKA_VERSION"] + "-")
    assert libs.is_relative_to(kafka_jars.cache_root())
    other = kafka_jars.libs_dir({**versions, "KAFKA_VERSION": "4.0.0"})
    assert other != libs
