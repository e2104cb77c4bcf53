"""A Kafka broker for pytest, without Docker: the `finstream` binary this wheel installs.

The pytest plugin (registered as ``finstream``) provides the session-scoped fixture
``kafka_bootstrap``: the ``host:port`` of a broker started on a free port with a temporary
data directory, stopped at the end of the session. ``EmbeddedKafka`` starts one directly.
"""
from .broker import EmbeddedKafka, finstream_binary

__all__ = ["EmbeddedKafka", "finstream_binary"]
