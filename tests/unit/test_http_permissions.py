"""Per-key permissions of the HTTP API: the file format, the patterns, and which request needs what."""

from __future__ import annotations

import orjson
import pytest

from featurestream.http import control
from featurestream.http.authorize import authorize, batch_groups, readable
from featurestream.http.credentials import AccessKey, CredentialsError, parse_credentials
from featurestream.http.errors import ApiError
from featurestream.http.permissions import OPERATION_ACTIONS, Action, PatternError, Permissions

RUNTIME_OPERATIONS = ("GetRecord", "BatchGetRecord", "PutRecord", "DeleteRecord", "BatchWriteRecord", "ListRecords",
                      "UpdateRecord")
_KEY = "aws_access_key_id = {k}\naws_secret_access_key = s-{k}\n"


def _file(**sections: str) -> str:
    return "".join(f"[{name}]\n{_KEY.format(k=name.upper())}{extra}\n" for name, extra in sections.items())


def test_every_operation_the_server_answers_needs_one_action():
    assert set(OPERATION_ACTIONS) == set(control.OPERATIONS) | set(RUNTIME_OPERATIONS)
    assert {op for op, a in OPERATION_ACTIONS.items() if a is Action.READ} == {
        "GetRecord", "BatchGetRecord", "ListRecords", "DescribeFeatureGroup", "ListFeatureGroups"}
    assert {op for op, a in OPERATION_ACTIONS.items() if a is Action.WRITE} == {
        "PutRecord", "DeleteRecord", "BatchWriteRecord", "UpdateRecord"}
    assert {op for op, a in OPERATION_ACTIONS.items() if a is Action.ADMIN} == {
        "CreateFeatureGroup", "UpdateFeatureGroup", "DeleteFeatureGroup"}


def test_patterns_match_whole_names_case_sensitively():
    p = Permissions.of({"read": ["orders-*", "customers", "*_v2"]})
    for name in ("orders-1", "orders-", "customers", "x_v2", "_v2"):
        assert p.allows(Action.READ, name), name
    for name in ("customers-eu", "my-orders-1", "Orders-1", "orders_1", "customer", "x_v2x"):
        assert not p.allows(Action.READ, name), name
    assert not p.allows(Action.WRITE, "orders-1")  # an action not granted is not allowed
    assert Permissions.of({"admin": ["*"]}).allows(Action.ADMIN, "anything-at_all")
    assert Permissions.everything().allows(Action.ADMIN, "x")
    for bad in ("orders-[0-9]", "a/b", "", "a.b", "orders?", "x" * 65, "ré"):
        with pytest.raises(PatternError):
            Permissions.of({"read": [bad]})


def test_a_file_without_permissions_gives_full_access_and_with_them_exactly_what_it_lists():
    keys = parse_credentials(_file(
        old="",
        reader="featurestream_read = orders-*, customers\n",
        writer="featurestream_read = orders-*\nfeaturestream_write = orders-*  orders_v2-*\nfeaturestream_admin =\n",
        nothing="featurestream_read =\n"))
    assert keys["OLD"] == AccessKey("s-OLD", Permissions.everything())
    reader = keys["READER"].permissions
    assert reader.grants == {Action.READ: ("orders-*", "customers")} and not reader.full
    assert not reader.allows(Action.WRITE, "orders-1") and not reader.allows(Action.ADMIN, "orders-1")
    writer = keys["WRITER"].permissions
    assert writer.allows(Action.WRITE, "orders_v2-x") and not writer.allows(Action.ADMIN, "orders-1")
    assert not any(keys["NOTHING"].permissions.allows(a, "orders-1") for a in Action)
    assert keys["NOTHING"].permissions.describe() == "nothing (every request is refused)"
    assert writer.describe() == "read orders-*; write orders-*, orders_v2-*"
    assert keys["OLD"].permissions.describe() == "full access"


@pytest.mark.parametrize("extra, says", [
    ("featurestream_reads = *\n", "featurestream_reads"),  # a typo must not leave full access
    ("read = orders-*\n", "'read'"),
    ("permissions = read:orders-*\n", "'permissions'"),
    ("featurestream_read = orders/*\n", "orders/*"),
    ("featurestream_write = orders-[12]\n", "orders-[12]"),
])
def test_a_permission_the_server_cannot_read_stops_it_with_the_section_named(extra, says):
    with pytest.raises(CredentialsError) as info:
        parse_credentials(_file(team=extra), "creds.ini")
    assert "creds.ini" in str(info.value) and "[team]" in str(info.value) and says in str(info.value)


def test_one_key_in_two_sections_must_agree():
    same = "[a]\n" + _KEY.format(k="K") + "[b]\n" + _KEY.format(k="K")
    assert list(parse_credentials(same)) == ["K"]
    with pytest.raises(CredentialsError, match="two sections"):
        parse_credentials(same + "featurestream_read = *\n")


