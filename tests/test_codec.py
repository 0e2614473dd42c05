"""dclcomms.codec: conformance vectors, the dict mapping, every error code, fast paths."""

from __future__ import annotations

import base64
import random
import struct
import subprocess
import sys
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import dclcomms
from dclcomms import codec, errors
from tests.helpers.codec_schema import strip_implicit_defaults
from tests.helpers.common import load_conformance

V3 = "decentraland.kernel.comms.v3."
RFC5 = "decentraland.kernel.comms.rfc5."
RFC4 = "decentraland.kernel.comms.rfc4."
CLIENT = V3 + "ClientPacket"
SERVER = V3 + "ServerPacket"
HEARTBEAT = V3 + "Heartbeat"
ISLAND = V3 + "IslandChangedMessage"
STATUS = V3 + "ServiceStatus"
WS = RFC5 + "WsPacket"
PACKET = RFC4 + "Packet"
SCENE = RFC4 + "Scene"
MOVEMENT = RFC4 + "Movement"

VECTORS = load_conformance("wire-vectors.json")["vectors"]


def _vector_id(v: dict[str, Any]) -> str:
    return f"{v['message']}: {v['description'][:50]}"


@pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
def test_vector_round_trip(vector: dict[str, Any]) -> None:
    type_name = f"{vector['package']}.{vector['message']}"
    data = bytes.fromhex(vector["hex"])
    assert len(data) == vector["length"]
    assert codec.encode(type_name, vector["json"]).hex() == vector["hex"]
    assert codec.decode(type_name, data, including_defaults=True) == vector["json"]
    stripped = strip_implicit_defaults(type_name, vector["json"])
    assert codec.decode(type_name, data) == stripped
    assert codec.encode(type_name, stripped) == data


def test_vectors_cover_every_packet_family() -> None:
    types = {f"{v['package']}.{v['message']}" for v in VECTORS}
    assert {CLIENT, SERVER, HEARTBEAT, WS, PACKET} <= types


def test_message_types() -> None:
    types = codec.message_types()
    assert types == sorted(types)
    for name in (CLIENT, SERVER, HEARTBEAT, ISLAND, WS, PACKET, "decentraland.common.Position"):
        assert name in types
    assert not any(t.endswith("Entry") for t in types)  # synthetic map entries


# --- encoding rules (wire.md E1-E9) --------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "message", "hex_"),
    [
        # E1: implicit defaults, -0.0 included, are not written.
        (HEARTBEAT, {"position": {"x": -0.0, "y": 0, "z": 0.0}}, "0a00"),
        (SERVER, {"challengeResponse": {"challengeToSign": "", "alreadyConnected": False}}, "0a00"),
        # E2: optional fields are written when set, even to the default.
        (HEARTBEAT, {"desiredRoom": ""}, "1200"),
        # E3/E4: set sub-messages are written, even empty.
        (SERVER, {"kicked": {}}, "3200"),
        (SERVER, {"kicked": {"reason": "KR_NEW_SESSION"}}, "3200"),
        (CLIENT, {"heartbeat": {"position": {}}}, "1a020a00"),
        # E8: declaration order (ProfileRequest 4 before 3; Packet member before 11).
        (PACKET, {"protocolVersion": 11, "profileRequest": {"profileVersion": 3, "address": "a"}},
         "1a052201611803580b"),
        (MOVEMENT, {"isStunned": True, "glideState": "GLIDING", "jumpCount": 2, "isJumping": True},
         "5801c001027801b80102"),
        # None means absent.
        (HEARTBEAT, {"position": None, "desiredRoom": None}, ""),
    ],
)  # fmt: skip
def test_encoding_rules(type_name: str, message: dict[str, Any], hex_: str) -> None:
    assert codec.encode(type_name, message).hex() == hex_


def test_decode_rules_last_oneof_wins_unknown_skipped_merge() -> None:
    # challenge_request, then heartbeat, then an unknown fixed64 field 31.
    data = bytes.fromhex("0a030a01611a00f9010102030405060708")
    assert codec.decode(CLIENT, data) == {"heartbeat": {}}
    # heartbeat{position{x=1}} then heartbeat{position{y=2}}: merged.
    data = bytes.fromhex("1a070a050d0000803f1a070a051500000040")
    assert codec.decode(CLIENT, data) == {"heartbeat": {"position": {"x": 1.0, "y": 2.0}}}


def test_map_duplicate_key_last_wins_missing_value_default() -> None:
    data = bytes.fromhex("220a0a016112050d0000803f22030a0162220a0a016112051500000040")
    got = codec.decode(ISLAND, data)
    assert list(got["peers"].items()) == [("a", {"y": 2.0}), ("b", {})]


