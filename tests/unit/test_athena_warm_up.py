"""The Athena door's warm-up: what a worker opens before its first query (servers: test_athena_api.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from featurestream.http.athena import AthenaApi


class _Store:
    """The two things the warm-up reads from a FeatureStore: its config and its offline tables."""

    def __init__(self, offline_uri: str | None, fail: Exception | None = None) -> None:
        self.config = SimpleNamespace(offline_uri=offline_uri, storage_options=lambda: {})
        self.fail = fail
        self.opened = 0

    def offline_tables(self) -> object:
        self.opened += 1
        if self.fail is not None:
            raise self.fail
        return object()


async def _unused(*_args: object) -> None:
    raise AssertionError("the warm-up runs on the query pool, not through run_blocking")


def test_the_warm_up_opens_the_catalog_and_the_offline_store(tmp_path):
    store = _Store(str(tmp_path / "offline"))
    api = AthenaApi(store, _unused)
    try:
        api.start_warm_up()
        api.pool.shutdown(wait=True)  # the warm-up was submitted to it
    finally:
        api.close()
    assert store.opened == 1


def test_a_catalog_that_does_not_answer_is_logged_and_left_to_the_first_query(caplog):
    store = _Store("s3://bucket/offline", fail=ConnectionError("catalog at 127.0.0.1:1 refused"))
    api = AthenaApi(store, _unused)
    with caplog.at_level(logging.INFO, logger="featurestream.http.athena"):
        api.warm_up()  # must not raise: the worker goes on serving
    api.close()
    assert store.opened == 1
    assert "ConnectionError: catalog at 127.0.0.1:1 refused" in caplog.text
    assert "the first query will retry" in caplog.text


def test_a_store_without_an_offline_uri_opens_only_the_catalog():
    store = _Store(None)
    api = AthenaApi(store, _unused)
    api.warm_up()
    api.close()
    assert store.opened == 1
