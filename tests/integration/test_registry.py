"""The registry against the real broker, across two processes (issue 2, section 4)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from schemas.errors import DefinitionError, GroupExistsError, GroupNotFoundError, ServiceUnavailableError
from schemas.ttl import Ttl
from schemas.types import FeatureDefinition, ScalarType
from streams.admin import admin_client, topic_exists
from streams.registry import Registry
from tests.integration.helpers import customers_group
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(stack):
    reg = Registry(stack.kafka_bootstrap, prefix=stack.topic_prefix, offline_base_uri=stack.offline_uri)
    yield reg
    reg.close()


def _other_process(stack, code: str) -> str:
    script = textwrap.dedent(f"""
        import sys
        from streams.registry import Registry
        reg = Registry({stack.kafka_bootstrap!r}, prefix={stack.topic_prefix!r}, offline_base_uri={stack.offline_uri!r})
    """) + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_create_describe_list_update_delete(registry, stack, unique_name):
    name = unique_name("reg")
    created = registry.create(customers_group(name, partitions=2))
    assert created.version == 1 and created.creation_time > 0
    assert created.offline_uri == f"{stack.offline_uri.rstrip('/')}/{name}-{created.creation_epoch}"
    assert topic_exists(admin_client(stack.kafka_bootstrap), registry.topic_of(name))
    assert registry.describe(name) == created
    assert name in [g.name for g in registry.list()]
    with pytest.raises(GroupExistsError, match=name):
        registry.create(customers_group(name))
    updated = registry.update(name, add_features=[FeatureDefinition("extra", ScalarType.STRING)], ttl=Ttl(2, "Days"))
    assert updated.version == 2 and updated.ttl == Ttl(2, "Days") and updated.has_feature("extra")
    with pytest.raises(DefinitionError, match="age"):
        registry.update(name, add_features=[FeatureDefinition("age", ScalarType.STRING)])
    registry.delete(name)
    with pytest.raises(GroupNotFoundError, match=name):
        registry.describe(name)
    with pytest.raises(GroupNotFoundError):
        registry.delete(name)
    wait_for(lambda: not topic_exists(admin_client(stack.kafka_bootstrap), registry.topic_of(name)),
             what="the group's topic to be deleted")


def test_two_processes_see_each_others_changes(registry, stack, unique_name):
    mine, theirs = unique_name("mine"), unique_name("theirs")
    registry.create(customers_group(mine))
    seen = _other_process(stack, f"""
        print(reg.describe({mine!r}).version)
        from tests.integration.helpers import customers_group
        reg.create(customers_group({theirs!r}))
        reg.update({mine!r}, ttl=__import__("schemas.ttl").ttl.Ttl(3, "Hours"))
    """)
    assert seen == "1"
    # No restart, no new Registry object: the next read catches up.
    assert registry.describe(theirs).version == 1
    assert registry.describe(mine).ttl == Ttl(3, "Hours")
    registry.delete(theirs)
    gone = _other_process(stack, f"print({theirs!r} in {{g.name for g in reg.list()}})")
    assert gone == "False"


def test_broker_down_is_a_clear_error(unique_name):
    from schemas.errors import ServiceUnavailableError

    reg = Registry("127.0.0.1:9", prefix="x", timeout_s=2)
    with pytest.raises(ServiceUnavailableError, match="127.0.0.1:9"):
        reg.list()


def test_a_name_deleted_and_created_again_at_once_gets_a_location_and_a_topic_of_its_own(registry, stack, unique_name):
    """Offline locations are <group>-<creation second>: two lives created within one second must not
    share one (the first life's purge would delete the second's files)."""
    name = unique_name("again")
    first = registry.create(customers_group(name, partitions=1))
    registry.delete(name)
    second = registry.create(customers_group(name, partitions=1))
    assert second.creation_epoch > first.creation_epoch
    assert second.offline_uri != first.offline_uri
    assert registry.topic_of(second) != registry.topic_of(first)


def test_delete_purges_online_before_its_tombstone_and_offline_after_it(registry, stack, unique_name):
    """on_purge (the online keys) runs while the group exists: if it fails, the group is kept. after_delete
    (the offline table) runs once every worker can see the tombstone, before the topic goes: if it
    fails, the group stays deleted and the error says what is left."""
    admin = admin_client(stack.kafka_bootstrap)
    name = unique_name("purged")
    registry.create(customers_group(name, partitions=1))
    seen: list[tuple[str, bool, bool]] = []

    def look(when: str):
        def hook(group):
            other = Registry(stack.kafka_bootstrap, prefix=stack.topic_prefix)  # another process's view
            try:
                seen.append((when, name in other.refresh(), topic_exists(admin, registry.topic_of(group))))
            finally:
                other.close()
        return hook

    def down(_group):
        raise ServiceUnavailableError("redis is unavailable")

    def s3_down(_group):
        raise ServiceUnavailableError("s3 is unavailable")

    with pytest.raises(ServiceUnavailableError, match="redis is unavailable"):
        registry.delete(name, on_purge=down)
    assert registry.describe(name).name == name  # kept: delete it again
    registry.delete(name, on_purge=look("online"), after_delete=look("offline"))
    assert seen == [("online", True, True), ("offline", False, True)]

    registry.create(customers_group(name, partitions=1))
    topic = registry.topic_of(name)
    with pytest.raises(ServiceUnavailableError, match=rf"{name}' is deleted, but purging its offline data failed: "
                                                       r"s3 is unavailable\. What may be left: its offline files at s3"):
        registry.delete(name, after_delete=s3_down)
    with pytest.raises(GroupNotFoundError):
        registry.describe(name)
    wait_for(lambda: not topic_exists(admin, topic), what="the group's topic to be deleted")