def test_including_defaults() -> None:
    assert codec.decode(V3 + "IslandData", b"", including_defaults=True) == {
        "id": "",
        "peers": [],
        "maxPeers": 0,
        "radius": 0.0,
    }
    assert codec.decode(STATUS, b"", including_defaults=True) == {
        "currentTime": "0",
        "userCount": 0,
    }
    # Unset optional fields and sub-messages stay absent.
    assert codec.decode(HEARTBEAT, b"", including_defaults=True) == {}


# --- the dict mapping ---------------------------------------------------------------


def test_input_name_and_number_forms_are_equivalent() -> None:
    canonical = codec.encode(STATUS, {"currentTime": "1748779200000", "userCount": 3})
    assert codec.encode(STATUS, {"current_time": 1748779200000, "user_count": 3}) == canonical
    assert codec.encode(STATUS, OrderedDict(currentTime=1748779200000, userCount=3.0)) == canonical
    assert codec.decode(STATUS, canonical) == {"currentTime": "1748779200000", "userCount": 3}
    big = codec.encode(STATUS, {"currentTime": 2**64 - 1})
    assert codec.decode(STATUS, big) == {"currentTime": "18446744073709551615"}


def test_bytes_forms() -> None:
    raw = b"\xfb\xff"
    expected = codec.encode(SCENE, {"data": raw})
    assert expected.hex() == "1202fbff"
    for form in ("+/8=", "+/8", "-_8=", "-_8", bytearray(raw), memoryview(raw)):
        assert codec.encode(SCENE, {"data": form}) == expected
    assert codec.decode(SCENE, expected) == {"data": base64.b64encode(raw).decode()}


def test_enums_by_name_or_number_unknown_numbers_kept() -> None:
    assert codec.encode(MOVEMENT, {"glideState": 2}) == codec.encode(
        MOVEMENT, {"glideState": "GLIDING"}
    )
    assert codec.decode(MOVEMENT, codec.encode(MOVEMENT, {"glideState": 9})) == {"glideState": 9}


def test_map_keys_as_strings_or_ints() -> None:
    ids = {3: "0x33", 5: "0x55"}
    data = codec.encode(WS, {"welcomeMessage": {"alias": 7, "peerIdentities": ids}})
    got = codec.decode(WS, data)
    assert got == {"welcomeMessage": {"alias": 7, "peerIdentities": {"3": "0x33", "5": "0x55"}}}
    assert codec.encode(WS, got) == data


def test_floats() -> None:
    got = codec.decode(HEARTBEAT, codec.encode(HEARTBEAT, {"position": {"x": 0.1, "y": 16.5}}))
    assert got == {"position": {"x": 0.1, "y": 16.5}}  # shortest float32 decimal
    special = {"position": {"x": "NaN", "y": "Infinity", "z": "-Infinity"}}
    assert codec.decode(HEARTBEAT, codec.encode(HEARTBEAT, special)) == special
    nan = codec.encode(HEARTBEAT, {"position": {"x": float("nan"), "y": float("inf")}})
    assert nan == codec.encode(HEARTBEAT, {"position": {"x": "NaN", "y": "Infinity"}})
    chat = codec.encode(RFC4 + "Chat", {"timestamp": 0.1})
    assert codec.decode(RFC4 + "Chat", chat) == {"timestamp": 0.1}  # double kept as is


def test_decode_accepts_bytes_like() -> None:
    data = bytes.fromhex("3200")
    for form in (data, bytearray(data), memoryview(data)):
        assert codec.decode(SERVER, form) == {"kicked": {}}


# --- errors ---------------------------------------------------------------------------

DECODE_ERRORS = [
    (CLIENT, "1a", "truncated"),
    (CLIENT, "0b", "truncated"),
    (HEARTBEAT, "0a030d0000", "truncated"),
    (CLIENT, "1a05", "bad_length"),
    (CLIENT, "08ffffffffffffffffff7f", "bad_varint"),
    (CLIENT, "0e", "bad_wire_type"),
    (CLIENT, "0f", "bad_wire_type"),
    (CLIENT, "00", "bad_wire_type"),
    (CLIENT, "0b14", "bad_group"),
    (CLIENT, "0c", "bad_group"),
    (CLIENT, "0a030a01ff", "invalid_utf8"),
    (WS, "3a030a01c0", "invalid_utf8"),
    (CLIENT, "4b" * 101, "too_deep"),
]


@pytest.mark.parametrize(("type_name", "hex_", "code"), DECODE_ERRORS)
def test_decode_errors(type_name: str, hex_: str, code: str) -> None:
    with pytest.raises(dclcomms.DecodeError) as info:
        codec.decode(type_name, bytes.fromhex(hex_))
    assert info.value.code == code
    assert str(info.value).startswith(type_name + ": ")
    assert isinstance(info.value, ValueError)


