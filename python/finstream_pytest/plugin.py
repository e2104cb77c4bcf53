"""pytest plugin: the ``kafka_bootstrap`` fixture (see the package docs)."""
import pytest

from .broker import EmbeddedKafka


@pytest.fixture(scope="session")
def finstream_kafka():
    """The session's EmbeddedKafka (its log, data directory and bootstrap address)."""
    with EmbeddedKafka() as kafka:
        yield kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(finstream_kafka):
    """``host:port`` of a Kafka broker for this test session, on a free port."""
    return finstream_kafka.bootstrap_servers
