"""Pure translation between SageMaker's wire shapes and featurestream's model."""

from __future__ import annotations

import orjson
import pytest

from featurestream.http import control
from featurestream.http.credentials import AccessKey, CredentialsError, parse_credentials
from featurestream.http.errors import ApiError, from_exception
from featurestream.http.permissions import Permissions
from featurestream.http.records import (
    event_time_from_wire,
    group_arn,
    group_name,
    record_from_wire,
    record_to_wire,
    ttl_seconds,
)
from schemas.errors import (
    DefinitionError,
    GroupExistsError,
    GroupNotFoundError,
    RecordValidationError,
    ServiceUnavailableError,
)
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition
from schemas.validate import validate_record


def _group(et_type: str = "String", **kw) -> FeatureGroup:
    feats = [FeatureDefinition("id", "String"), FeatureDefinition("et", et_type),
             FeatureDefinition("age", "Integral"), FeatureDefinition("score", "Fractional"),
             FeatureDefinition("tags", "String", "List"), FeatureDefinition("emb", "Fractional", "Vector", 2)]
    return FeatureGroup(name="customers", record_identifier_name="id", event_time_name="et", features=feats,
                        offline_enabled=False, **kw)


def _wire(**values) -> list[dict]:
    out = []
    for k, v in values.items():
        out.append({"FeatureName": k, ("ValueAsStringList" if isinstance(v, list) else "ValueAsString"): v})
    return out


def test_wire_record_is_coerced_by_the_group_validator():
    g = _group()
    rec = record_from_wire(g, _wire(id="c1", et="2021-10-02T12:00:00Z", age="42", score="0.75",
                                    tags=["a", "b"], emb=["0.5", "1e3"]))
    msg = validate_record(g, rec)
    assert msg.record == {"id": "c1", "et": "2021-10-02T12:00:00Z", "age": 42, "score": 0.75,
                          "tags": ["a", "b"], "emb": [0.5, 1000.0]}


def test_fractional_event_time_text_becomes_a_number():
    g = _group("Fractional")
    rec = record_from_wire(g, _wire(id="c1", et="1633176000.5"))
    assert rec["et"] == 1633176000.5 and validate_record(g, rec).record["et"] == 1633176000.5
    assert event_time_from_wire(g, "1633176000") == 1633176000.0
    assert event_time_from_wire(g, "nan") == "nan"  # left as text: the validator explains
    assert event_time_from_wire(_group(), "2021-10-02T12:00:00Z") == "2021-10-02T12:00:00Z"


@pytest.mark.parametrize("items,match", [
    (None, "non-empty list"), ([], "non-empty list"), ("x", "non-empty list"), ([1], r"Record\[0\]"),
    ([{"ValueAsString": "x"}], "no FeatureName"), ([{"FeatureName": 3, "ValueAsString": "x"}], "no FeatureName"),
    ([{"FeatureName": "id", "ValueAsString": "a"}, {"FeatureName": "id", "ValueAsString": "b"}], "twice"),
    ([{"FeatureName": "id"}], "exactly one"),
    ([{"FeatureName": "id", "ValueAsString": "a", "ValueAsStringList": []}], "exactly one"),
    ([{"FeatureName": "id", "ValueAsString": 5}], "must be a string"),
    ([{"FeatureName": "tags", "ValueAsStringList": [1, 2]}], "list of strings"),
    ([{"FeatureName": "age", "ValueAsStringList": ["1"]}], "use ValueAsString"),
    ([{"FeatureName": "id", "ValueAsString": "a", "Extra": 1}], "unknown field"),
    ([{"FeatureName": "id", "Extra": "a"}], r"unknown field\(s\) Extra"),  # two fields, but not a value
    ([{"FeatureName": "id", "ValueAsStringList": ["a"], "Extra": 1}], "unknown field"),
])
def test_malformed_wire_records(items, match):
    with pytest.raises(ApiError, match=match) as info:
        record_from_wire(_group(), items)
    assert info.value.status == 400 and info.value.code_for("runtime") == "ValidationError"