def _refused(permissions: Permissions, operation: str, group: str | None, body: dict | None = None) -> str:
    with pytest.raises(ApiError) as info:
        authorize(permissions, operation, group, body or {})
    err = info.value
    # SageMaker's runtime API says AccessForbidden, its control plane (JSON 1.1) AccessDeniedException
    assert (err.status, err.code_for("runtime"), err.code_for("control")) == (403, "AccessForbidden",
                                                                            "AccessDeniedException")
    assert orjson.loads(err.body("runtime"))["__type"] == "AccessForbidden"
    return str(err)


def test_each_operation_is_checked_against_its_action_and_group():
    read_only = Permissions.of({"read": ["*"]})
    orders = Permissions.of({"read": ["orders-*"], "write": ["orders-*"], "admin": ["orders-*"]})
    for op in ("GetRecord", "DescribeFeatureGroup"):
        authorize(read_only, op, "customers", {})
        authorize(orders, op, "orders-1", {})
        assert "'customers'" in _refused(orders, op, "customers")
    for op in ("PutRecord", "DeleteRecord"):
        assert "'write'" in _refused(read_only, op, "customers")
        authorize(orders, op, "orders-1", {})
    for op in ("CreateFeatureGroup", "UpdateFeatureGroup", "DeleteFeatureGroup"):
        assert "'admin'" in _refused(read_only, op, "customers")
        authorize(orders, op, "orders-2", {})
        _refused(orders, op, "customers")
    authorize(orders, "ListFeatureGroups", None, {})  # never refused: filtered instead
    assert readable(orders, "orders-1") and not readable(orders, "customers")
    for op in OPERATION_ACTIONS:
        authorize(Permissions.everything(), op, "customers", {})


def test_a_batch_naming_any_group_the_key_may_not_use_is_refused_whole():
    orders = Permissions.of({"read": ["orders-*"], "write": ["orders-*"]})
    get = {"Identifiers": [{"FeatureGroupName": "orders-1", "RecordIdentifiersValueAsString": ["1"]},
                           {"FeatureGroupName": "arn:aws:sagemaker:us-east-1:000000000000:feature-group/customers",
                            "RecordIdentifiersValueAsString": ["1"]}]}
    message = _refused(orders, "BatchGetRecord", None, get)
    assert "'customers'" in message and "orders-1" not in message
    authorize(orders, "BatchGetRecord", None, {"Identifiers": get["Identifiers"][:1]})
    write = {"Entries": [{"FeatureGroupName": "orders-1", "Record": []},
                         {"FeatureGroupName": "customers", "Record": []}]}
    assert "'write'" in _refused(orders, "BatchWriteRecord", None, write)
    authorize(orders, "BatchWriteRecord", None, {"Entries": write["Entries"][:1]})
    # malformed entries are left to the operation's own validation, never a crash here
    odd = {"Entries": ["x", {"FeatureGroupName": "../etc"}, {"FeatureGroupName": 7}, {}]}
    assert batch_groups("BatchWriteRecord", odd) == []
    authorize(orders, "BatchWriteRecord", None, odd)
    authorize(orders, "BatchGetRecord", None, {"Identifiers": "not a list"})
    many = {"Identifiers": [{"FeatureGroupName": f"g{i}"} for i in range(9)]}
    assert "and 4 more" in _refused(orders, "BatchGetRecord", None, many)


def test_refusals_say_what_is_missing_without_the_key_secret():
    keys = parse_credentials(_file(ro="featurestream_read = *\n"))
    message = _refused(keys["RO"].permissions, "PutRecord", "customers")
    assert message == ("PutRecord needs the 'write' permission on feature group 'customers', which this access "
                       "key does not have")
    assert "s-RO" not in message



def test_every_routed_operation_is_known_before_the_body_is_read():
    from featurestream.http.app import operation_of

    routes = {("GET", "/FeatureGroup/g", None): "GetRecord", ("PUT", "/FeatureGroup/g", None): "PutRecord",
              ("DELETE", "/FeatureGroup/g", None): "DeleteRecord", ("POST", "/BatchGetRecord", None): "BatchGetRecord",
              ("POST", "/BatchWriteRecord", None): "BatchWriteRecord", ("POST", "/FeatureGroup/g", None): "Unknown",
              ("GET", "/BatchGetRecord", None): "Unknown", ("POST", "/", "SageMaker.CreateEndpoint"): "Unknown",
              ("POST", "/", "Other.ListFeatureGroups"): "Unknown"}
    routes.update({("POST", "/", f"SageMaker.{op}"): op for op in control.OPERATIONS})
    for (method, path, target), op in routes.items():
        assert operation_of(method, path, target) == op, (method, path, target)
        assert op == "Unknown" or op in OPERATION_ACTIONS


def test_the_documented_example_means_what_the_readme_says():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "featurestream" / "http" / "README.md").read_text()
    example = text[text.index("```ini\n# may read") + len("```ini\n"):]
    keys = parse_credentials(example[:example.index("```")])
    assert keys["AKIAANALYTICS"].permissions == Permissions.of({"read": ["orders-*", "customers"]})
    assert keys["AKIAORDERS"].permissions == Permissions.of({a: ["orders-*"] for a in ("read", "write", "admin")})
    assert keys["AKIATEAMA"].permissions.full