def test_decode_error_message() -> None:
    with pytest.raises(dclcomms.DecodeError, match=r"ClientPacket: truncated varint at offset 3$"):
        codec.decode(CLIENT, bytes.fromhex("0a010a80"))


class _Opaque:
    pass


def _self_referencing() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["position"] = d
    return d


ENCODE_ERRORS: list[tuple[str, Any, str]] = [
    (HEARTBEAT, {"nope": 1}, "unknown_field"),
    (HEARTBEAT, {"desiredRoom": "a", "desired_room": "b"}, "duplicate_field"),
    (HEARTBEAT, {"desiredRoom": 1}, "bad_type"),
    (HEARTBEAT, {"position": [1, 2, 3]}, "bad_type"),
    (HEARTBEAT, {"position": {"x": "left"}}, "bad_type"),
    (HEARTBEAT, {"desiredRoom": "\ud800"}, "bad_type"),
    (HEARTBEAT, {"desiredRoom": _Opaque()}, "bad_type"),
    (HEARTBEAT, {1.5: "x"}, "bad_type"),
    (STATUS, {"userCount": True}, "bad_type"),
    (STATUS, {"userCount": 1.5}, "bad_type"),
    (STATUS, {"currentTime": "12x"}, "bad_type"),
    (STATUS, {"userCount": 2**32}, "out_of_range"),
    (STATUS, {"userCount": -1}, "out_of_range"),
    (STATUS, {"currentTime": 2**64}, "out_of_range"),
    (STATUS, {"currentTime": "18446744073709551616"}, "out_of_range"),
    (HEARTBEAT, {"position": {"x": 1e300}}, "out_of_range"),
    (SCENE, {"data": "a=b"}, "bad_base64"),
    (MOVEMENT, {"glideState": "FLYING"}, "bad_enum"),
    (CLIENT, {"heartbeat": {}, "signedChallenge": {}}, "oneof_conflict"),
    (HEARTBEAT, _self_referencing(), "too_deep"),
]


@pytest.mark.parametrize(("type_name", "message", "code"), ENCODE_ERRORS)
def test_encode_errors(type_name: str, message: Any, code: str) -> None:
    with pytest.raises(dclcomms.EncodeError) as info:
        codec.encode(type_name, message)
    assert info.value.code == code
    assert str(info.value).startswith(type_name + ": ")


def test_encode_error_names_the_field() -> None:
    with pytest.raises(dclcomms.EncodeError) as info:
        codec.encode(CLIENT, {"heartbeat": {"position": {"x": "left"}}})
    assert str(info.value) == f"{CLIENT}: heartbeat.position.x: 'left' is not a number"


@pytest.mark.parametrize("call", ["encode", "decode"])
def test_unknown_type(call: str) -> None:
    with pytest.raises(dclcomms.UnknownTypeError) as info:
        if call == "encode":
            codec.encode("decentraland.Nope", {})
        else:
            codec.decode("decentraland.Nope", b"")
    assert info.value.code == "unknown_type"
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "unknown message type 'decentraland.Nope'"


def test_codes_listed_in_errors_are_exactly_the_codes_raised() -> None:
    assert {c for _, _, c in DECODE_ERRORS} == errors.CODES[errors.DecodeError]
    assert {c for _, _, c in ENCODE_ERRORS} == errors.CODES[errors.EncodeError]


# --- fast paths -----------------------------------------------------------------------


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def test_encode_island_changed_matches_generic(seed: int = 1122) -> None:
    rng = random.Random(seed)
    for i in range(300):
        peers = [
            (f"0x{rng.getrandbits(160):040x}", tuple(_f32(rng.uniform(-500, 500)) for _ in "xyz"))
            for _ in range(rng.randrange(0, 120))
        ]
        from_island = rng.choice([None, "", f"I{rng.randrange(99)}"])
        island = f"I{i}"
        conn = "livekit:wss://lk.example?access_token=" + "t" * rng.randrange(0, 200)
        as_dict: dict[str, Any] = {
            "islandId": island,
            "connStr": conn,
            "fromIslandId": from_island,
            "peers": {p: dict(zip("xyz", xyz, strict=True)) for p, xyz in peers},
        }
        bare = codec.encode_island_changed(island, conn, from_island, peers)  # type: ignore[arg-type]
        assert bare == codec.encode(ISLAND, as_dict), f"seed {seed} iteration {i}"
        framed = codec.encode_island_changed(island, conn, from_island, peers, server_packet=True)  # type: ignore[arg-type]
        assert framed == codec.encode(SERVER, {"islandChanged": as_dict}), f"seed {seed}"