@pytest.mark.parametrize("values,feature", [
    (dict(id="c1", et="2021-10-02T12:00:00Z", age="4.5"), "age"),
    (dict(id="c1", et="2021-10-02T12:00:00Z", age="99999999999999999999"), "age"),
    (dict(id="c1", et="2021-10-02T12:00:00Z", score="NaN"), "score"),
    (dict(id="c1", et="2021-10-02T12:00:00Z", score="inf"), "score"),
    (dict(id="c1", et="2021-10-02T12:00:00Z", emb=["1"]), "emb"),
    (dict(id="c1", et="yesterday"), "et"),
    (dict(id="c1", et="2021-10-02T12:00:00Z", nope="1"), "nope"),
    (dict(et="2021-10-02T12:00:00Z"), "id"),
])
def test_bad_values_are_refused_naming_the_feature(values, feature):
    g = _group()
    with pytest.raises(RecordValidationError) as info:
        validate_record(g, record_from_wire(g, _wire(**values)))
    assert feature in str(info.value) and "customers" in str(info.value)


def test_record_to_wire_renders_every_type_as_text():
    out = record_to_wire({"id": "c1", "age": 42, "score": 0.1, "flag": True, "tags": ["a"], "emb": [1.5, 2.0],
                          "gone": None})
    assert out == [{"FeatureName": "id", "ValueAsString": "c1"}, {"FeatureName": "age", "ValueAsString": "42"},
                   {"FeatureName": "score", "ValueAsString": "0.1"}, {"FeatureName": "flag", "ValueAsString": "1"},
                   {"FeatureName": "tags", "ValueAsStringList": ["a"]},
                   {"FeatureName": "emb", "ValueAsStringList": ["1.5", "2.0"]}]
    assert float(out[2]["ValueAsString"]) == 0.1  # repr round-trips doubles exactly


@pytest.mark.parametrize("bad", [None, 3, "", "a/b", "../etc", "a" * 65, "-x", "x:y", "café", "a\x00",
                                 "arn:aws:sagemaker:us-east-1:123456789012:feature-group/../x"])
def test_group_names_are_validated_before_any_io(bad):
    with pytest.raises(ApiError, match="FeatureGroupName"):
        group_name(bad)


def test_group_name_accepts_names_and_arns():
    assert group_name("my-group_1") == "my-group_1"
    arn = group_arn("Customers", "eu-west-1")
    assert arn == "arn:aws:sagemaker:eu-west-1:000000000000:feature-group/Customers"
    assert group_name(arn) == "Customers"


def test_ttl_duration():
    assert ttl_seconds(None) is None
    assert ttl_seconds({"Unit": "Days", "Value": 2}) == 172800
    for bad in ({"Unit": "Days"}, {"Unit": "Years", "Value": 1}, {"Unit": "Days", "Value": 0}, "7d",
                {"Unit": "Days", "Value": 1, "x": 1}, {"Unit": "Seconds", "Value": 10**20}):
        with pytest.raises(ApiError):
            ttl_seconds(bad)


# ------------------------------------------------------------------ control plane

CREATE = {
    "FeatureGroupName": "orders", "RecordIdentifierFeatureName": "order_id", "EventTimeFeatureName": "ts",
    "FeatureDefinitions": [{"FeatureName": "order_id", "FeatureType": "Integral"},
                           {"FeatureName": "ts", "FeatureType": "String"},
                           {"FeatureName": "v", "FeatureType": "Fractional", "CollectionType": "Vector",
                            "CollectionConfig": {"VectorConfig": {"Dimension": 3}}}],
    "OnlineStoreConfig": {"EnableOnlineStore": True, "TtlDuration": {"Unit": "Hours", "Value": 5},
                          "StorageType": "Standard"},
    "OfflineStoreConfig": {"S3StorageConfig": {"S3Uri": "s3://their-bucket/fs"}, "DisableGlueTableCreation": True},
    "RoleArn": "arn:aws:iam::123456789012:role/fs", "Description": "orders", "Tags": [{"Key": "a", "Value": "b"}],
}


def test_create_keeps_unused_fields_and_describe_shows_them():
    g = control.group_from_create(CREATE)
    assert g.online_enabled and g.offline_enabled and g.ttl.seconds == 5 * 3600
    assert g.extra["sagemaker"]["RoleArn"] == CREATE["RoleArn"] and g.extra["sagemaker"]["Tags"]
    orjson.dumps(g.to_dict())  # the registry stores it as JSON
    stored = FeatureGroup.from_dict(orjson.loads(orjson.dumps(g.to_dict())))
    d = control.describe(stored, "us-east-1")
    assert d["OnlineStoreConfig"] == {"StorageType": "Standard", "EnableOnlineStore": True,
                                      "TtlDuration": {"Unit": "Hours", "Value": 5}}
    assert d["OfflineStoreConfig"]["S3StorageConfig"]["S3Uri"] == "s3://their-bucket/fs"
    assert d["OfflineStoreConfig"]["DisableGlueTableCreation"] is True
    assert d["RoleArn"] == CREATE["RoleArn"] and d["FeatureDefinitions"] == CREATE["FeatureDefinitions"]


