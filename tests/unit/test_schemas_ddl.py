import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from schemas.ddl import hive_ddl, offline_arrow_schema, quote_identifier, quote_string
from schemas.errors import DefinitionError
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition as F

G = FeatureGroup("customers", "customer_id", "event_time", (
    F("customer_id", "String"), F("event_time", "Fractional"), F("age", "Integral"), F("score", "Fractional"),
    F("tags", "String", "List"), F("ids", "Integral", "Set"), F("emb", "Fractional", "Vector", 4),
), offline_uri="s3://bucket/offline/customers-1633176000")

EXPECTED = [
    ("customer_id", "STRING"), ("event_time", "TIMESTAMP"), ("age", "BIGINT"), ("score", "DOUBLE"),
    ("tags", "ARRAY<STRING>"), ("ids", "ARRAY<BIGINT>"), ("emb", "ARRAY<DOUBLE>"),
    ("api_invocation_time", "TIMESTAMP"), ("write_time", "TIMESTAMP"), ("is_deleted", "BOOLEAN"),
    ("_kafka_topic", "STRING"), ("_kafka_partition", "INT"), ("_kafka_offset", "BIGINT"),
]


def parsed(ddl, dialect):
    tree = sqlglot.parse_one(ddl, read=dialect)
    assert isinstance(tree, exp.Create) and tree.args.get("exists")
    cols = [(c.name, c.args["kind"].sql(dialect="hive")) for c in tree.this.expressions]
    props = tree.args["properties"].expressions
    part = next(p for p in props if isinstance(p, exp.PartitionedByProperty))
    parts = [(c.name, c.args["kind"].sql(dialect="hive")) for c in part.this.expressions]
    location = next(p for p in props if isinstance(p, exp.LocationProperty)).this.this
    assert any(isinstance(p, exp.ExternalProperty) for p in props)
    fmt = next(p for p in props if isinstance(p, exp.FileFormatProperty))
    return tree.this.this.name, cols, parts, location, fmt.this.name


@pytest.mark.parametrize("dialect", ["hive", "spark", "athena"])
def test_ddl_parses_with_columns_partitions_location(dialect):
    name, cols, parts, location, fmt = parsed(hive_ddl(G), dialect)
    assert name == "customers"
    assert cols == EXPECTED
    assert parts == [("year", "STRING"), ("month", "STRING"), ("day", "STRING"), ("hour", "STRING")]
    assert location == "s3://bucket/offline/customers-1633176000/data"
    assert fmt.upper() == "PARQUET"


def test_location_argument_and_escaping():
    ddl = hive_ddl(G, location="s3://b/it's\\here")
    assert parsed(ddl, "hive")[3] == "s3://b/it's\\here/data"
    assert quote_identifier("a`b") == "`a``b`"
    assert quote_string("it's") == "'it\\'s'"
    assert parsed(hive_ddl(G, location="s3://b/t/data"), "hive")[3] == "s3://b/t/data"


def test_no_location_is_an_error():
    g = FeatureGroup("x", "id", "et", (F("id", "String"), F("et", "String")))
    with pytest.raises(DefinitionError, match="no offline store location"):
        hive_ddl(g)


def test_arrow_schema_matches_ddl():
    schema = offline_arrow_schema(G)
    assert schema.names == [n for n, _ in EXPECTED]
    ts = pa.timestamp("ns", tz="UTC")
    assert schema.field("event_time").type == ts
    assert schema.field("api_invocation_time").type == ts and schema.field("write_time").type == ts
    assert schema.field("customer_id").type == pa.string()
    assert schema.field("age").type == pa.int64() and schema.field("score").type == pa.float64()
    assert schema.field("tags").type == pa.list_(pa.string())
    assert schema.field("ids").type == pa.list_(pa.int64())
    assert schema.field("emb").type == pa.list_(pa.float64())
    assert schema.field("is_deleted").type == pa.bool_()
    assert schema.field("_kafka_partition").type == pa.int32()
    assert schema.field("_kafka_offset").type == pa.int64()
    # the Hive type of every Arrow column agrees with the DDL
    hive_of = {pa.string(): "STRING", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", ts: "TIMESTAMP",
               pa.bool_(): "BOOLEAN", pa.int32(): "INT"}

    def to_hive(t):
        return f"ARRAY<{to_hive(t.value_type)}>" if pa.types.is_list(t) else hive_of[t]

    assert [(f.name, to_hive(f.type)) for f in schema] == EXPECTED