def test_decode_heartbeat_matches_generic(seed: int = 2211) -> None:
    rng = random.Random(seed)
    specials = [0.0, -0.0, float("nan"), float("inf"), 0.1, 16.5]
    for i in range(500):
        message: dict[str, Any] = {}
        if rng.random() < 0.7:
            message["position"] = {
                k: rng.choice([*specials, rng.uniform(-1e6, 1e6)])
                for k in "xyz"
                if rng.random() < 0.8
            }
        if rng.random() < 0.5:
            message["desiredRoom"] = rng.choice(["", "room-1", "é"])
        data = codec.encode(HEARTBEAT, message)
        assert codec.decode_heartbeat(data) == codec.decode(HEARTBEAT, data), f"seed {seed} {i}"
    with pytest.raises(dclcomms.DecodeError) as info:
        codec.decode_heartbeat(b"\x0a\x05")
    assert info.value.code == "bad_length"
    assert str(info.value).startswith(HEARTBEAT + ": ")


# --- concurrency and CLI ----------------------------------------------------------------


def test_concurrent_use_gives_identical_results() -> None:
    frames = [(f"{v['package']}.{v['message']}", bytes.fromhex(v["hex"])) for v in VECTORS]

    def work(i: int) -> list[bytes]:
        out = []
        for type_name, data in frames * 20:
            out.append(codec.encode(type_name, codec.decode(type_name, data)))
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(16)))
    expected = [data for _, data in frames * 20]
    assert all(r == expected for r in results)


def test_codec_demo_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dclcomms", "codec-demo"], capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["type", "bytes", "hex"]
    assert len(lines) == 1 + len(codec.DEMO_MESSAGES)
    assert all(line.endswith(" ok") for line in lines[1:]), out.stdout
    assert any("3200" in line for line in lines)


@pytest.mark.parametrize(
    ("peers", "code"),
    [
        ("0xabc", "bad_type"),
        ([("0xa",)], "bad_type"),
        ([(1, (0.0, 0.0, 0.0))], "bad_type"),
        ([("0xa", (0.0, 0.0))], "bad_type"),
        ([("0xa", "xyz")], "bad_type"),
        ([("0xa", 3)], "bad_type"),
        ([("0xa", (0.0, "1", 0.0))], "bad_type"),
        ([("0xa", (0.0, True, 0.0))], "bad_type"),
        ([("0xa", (0.0, 1e300, 0.0))], "out_of_range"),
        ([("0xa", (0.0, 10**400, 0.0))], "out_of_range"),
        ([("\ud800", (0.0, 0.0, 0.0))], "bad_type"),
    ],
)
def test_encode_island_changed_rejects_malformed_peers(peers: Any, code: str) -> None:
    with pytest.raises(dclcomms.EncodeError) as info:
        codec.encode_island_changed("I1", "c", None, peers)
    assert info.value.code == code
    assert str(info.value).startswith(ISLAND + ": ")


def test_encode_island_changed_accepts_lists_and_ints() -> None:
    expected = codec.encode(ISLAND, {"islandId": "I1", "peers": {"0xa": {"x": 1.0, "z": 3.0}}})
    assert codec.encode_island_changed("I1", "", None, [["0xa", [1, 0, 3]]]) == expected  # type: ignore[list-item]


def test_numpy_scalars_and_rows_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    expected = codec.encode(
        ISLAND, {"islandId": "I1", "peers": {"0xa": {"x": 1.5, "y": 0.0, "z": -2.0}}}
    )
    rows = np.array([[1.5, 0.0, -2.0]], dtype=np.float32)
    assert codec.encode_island_changed("I1", "", None, [("0xa", rows[0])]) == expected
    scalars = [("0xa", (np.float32(1.5), np.float64(0.0), np.int64(-2)))]
    assert codec.encode_island_changed("I1", "", None, scalars) == expected  # type: ignore[arg-type]
    as_numpy = {"islandId": "I1", "peers": {"0xa": {"x": np.float32(1.5), "z": np.int32(-2)}}}
    assert codec.encode(ISLAND, as_numpy) == expected
    status = codec.encode(STATUS, {"currentTime": np.uint64(2**64 - 1), "userCount": np.int8(3)})
    assert codec.decode(STATUS, status) == {"currentTime": "18446744073709551615", "userCount": 3}


def test_frame_type_constants_are_known_types() -> None:
    names = [codec.CLIENT_PACKET, codec.SERVER_PACKET, codec.HEARTBEAT, codec.ISLAND_CHANGED]
    names += [codec.WS_PACKET, codec.RFC4_PACKET]
    assert names == [CLIENT, SERVER, HEARTBEAT, ISLAND, WS, PACKET]
    assert set(names) <= set(codec.message_types())


def test_codec_demo_width_option() -> None:
    assert codec.demo_main(["--width", "2"]) == 0
    with pytest.raises(SystemExit) as info:
        codec.demo_main(["--width", "0"])
    assert info.value.code == 2


def test_module_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(codec)
    assert result.attempted >= 4 and result.failed == 0