def test_table_format_is_iceberg_and_glue_gets_a_clear_answer():
    offline = CREATE["OfflineStoreConfig"]
    for asked in (None, "Iceberg"):
        body = {**CREATE, "OfflineStoreConfig": {**offline, **({"TableFormat": asked} if asked else {})}}
        g = FeatureGroup.from_dict(orjson.loads(orjson.dumps(control.group_from_create(body).to_dict())))
        assert control.describe(g, "us-east-1")["OfflineStoreConfig"]["TableFormat"] == "Iceberg"
    with pytest.raises(ApiError, match="TableFormat 'Glue'.*not supported.*Apache Iceberg") as info:
        control.group_from_create({**CREATE, "OfflineStoreConfig": {**offline, "TableFormat": "Glue"}})
    assert info.value.status == 400
    with pytest.raises(ApiError, match="must be 'Iceberg'"):
        control.group_from_create({**CREATE, "OfflineStoreConfig": {**offline, "TableFormat": "Delta"}})


def test_create_without_any_store_or_with_bad_fields_is_a_validation_error():
    body = {k: v for k, v in CREATE.items() if k not in ("OnlineStoreConfig", "OfflineStoreConfig")}
    with pytest.raises(DefinitionError, match="enable the online store"):
        control.group_from_create(body)
    for key in ("FeatureGroupName", "RecordIdentifierFeatureName", "FeatureDefinitions"):
        with pytest.raises((ApiError, DefinitionError)):
            control.group_from_create({k: v for k, v in CREATE.items() if k != key})
    with pytest.raises(ApiError, match="EnableOnlineStore"):
        control.group_from_create({**CREATE, "OnlineStoreConfig": {"EnableOnlineStore": "yes"}})
    with pytest.raises(DefinitionError):
        control.group_from_create({**CREATE, "FeatureDefinitions": [{"FeatureName": "x", "FeatureType": "Blob"}]})
    with pytest.raises(DefinitionError, match="event time"):
        control.group_from_create({**CREATE, "EventTimeFeatureName": "nope"})
    with pytest.raises(ApiError):
        control.group_from_create({**CREATE, "OfflineStoreConfig": "s3://x"})


def test_create_bounds_the_tags_and_unknown_fields_it_keeps_naming_the_limit():
    # At the limits: 50 tags of the longest key and value, and 16 KB of unknown fields, are kept.
    tags = [{"Key": f"{i:02d}".ljust(control.MAX_TAG_KEY_CHARS, "k"), "Value": "v" * control.MAX_TAG_VALUE_CHARS}
            for i in range(control.MAX_TAGS)]
    filler = "x" * (control.MAX_KEPT_BYTES - len(orjson.dumps({**CREATE, "Tags": None, "Extra": ""})) - 200)
    kept = control.group_from_create({**CREATE, "Tags": tags, "Extra": filler}).extra["sagemaker"]
    assert kept["Tags"] == tags and kept["Extra"] == filler

    over = [
        ({"Tags": [*tags, {"Key": "one-more", "Value": ""}]}, "Tags has 51 tags; at most 50"),
        ({"Tags": [{"Key": "k" * 129, "Value": ""}]}, r"Tags\[0\].Key is 129 characters; a tag key has 1 to 128"),
        ({"Tags": [{"Key": "k", "Value": "v" * 257}]}, r"Tags\[0\].Value is 257 characters; .* at most 256"),
        ({"Tags": "k=v"}, "Tags must be a list"),
        # The probe's request: one unknown field of a megabyte, and many small ones.
        ({"Junk": "x" * 1_000_000}, r"\(Junk, .*\) take 10\d{5} bytes as JSON; at most 16384 are allowed"),
        ({f"Field{i}": "y" * 100 for i in range(200)}, "at most 16384 are allowed"),
        ({"OnlineStoreConfig": {**CREATE["OnlineStoreConfig"], "Junk": ["z" * 1000] * 20}},
         r"\(OnlineStoreConfig, .*at most 16384"),
    ]
    for extra, message in over:
        with pytest.raises(ApiError, match=message) as info:
            control.group_from_create({**CREATE, **extra})
        assert info.value.status == 400 and info.value.code_for("control") == "ValidationException"


