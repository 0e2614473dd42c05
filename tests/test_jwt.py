"""HS256 JWT and LiveKit tokens: the LiveKit SDK vectors, livekit-api's
TokenVerifier as an independent verifier, and every rejection code."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from livekit.api import TokenVerifier

from dclcomms import TokenError
from dclcomms.auth import jwt_decode, jwt_encode, livekit_token
from tests.helpers.common import load_conformance

SEED = 20261122
LK = load_conformance("livekit-vectors.json")
KEY = LK["key_material"]["apiKey"]
SECRET = LK["key_material"]["apiSecret"]


def _b64(obj: Any) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _code(token: str, secret: bytes | str = SECRET, **kwargs: Any) -> str:
    with pytest.raises(TokenError) as info:
        jwt_decode(token, secret, **kwargs)
    return info.value.code


@pytest.mark.parametrize("vector", LK["valid"], ids=[v["id"] for v in LK["valid"]])
def test_valid_vectors_decode_at_their_mint_clock(vector: dict[str, Any]) -> None:
    claims = jwt_decode(
        vector["token"], SECRET, now_s=LK["mint_clock_unix"], issuer=KEY, require_exp=True
    )
    assert claims == vector["decoded"]["claims"]
    assert list(claims) == list(vector["decoded"]["claims"])  # order kept


@pytest.mark.parametrize("vector", LK["valid"], ids=[v["id"] for v in LK["valid"]])
def test_livekit_token_is_byte_identical_to_the_sdk(vector: dict[str, Any]) -> None:
    options, grant = vector["inputs"]["options"], vector["inputs"]["addGrant"]
    token = livekit_token(
        KEY,
        SECRET,
        identity=options["identity"],
        room=grant["room"],
        ttl_s=options["ttl"],
        now_s=vector["inputs"]["mint_clock_unix"],
        name=options["name"],
        metadata=options["metadata"],
        grants={
            "canPublish": grant["canPublish"],
            "canUpdateOwnMetadata": grant["canUpdateOwnMetadata"],
        },
    )
    assert token == vector["token"]


INVALID_CODES = {"x01-wrong-secret": "bad_signature", "x02-expired": "expired",
                 "x03-alg-none": "unsupported_alg"}  # fmt: skip


@pytest.mark.parametrize("vector", LK["invalid"], ids=[v["id"] for v in LK["invalid"]])
def test_invalid_vectors_rejected_at_their_verify_clock(vector: dict[str, Any]) -> None:
    code = _code(vector["token"], now_s=vector["verify_clock_unix"], issuer=KEY, require_exp=True)
    assert code == INVALID_CODES[vector["id"]]


def test_island_grant_is_exact() -> None:
    now = 1_767_225_600
    token = livekit_token(KEY, SECRET, identity="0xabc", room="I1", now_s=now)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256"}
    claims = jwt_decode(token, SECRET, now_s=now, issuer=KEY, require_exp=True)
    assert claims == {
        "video": {
            "roomJoin": True,
            "room": "I1",
            "roomList": False,
            "canPublish": True,
            "canSubscribe": True,
            "canPublishData": True,
            "canUpdateOwnMetadata": True,
            "canPublishSources": ["microphone"],
        },
        "iss": KEY,
        "exp": now + 300,
        "nbf": now,
        "sub": "0xabc",
    }
    named = jwt_decode(
        livekit_token(KEY, SECRET, identity="0xabc", room="I1", now_s=now, name="Bob", ttl_s=60),
        SECRET,
        now_s=now,
    )
    assert named["name"] == "Bob" and named["exp"] == now + 60


def test_livekit_token_verifies_with_livekit_api() -> None:
    token = livekit_token(KEY, SECRET, identity="0xdef", room="island-7", metadata='{"a":1}')
    claims = TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "0xdef" and claims.metadata == '{"a":1}'
    assert claims.video is not None
    assert claims.video.room == "island-7" and claims.video.room_join
    assert claims.video.can_publish_sources == ["microphone"]
    assert claims.video.can_update_own_metadata and claims.video.room_list is False


def test_jwt_encode_verifies_with_livekit_api() -> None:
    now = int(time.time())
    claims = {"iss": KEY, "sub": "0x1", "nbf": now, "exp": now + 60, "video": {"roomJoin": True}}
    token = jwt_encode(claims, SECRET)
    assert TokenVerifier(KEY, SECRET).verify(token).identity == "0x1"
    with pytest.raises(Exception, match=r"(?i)signature"):
        TokenVerifier(KEY, SECRET + "x").verify(token)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"ttl_s": 0}, "bad_claims"),
        ({"identity": ""}, "bad_claims"),
        ({"room": ""}, "bad_claims"),
        ({"grants": {"x": object()}}, "bad_claims"),
    ],
)
def test_livekit_token_rejects_bad_options(kwargs: dict[str, Any], code: str) -> None:
    args: dict[str, Any] = {"identity": "0x1", "room": "r", "now_s": 0, **kwargs}
    with pytest.raises(TokenError) as info:
        livekit_token(KEY, SECRET, **args)
    assert info.value.code == code


@seed(SEED)
@settings(max_examples=80, deadline=None)
@given(
    claims=st.dictionaries(
        st.text(max_size=10),
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.text(max_size=30)
        | st.lists(st.integers(0, 9), max_size=3),
        max_size=6,
    ),
    secret=st.binary(min_size=32, max_size=64),
)
def test_round_trip(claims: dict[str, Any], secret: bytes) -> None:
    token = jwt_encode(claims, secret)
    assert jwt_decode(token, secret, now_s=0) == claims
    # PyJWT (livekit-api's dependency) agrees on signature and content.
    import jwt as pyjwt

    decoded = pyjwt.decode(
        token, secret, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False,
                                                      "verify_iat": False, "verify_iss": False}
    )  # fmt: skip
    assert decoded == claims


def test_clock_checks() -> None:
    token = jwt_encode({"exp": 200, "nbf": 100, "iss": "k"}, "s")
    assert jwt_decode(token, "s", now_s=150, issuer="k", require_exp=True)["iss"] == "k"
    assert jwt_decode(token, b"s", now_s=199)["exp"] == 200
    assert _code(token, "s", now_s=200) == "expired"
    assert jwt_decode(token, "s", now_s=229, leeway_s=30)["exp"] == 200
    assert _code(token, "s", now_s=230, leeway_s=30) == "expired"
    assert _code(token, "s", now_s=99) == "not_yet_valid"
    assert jwt_decode(token, "s", now_s=99, leeway_s=1)["nbf"] == 100
    assert _code(token, "s", now_s=150, issuer="other") == "bad_issuer"
    assert _code(jwt_encode({"a": 1}, "s"), "s", now_s=0, issuer="k") == "bad_issuer"
    assert _code(jwt_encode({"a": 1}, "s"), "s", now_s=0, require_exp=True) == "missing_exp"
    assert _code(jwt_encode({"exp": "later"}, "s"), "s", now_s=0) == "malformed"
    # Default clock is the real one: a token that expired in 1970 is rejected.
    assert _code(token, "s") == "expired"


def test_malformed_and_forged_tokens() -> None:
    good = jwt_encode({"exp": 200}, "s")
    head, body, sig = good.split(".")
    assert _code("", "s") == "malformed"
    assert _code(f"{head}.{body}", "s") == "malformed"
    assert _code(f"{good}.x", "s") == "malformed"
    assert _code(f"{head}.{body}.{sig}=", "s") == "malformed"
    assert _code(f"{head}.{body}!.{sig}", "s") == "malformed"
    assert _code(f"{_b64([1])}.{body}.{sig}", "s") == "bad_header"
    assert _code(f"{_b64({'typ': 'JWT'})}.{body}.{sig}", "s") == "bad_header"
    assert _code(f"{_b64({'alg': 'HS256', 'typ': 'JOSE+x'})}.{body}.{sig}", "s") == "bad_header"
    lower_typ = f"{_b64({'alg': 'HS256', 'typ': 'jwt'})}.{body}"
    mac = hmac.new(b"s", lower_typ.encode(), hashlib.sha256).digest()
    token = f"{lower_typ}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert jwt_decode(token, "s", now_s=0) == {"exp": 200}
    assert _code(f"{_b64({'alg': 'HS256', 'crit': ['b64']})}.{body}.{sig}", "s") == "bad_header"
    for alg in ("none", "None", "HS512", "RS256", "ES256K", "hs256"):
        assert _code(f"{_b64({'alg': alg})}.{body}.{sig}", "s") == "unsupported_alg", alg
        assert _code(f"{_b64({'alg': alg})}.{body}.", "s") == "unsupported_alg", alg
    assert _code(good, "t", now_s=0) == "bad_signature"
    assert _code(f"{head}.{body}.", "s", now_s=0) == "bad_signature"
    assert _code(f"{head}.{_b64({'exp': 999})}.{sig}", "s", now_s=0) == "bad_signature"
    assert _code(f"{head}.{_b64([1, 2])}.{sig}", "s", now_s=0) == "bad_signature"
    # Correctly signed, but the claims are not a JSON object.
    signing_input = f"{head}.{_b64([1, 2])}"
    mac = hmac.new(b"s", signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert _code(forged, "s", now_s=0) == "malformed"


@seed(SEED)
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_decode_never_crashes(token: str) -> None:
    try:
        jwt_decode(token, "s", now_s=0)
    except TokenError as e:
        assert e.code in {"malformed", "bad_header", "unsupported_alg", "bad_signature"}


def test_encode_rejections() -> None:
    for header, code in (({"alg": "none"}, "unsupported_alg"), ({"typ": "JWT"}, "unsupported_alg")):
        with pytest.raises(TokenError) as info:
            jwt_encode({"a": 1}, "s", header=header)
        assert info.value.code == code
    for claims in ({"a": float("nan")}, {"a": object()}, {"a": 2**64}, {1: "x"}):
        with pytest.raises(TokenError) as info:
            jwt_encode(claims, "s")  # type: ignore[arg-type]
        assert info.value.code == "bad_claims", claims
    header = {"alg": "HS256", "kid": "k1"}
    token = jwt_encode({"a": datetime.date(2020, 1, 1).isoformat()}, "s", header=header)
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==")) == header


def _signed(header: bytes, claims: bytes, secret: bytes) -> str:
    """header.claims (any bytes) signed with HS256 under secret."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{b64(header)}.{b64(claims)}"
    return (
        f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"
    )


