"""Test-side wire helpers for the WebSocket tests, checked against the vectors.

An independent minimal protobuf writer/reader (not the package codec) so the
server's frames are checked byte for byte by a second implementation, plus
real auth chains signed with eth-account and aiohttp client helpers. The other
ws/rooms/connector test modules import from here.
"""

from __future__ import annotations

from typing import Any

from tests.helpers.common import load_conformance
from tests.helpers.ws_wire import (
    client_challenge_request,
    client_heartbeat,
    client_signed_challenge,
    decode_server,
    decode_ws,
    ws_identification,
    ws_signed_challenge,
)

# --- protobuf writer ------------------------------------------------------------


# --- protobuf reader --------------------------------------------------------------


# --- identities -------------------------------------------------------------------


# --- aiohttp clients ------------------------------------------------------------------


# --- the helpers are checked against the reference vectors ------------------------------


def _vectors(message: str) -> list[dict[str, Any]]:
    vs: list[dict[str, Any]] = load_conformance("wire-vectors.json")["vectors"]
    return [v for v in vs if v["message"] == message]


def test_writer_matches_reference_client_frames() -> None:
    for v in _vectors("ClientPacket"):
        j = v["json"]
        if "challengeRequest" in j:
            assert client_challenge_request(j["challengeRequest"]["address"]).hex() == v["hex"]
        elif "signedChallenge" in j:
            got = client_signed_challenge(j["signedChallenge"]["authChainJson"])
            assert got.hex() == v["hex"]
    for v in _vectors("WsPacket"):
        j = v["json"]
        if "peerIdentification" in j:
            assert ws_identification(j["peerIdentification"]["address"]).hex() == v["hex"]
        if "signedChallengeForServer" in j:
            got = ws_signed_challenge(j["signedChallengeForServer"]["authChainJson"])
            assert got.hex() == v["hex"]


def test_heartbeat_writer_matches_reference() -> None:
    for v in _vectors("ClientPacket"):
        hb = v["json"].get("heartbeat")
        if hb is not None:
            pos = hb["position"]
            xyz = (pos.get("x", 0.0), pos.get("y", 0.0), pos.get("z", 0.0))
            assert client_heartbeat(xyz, hb.get("desiredRoom")).hex() == v["hex"]


def test_reader_decodes_reference_server_frames() -> None:
    seen = set()
    for v in _vectors("WsPacket") + _vectors("ServerPacket"):
        frame = bytes.fromhex(v["hex"])
        key, body = next(iter(v["json"].items()))
        if key == "welcomeMessage":
            kind, w = decode_ws(frame)
            assert w["alias"] == body["alias"]
            assert w["peer_identities"] == [
                (int(k), a) for k, a in body.get("peerIdentities", {}).items()
            ]
        elif key == "peerUpdateMessage":
            kind, u = decode_ws(frame)
            assert u["from_alias"] == body.get("fromAlias", 0)
            assert u["unreliable"] == body.get("unreliable", False)
        elif key == "challengeResponse":
            kind, c = decode_server(frame)
            assert c["challenge"] == body["challengeToSign"]
        elif key == "welcome":
            kind, w = decode_server(frame)
            assert w["peer_id"] == body["peerId"]
        else:
            continue
        seen.add(kind)
    assert {"welcome", "challenge_response", "peer_update"} <= seen


# --- a raw client: several frames in one TCP write ---------------------------------------
