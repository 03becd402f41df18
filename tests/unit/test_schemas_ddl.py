import pyarrow as pa

from schemas.ddl import offline_arrow_schema
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition as F

G = FeatureGroup("customers", "customer_id", "event_time", (
    F("customer_id", "String"), F("event_time", "Fractional"), F("age", "Integral"), F("score", "Fractional"),
    F("tags", "String", "List"), F("ids", "Integral", "Set"), F("emb", "Fractional", "Vector", 4),
), offline_uri="s3://bucket/offline/customers-1633176000")

EXPECTED = ["customer_id", "event_time", "age", "score", "tags", "ids", "emb", "api_invocation_time", "write_time",
            "is_deleted", "_kafka_topic", "_kafka_partition", "_kafka_offset"]


def test_arrow_schema_columns_and_types():
    schema = offline_arrow_schema(G)
    assert schema.names == EXPECTED
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
