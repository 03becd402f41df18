"""The validator's fast path for numbers sent as text (every number of an HTTP put) against its slow path.

``RecordValidator.validate`` parses an Integral or Fractional feature's decimal text, and a Vector's list of
decimal texts, inline; anything that path does not take goes to the per-value coercers (``coerce_integral``,
``coerce_fractional``, ``coerce_collection``). Whichever path a text takes, the stored value (type and bits)
and the refusal (its message) must be what the coercers alone give: these tests compute that reference
independently, from the coercers, for generated texts of every shape that matters.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition as F
from schemas.validate import coerce_collection, coerce_fractional, coerce_integral, compile_validator

GROUP = FeatureGroup("texts", "id", "et", (
    F("id", "String"), F("et", "String"), F("n", "Integral"), F("x", "Fractional"),
    F("emb", "Fractional", "Vector", 3), F("ws", "Fractional", "List"),
))
ET = "2021-10-02T12:00:00Z"
VALIDATOR = compile_validator(GROUP)
FEATURES = {f.name: f for f in GROUP.features}

_digits = st.text("0123456789", min_size=1, max_size=25)
number_texts = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),  # in and out of int64
    st.floats(allow_nan=True, allow_infinity=True).map(repr),  # 'nan', 'inf', '1e+308', '-0.0'
    st.builds(lambda s, a, b, e: f"{s}{a}.{b}{e}", st.sampled_from(["", "+", "-"]), _digits, _digits,
              st.sampled_from(["", "e5", "E-400", "e+309", "e"])),
    st.sampled_from(["", " 1", "1 ", "\t2.5\n", "1_000", "0x10", "٣", "１", "1e", ".", "+", "-.5", "5.",
                     "1" * 21, "9" * 22, "-9223372036854775808", "9223372036854775808", "1" * 401,
                     "0" * 400 + "1", "0." + "0" * 398 + "5",  # finite, but longer than a text is parsed
                     "Infinity", "NaN", "-inf", "1,5"]),
    st.text(max_size=8),
)


def _bits(v: object) -> object:
    return struct.pack("<d", v) if type(v) is float else v


def _outcome(fn, *args) -> tuple[str, object]:
    try:
        return "ok", fn(*args)
    except RecordValidationError as exc:
        return "refused", str(exc)


def _validated(feature: str, value: object) -> object:
    return VALIDATOR.validate({"id": "c", "et": ET, feature: value}).record[feature]


def _reference(feature: str, value: object) -> object:
    """What the slow path alone gives: the coercer's value, or the validator's message for its reason."""
    fd = FEATURES[feature]
    coerce = {"n": coerce_integral, "x": coerce_fractional}.get(feature)
    try:
        return coerce(value) if coerce else coerce_collection(fd, value)
    except Exception as exc:  # the coercers' internal _Bad: the validator words it as _error does
        raise VALIDATOR._error(fd, value, str(exc)) from None


@settings(max_examples=600, deadline=None)
@given(feature=st.sampled_from(["n", "x"]), text=number_texts)
def test_a_scalar_number_as_text_is_stored_or_refused_as_the_coercer_says(feature, text):
    got, want = _outcome(_validated, feature, text), _outcome(_reference, feature, text)
    assert (got[0], _bits(got[1])) == (want[0], _bits(want[1]))
    if got[0] == "ok":
        assert type(got[1]) is (int if feature == "n" else float)


@settings(max_examples=400, deadline=None)
@given(feature=st.sampled_from(["emb", "ws"]), texts=st.lists(number_texts, max_size=4))
def test_a_list_of_number_texts_is_stored_or_refused_as_the_coercer_says(feature, texts):
    got, want = _outcome(_validated, feature, texts), _outcome(_reference, feature, texts)
    if got[0] == "ok":
        assert want[0] == "ok" and [_bits(v) for v in got[1]] == [_bits(v) for v in want[1]]
    else:
        assert got == want


@pytest.mark.parametrize("texts", [["1e309", "1", "2"], ["1", "-1e999", "2"], ["1", "2", "0" * 400 + "3"]])
def test_a_vector_with_an_element_the_slow_path_refuses_is_refused_for_that_element(texts):
    assert _outcome(_validated, "emb", texts) == _outcome(_reference, "emb", texts)
    assert _outcome(_validated, "emb", texts)[0] == "refused"


@pytest.mark.parametrize("texts", [["1e308", "1e308", "1"], ["-1e308", "-1e308", "0"]])
def test_finite_elements_whose_sum_overflows_are_still_accepted(texts):
    # The inline path proves finiteness by a finite sum; when the sum overflows it must hand over to the
    # slow path (which checks each element), not refuse finite values.
    stored = _validated("emb", texts)
    assert stored == [float(t) for t in texts] and all(map(math.isfinite, stored))