def test_nul_bytes_are_rejected_never_truncated() -> None:
    """A NUL byte ended the JSON parser's input: correctly signed claims ``{...}\\0junk``
    were accepted as their prefix. JSON text never holds a raw NUL; such a token is malformed
    (its header: bad_header), wherever the NUL is. The token and the secret reach the core
    with their length (no C string on the way)."""
    header = b'{"alg":"HS256","typ":"JWT"}'
    assert jwt_decode(_signed(header, b'{"exp":200}', b"s"), "s", now_s=0) == {"exp": 200}
    for claims in (
        b'{"exp":200}\0',
        b'{"exp":200}\0{"exp":999999,"admin":true}',
        b'\0{"exp":200}',
        b'{"exp":200,"sub":"a\0b"}',
    ):
        assert _code(_signed(header, claims, b"s"), "s", now_s=0) == "malformed", claims
    for bad_header in (header + b"\0", header + b'\0{"alg":"none"}', b"\0" + header):
        token = _signed(bad_header, b'{"exp":200}', b"s")
        assert _code(token, "s", now_s=0) == "bad_header", bad_header
    good = _signed(header, b'{"exp":200}', b"s")
    for at in (0, good.index("."), good.rindex(".") + 1, len(good)):
        assert _code(good[:at] + "\0" + good[at:], "s", now_s=0) == "malformed", at
    # an escaped NUL in a JSON string is valid JSON: kept as is
    claims = jwt_decode(_signed(header, b'{"sub":"a\\u0000b"}', b"s"), "s", now_s=0)
    assert claims == {"sub": "a\0b"}
    # a secret with a NUL is used whole: what "s" signed does not verify under "s\0x"
    assert _code(good, b"s\0x", now_s=0) == "bad_signature"
    assert _code(good, "s\0x", now_s=0) == "bad_signature"
    other = _signed(header, b'{"exp":200}', b"s\0x")
    assert jwt_decode(other, b"s\0x", now_s=0) == {"exp": 200}
    assert _code(other, b"s", now_s=0) == "bad_signature"
    # jwt_encode takes the secret whole too
    assert jwt_encode({"exp": 200}, b"s\0x") != jwt_encode({"exp": 200}, b"s")
    assert jwt_decode(jwt_encode({"exp": 200}, b"s\0x"), b"s\0x", now_s=0) == {"exp": 200}
