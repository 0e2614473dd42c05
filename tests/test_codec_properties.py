"""Property tests for dclcomms.codec (Hypothesis, derandomized).

* Random messages generated from the descriptors, for every message type,
  round-trip through encode/decode, and the protobuf Python runtime (an
  independent implementation) parses our bytes to the same content.
* 10,000 random or truncated buffers per packet type either decode or raise
  DecodeError with a listed code; never anything else.
"""

from __future__ import annotations

import base64
import functools
import math
import random
import struct
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dclcomms
from dclcomms import codec, errors
from tests.helpers.codec_schema import descriptor, is_map, message_class, real_oneof

FD = FieldDescriptor
PACKET_TYPES = [
    "decentraland.kernel.comms.v3.ClientPacket",
    "decentraland.kernel.comms.v3.ServerPacket",
    "decentraland.kernel.comms.rfc5.WsPacket",
    "decentraland.kernel.comms.rfc4.Packet",
    "decentraland.kernel.comms.v3.Heartbeat",
    "decentraland.kernel.comms.v3.IslandChangedMessage",
]


def _round_trip_settings(type_name: str) -> settings:
    # The packet wrappers reach every nested type; leaf types need fewer runs.
    return settings(
        derandomize=True,
        max_examples=200 if type_name in PACKET_TYPES else 40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _shortest_f32(x: float) -> float:
    """The decoder's reading of a float32: its shortest round-tripping decimal."""
    f = struct.unpack("<f", struct.pack("<f", x))[0]
    for digits in range(1, 10):
        candidate = float(f"{f:.{digits}g}")
        if _f32_bits(candidate) == struct.pack("<f", f):
            return candidate
    return float(f)


def _scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = f.type
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1).map(str)
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1).map(str)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_ENUM:
        names = [v.name for v in f.enum_type.values]
        return st.one_of(st.sampled_from(names), st.integers(100, 2**31 - 1))
    if t == FD.TYPE_FLOAT:
        finite = st.floats(width=32, allow_nan=False, allow_infinity=False).map(_shortest_f32)
        return st.one_of(finite, st.sampled_from(["NaN", "Infinity", "-Infinity"]))
    if t == FD.TYPE_DOUBLE:
        return st.one_of(
            st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["NaN", "Infinity"])
        )
    if t == FD.TYPE_STRING:
        return st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())
    raise AssertionError(f"unexpected field type {t}")


def _is_default(f: FieldDescriptor, v: Any) -> bool:
    if f.type == FD.TYPE_ENUM:
        return v == f.enum_type.values_by_number[0].name
    if isinstance(v, float):
        return v == 0.0
    return v in (0, "0", "", False) and not (f.type in (FD.TYPE_STRING, FD.TYPE_BYTES) and v == "0")


