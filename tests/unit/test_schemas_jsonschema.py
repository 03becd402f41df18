import jsonschema
import pytest

from schemas.group import FeatureGroup
from schemas.jsonschema import record_json_schema
from schemas.types import FeatureDefinition as F
from schemas.validate import validate_record

G = FeatureGroup("customers", "id", "et", (
    F("id", "String"), F("et", "String"), F("age", "Integral"), F("score", "Fractional"),
    F("tags", "String", "List"), F("ids", "Integral", "Set"), F("emb", "Fractional", "Vector", 2)))
SCHEMA = record_json_schema(G)
V = jsonschema.Draft202012Validator(SCHEMA)

GOOD = [
    {"id": "c", "et": "2021-10-02T12:00:00Z"},
    {"id": "c", "et": "2021-10-02T12:00:00.123456789+02:00", "age": 42, "score": 0.5, "tags": ["a", "a"],
     "ids": [1, 2], "emb": [0.1, 0.2]},
    {"id": "c", "et": 1633176000.5, "age": None, "score": 3, "tags": None, "emb": None},
]
BAD = [
    {"et": "2021-10-02T12:00:00Z"},
    {"id": "c"},
    {"id": "", "et": "2021-10-02T12:00:00Z"},
    {"id": 5, "et": "2021-10-02T12:00:00Z"},
    {"id": "c", "et": "2021-10-02T12:00:00"},
    {"id": "c", "et": -1},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "age": 1.5},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "age": 2**63},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "age": "42"},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "score": "x"},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "tags": "a"},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "tags": ["a", None]},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "ids": [1, 1]},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "emb": [0.1]},
    {"id": "c", "et": "2021-10-02T12:00:00Z", "unknown": 1},
]


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("record", GOOD)
def test_good_records_pass_schema_and_validator(record):
    V.validate(record)
    validate_record(G, record)  # anything the schema accepts, the validator accepts


@pytest.mark.parametrize("record", BAD)
def test_bad_records_fail_schema(record):
    assert list(V.iter_errors(record))


def test_integral_identifier_schema():
    g = FeatureGroup("o", "oid", "ts", (F("oid", "Integral"), F("ts", "Fractional")))
    v = jsonschema.Draft202012Validator(record_json_schema(g))
    v.validate({"oid": 5, "ts": 1633176000})
    assert list(v.iter_errors({"oid": None, "ts": 1633176000}))
    assert list(v.iter_errors({"oid": 5, "ts": 253402300800}))