def _groups(n: int) -> list[FeatureGroup]:
    base = control.group_from_create(CREATE)
    from dataclasses import replace

    return [replace(base, name=f"g{i:02d}", creation_time=1000.0 + i) for i in range(n)]


def test_list_pages_filters_and_sorts():
    groups = _groups(25)
    seen, token, pages = [], None, 0
    while True:
        body = {"MaxResults": 10, "SortBy": "Name", "SortOrder": "Ascending"}
        if token:
            body["NextToken"] = token
        page = control.list_page(groups, body, "us-east-1")
        seen += [s["FeatureGroupName"] for s in page["FeatureGroupSummaries"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert seen == [f"g{i:02d}" for i in range(25)] and pages == 3
    newest = control.list_page(groups, {"MaxResults": 1}, "r")["FeatureGroupSummaries"][0]
    assert newest["FeatureGroupName"] == "g24"  # default: CreationTime, Descending
    assert len(control.list_page(groups, {"NameContains": "G1"}, "r")["FeatureGroupSummaries"]) == 10
    assert len(control.list_page(groups, {"CreationTimeAfter": 1020, "MaxResults": 100}, "r")
               ["FeatureGroupSummaries"]) == 4
    assert control.list_page(groups, {"FeatureGroupStatusEquals": "Deleting"}, "r")["FeatureGroupSummaries"] == []


@pytest.mark.parametrize("body", [{"MaxResults": 0}, {"MaxResults": 101}, {"MaxResults": "5"},
                                  {"NextToken": "garbage!!"}, {"NextToken": "eyJvIjogLTF9"},
                                  {"SortBy": "Size"}, {"SortOrder": "Up"}, {"CreationTimeAfter": "x"},
                                  {"NameContains": 5}])
def test_list_rejects_bad_arguments(body):
    with pytest.raises(ApiError):
        control.list_page(_groups(3), body, "r")


def test_update_args():
    args = control.update_args({"FeatureAdditions": [{"FeatureName": "n", "FeatureType": "String"}],
                                "OnlineStoreConfig": {"TtlDuration": {"Unit": "Days", "Value": 1}}})
    assert args["add_features"][0].name == "n" and args["ttl"].seconds == 86400
    assert control.update_args({"ThroughputConfig": {"ThroughputMode": "OnDemand"}}) == {}
    with pytest.raises(ApiError):
        control.update_args({"FeatureAdditions": []})
    with pytest.raises(ApiError):
        control.update_args({"FeatureAdditions": [{"FeatureName": "n", "FeatureType": "String"}] * 101})


# ------------------------------------------------------------------ errors, credentials, cache

def test_typed_errors_map_to_the_aws_codes():
    cases = [(GroupNotFoundError("g"), "ResourceNotFound", 404), (GroupExistsError("g"), "ResourceInUse", 400),
             (RecordValidationError("bad"), "ValidationError", 400), (ServiceUnavailableError("down"),
                                                                       "ServiceUnavailable", 503),
             (RuntimeError("boom"), "InternalFailure", 500)]
    for exc, code, status in cases:
        err = from_exception(exc)
        assert (err.code_for("runtime"), err.status) == (code, status)
        assert orjson.loads(err.body("runtime"))["__type"] == code
    assert from_exception(RecordValidationError("bad")).code_for("control") == "ValidationException"
    assert "boom" not in str(from_exception(RuntimeError("boom")))  # internals stay in the log
    assert len(orjson.loads(ApiError.validation("x" * 10000).body("runtime"))["message"]) == 2048


def test_credentials_file():
    keys = parse_credentials("[default]\naws_access_key_id = A1\naws_secret_access_key = s1\n"
                             "[ci]\naws_access_key_id=A2\naws_secret_access_key=s2=with=equals\n")
    # a file without permission lines means what it meant before permissions existed: full access
    assert keys == {"A1": AccessKey("s1", Permissions.everything()),
                    "A2": AccessKey("s2=with=equals", Permissions.everything())}
    for bad in ("", "no sections", "[x]\naws_access_key_id = A\n", "[x]\naws_secret_access_key = s\n", "\x00\x01["):
        with pytest.raises(CredentialsError):
            parse_credentials(bad)
