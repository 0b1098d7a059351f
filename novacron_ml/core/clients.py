"""The librdkafka properties every Kafka client of the project starts from (security.protocol,
sasl.*, ssl.*, `kafka.client_config`): set by `load_settings` (and `kafka_flow` for the
settings it is given), read by `novacron_ml.core.kafka.client_config` and `with_client_log`.
A module of its own, without confluent-kafka, so that the settings can set it and operators
that read settings still never import the Kafka client."""

from __future__ import annotations

CLIENT_PROPERTIES: dict[str, str] = {}


def use_client_properties(properties: dict[str, str]) -> None:
    """Every client created afterwards starts from `properties`."""
    CLIENT_PROPERTIES.clear()
    CLIENT_PROPERTIES.update(properties)
