"""Script reply codes → statuses and rejection reasons."""

import pytest

from sinks.online.status import (
    CODE_CORRUPT,
    CODE_FAILED,
    CODE_FOREIGN,
    WriteStatus,
    parse_script_replies,
    rejection_reason,
    status_of,
)


@pytest.mark.parametrize("code,status", [
    (1, WriteStatus.APPLIED), (2, WriteStatus.STALE), (3, WriteStatus.DUPLICATE),
    (4, WriteStatus.EXPIRED), (5, WriteStatus.DELETED), (6, WriteStatus.REJECTED),
    (CODE_CORRUPT, WriteStatus.REJECTED), (CODE_FOREIGN, WriteStatus.REJECTED), (CODE_FAILED, WriteStatus.REJECTED),
])
def test_codes_map_to_statuses(code, status):
    assert status_of(code) is status


@pytest.mark.parametrize("code", [0, 10, -1])
def test_unknown_code_is_an_error(code):
    with pytest.raises(ValueError, match="valid codes are 1-9"):
        status_of(code)


def test_reply_parsing_decodes_bytes_one_tuple_per_record():
    assert parse_script_replies([2, b"123", b"0:5", 1, b"", b""], 2) == [(2, "123", "0:5"), (1, "", "")]


@pytest.mark.parametrize("reply,count", [(None, 1), (b"OK", 1), ([1, b"x"], 1), (["1", b"", b""], 1),
                                         ([1, 2, 3, 4], 1), ([1, b"", b""], 2), ([1, b"", b"", "2", b"", b""], 2)])
def test_garbage_reply_is_an_error(reply, count):
    with pytest.raises(ValueError, match="unexpected reply"):
        parse_script_replies(reply, count)


def test_corrupt_meta_reason_says_what_was_expected():
    reason = rejection_reason("customers", "c-1", "put", 5, CODE_CORRUPT, "junk", "None")
    assert "corrupt metadata" in reason and "'junk'" in reason and "<partition>:<offset>" in reason


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
def test_no_reason_for_non_rejections(code):
    assert rejection_reason("g", "r", "put", 1, code, "", "") is None
