"""featurestream: a self-hosted, Kafka-native feature store (the front doors).

The SDK facade lives in :mod:`featurestream.sdk`; configuration in :mod:`featurestream.config`.
"""

__version__ = "0.1.0"