def messages(d: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Random messages of d in the decoder's canonical form."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        taken: set[str] = set()
        for f in d.fields:
            if not draw(st.booleans()):
                continue
            oneof = real_oneof(f)
            if oneof is not None:
                if oneof in taken:
                    continue
                taken.add(oneof)
            if is_map(f):
                kf = f.message_type.fields_by_name["key"]
                vf = f.message_type.fields_by_name["value"]
                keys = (
                    _scalar(kf).map(str)
                    if kf.type != FD.TYPE_BOOL
                    else st.sampled_from(["true", "false"])
                )
                values = (
                    messages(vf.message_type, depth + 1)
                    if vf.type == FD.TYPE_MESSAGE
                    else _scalar(vf)
                )
                value = draw(st.dictionaries(keys, values, max_size=3))
                if value:
                    out[f.json_name] = value
            elif f.is_repeated:
                element = (
                    messages(f.message_type, depth + 1) if f.type == FD.TYPE_MESSAGE else _scalar(f)
                )
                value = draw(st.lists(element, max_size=3))
                if value:
                    out[f.json_name] = value
            elif f.type == FD.TYPE_MESSAGE:
                if depth < 4:
                    out[f.json_name] = draw(messages(f.message_type, depth + 1))
            else:
                value = draw(_scalar(f))
                if f.has_presence or not _is_default(f, value):
                    out[f.json_name] = value
        return out

    return build()


def _f32_bits(x: float) -> bytes | None:
    try:
        return struct.pack("<f", x)
    except OverflowError:
        return None


def _same(a: Any, b: Any) -> bool:
    """Equality for the protobuf runtime's JSON form: its float printer is not
    shortest (it starts at 6 significant digits, subnormals differ), so floats
    match to 1e-6 or as the same float32."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-6) or _f32_bits(a) == _f32_bits(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


@pytest.mark.parametrize("type_name", codec.message_types())
def test_random_messages_round_trip(type_name: str) -> None:
    @_round_trip_settings(type_name)
    @given(messages(descriptor(type_name)))
    def check(message: dict[str, Any]) -> None:
        data = codec.encode(type_name, message)
        assert codec.decode(type_name, data) == message
        assert codec.encode(type_name, codec.decode(type_name, data)) == data
        # The protobuf runtime parses our bytes to the same content.
        parsed = message_class(type_name).FromString(data)
        theirs = json_format.MessageToDict(parsed)
        assert _same(theirs, codec.decode(type_name, parsed.SerializeToString())), theirs
        assert _same(theirs, message), theirs

    check()


CODES = errors.CODES[errors.DecodeError]


def _decode_or_decode_error(type_name: str, data: bytes) -> None:
    try:
        value = codec.decode(type_name, data)
    except dclcomms.DecodeError as e:
        assert e.code in CODES
        assert str(e).startswith(type_name + ": ")
        return
    assert isinstance(value, dict)


@functools.cache
def _valid_corpus(type_name: str) -> list[bytes]:
    """Valid encodings to cut and corrupt (built once, derandomized)."""
    corpus: list[bytes] = []

    @settings(derandomize=True, max_examples=100, deadline=None, database=None)
    @given(messages(descriptor(type_name)))
    def collect(message: dict[str, Any]) -> None:
        corpus.append(codec.encode(type_name, message))

    collect()
    return sorted(set(corpus), key=lambda b: (len(b), b))


def _valid_then_damaged(type_name: str) -> st.SearchStrategy[bytes]:
    """A valid encoding truncated at any point, optionally with one byte replaced."""

    def damage(t: tuple[bytes, int, int | None, int]) -> bytes:
        data, cut, at, byte = t
        data = data[: cut % (len(data) + 1)]
        if at is not None and data:
            i = at % len(data)
            data = data[:i] + bytes([byte]) + data[i + 1 :]
        return data

    return st.tuples(
        st.sampled_from(_valid_corpus(type_name)),
        st.integers(0, 2**16),
        st.none() | st.integers(0, 2**16),
        st.integers(0, 255),
    ).map(damage)


@pytest.mark.parametrize("type_name", PACKET_TYPES)
def test_random_and_damaged_buffers_never_crash(type_name: str) -> None:
    """Hypothesis: random and damaged buffers (shrinks a failure to a minimal one)."""

    @settings(
        derandomize=True,
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(st.binary(max_size=64), _valid_then_damaged(type_name)))
    def check(data: bytes) -> None:
        _decode_or_decode_error(type_name, data)

    check()


@pytest.mark.parametrize("type_name", PACKET_TYPES)
def test_ten_thousand_random_or_truncated_buffers(type_name: str) -> None:
    """10,000 buffers per packet type, seeded: random bytes, truncations and
    corruptions of valid encodings, and valid encodings with trailing junk."""
    seed = 20261122
    rng = random.Random(f"{seed}-{type_name}")
    corpus = _valid_corpus(type_name)
    outcomes = {"decoded": 0, "error": 0}
    for i in range(10_000):
        kind = i % 4
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 80))
        else:
            data = rng.choice(corpus)
            if kind == 1:
                data = data[: rng.randrange(0, len(data) + 1)]
            elif kind == 2 and data:
                at = rng.randrange(len(data))
                data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
            else:
                data += rng.randbytes(rng.randrange(1, 8))
        error: str | None = None
        try:
            value = codec.decode(type_name, data)
        except dclcomms.DecodeError as e:
            assert e.code in CODES, f"seed {seed} buffer {data.hex()}"
            error = e.code
            outcomes["error"] += 1
        else:
            assert isinstance(value, dict), f"seed {seed} buffer {data.hex()}"
            outcomes["decoded"] += 1
        if type_name.endswith(".Heartbeat"):  # the fast path agrees, error code included
            try:
                fast = codec.decode_heartbeat(data)
            except dclcomms.DecodeError as e:
                assert e.code == error, f"seed {seed} buffer {data.hex()}"
            else:
                assert error is None and fast == value, f"seed {seed} buffer {data.hex()}"
    # Both outcomes occur: the buffers exercise the decoder, not just its guard.
    assert outcomes["decoded"] > 500 and outcomes["error"] > 500, outcomes
