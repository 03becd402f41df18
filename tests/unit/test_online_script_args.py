"""The arguments the store hands to write_if_newer.lua (pure: no Redis)."""

import orjson
import pytest

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.messages import DeleteMessage, PutMessage
from schemas.ttl import Ttl
from schemas.types import FeatureDefinition as F
from sinks.online.store import write_script_args

S = 1_000_000_000
ET = 1_633_176_000_123_456_789
G = FeatureGroup("customers", "cid", "et", (F("cid", "String"), F("et", "String"), F("age", "Integral")),
                 ttl=Ttl(1, "Hours"))


def test_put_args_carry_exact_times_seq_expiry_and_one_fields_blob():
    args = write_script_args(G, PutMessage("c1", ET, {"cid": "c1", "age": 42, "et": None}, schema_version=3),
                        2, 17, ET)
    op, et, part, off, expired, exp_ns, exp_ms, version, blob, life = args
    assert (op, et, part, off, expired, version) == ("put", str(ET), "2", "17", "0", "3")
    assert life == G.life == str(round(G.creation_time * 1_000_000))
    assert int(exp_ns) == ET + 3600 * S and int(exp_ms) == -(-(ET + 3600 * S) // 1_000_000)
    assert orjson.loads(blob) == ["cid", '"c1"', "age", "42"]  # nulls absent, values as JSON text


def test_record_ttl_and_already_expired_flag():
    args = write_script_args(G, PutMessage("c1", ET, {"cid": "c1"}, ttl_seconds=10), 0, 0, ET + 10 * S)
    assert args[4] == "1" and int(args[5]) == ET + 10 * S


def test_soft_delete_gets_group_ttl_hard_delete_none():
    soft = write_script_args(G, DeleteMessage("c1", ET, "x", "SoftDelete"), 0, 1, ET)
    hard = write_script_args(G, DeleteMessage("c1", ET, "x", "HardDelete"), 0, 1, ET)
    # 10 arguments per record whatever the op (the script reads records at a fixed stride); no fields.
    assert soft[0] == "soft" and int(soft[5]) == ET + 3600 * S and len(soft) == 10 and soft[8] == ""
    assert hard[0] == "hard" and hard[5] == hard[6] == "" and len(hard) == 10 and hard[8] == ""
    assert soft[9] == hard[9] == G.life


def test_no_group_ttl_means_no_expiry_args():
    g = FeatureGroup("plain", "cid", "et", (F("cid", "String"), F("et", "String")))
    args = write_script_args(g, PutMessage("c1", ET, {"cid": "c1"}), 0, 0, ET)
    assert args[4:7] == ["0", "", ""]


@pytest.mark.parametrize("message,match", [
    (PutMessage("c1", 1.5, {}), "not a 64-bit integer"),
    (PutMessage("c1", True, {}), "not a 64-bit integer"),
    (PutMessage("c1", -(2**63) - 1, {}), "not a 64-bit integer"),
    (PutMessage("c1", ET, {}, ttl_seconds=0), "ttl_seconds 0"),
    (PutMessage("c1", ET, {}, ttl_seconds=2.5), "ttl_seconds 2.5"),
    (PutMessage("", ET, {}), "non-empty string"),
    (PutMessage("x" * 2049, ET, {}), "at most 2048"),
    (DeleteMessage("c1", ET, "x", "Purge"), "'Purge' is not SoftDelete or HardDelete"),
])
def test_bad_messages_raise_naming_the_group(message, match):
    with pytest.raises(RecordValidationError, match=match) as info:
        write_script_args(G, message, 0, 0, ET)
    assert "customers" in str(info.value)
