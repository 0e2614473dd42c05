"""Signed fetch (ADR-44, authchain.md section 8): headers produced by a client
identity, verified with the dclcomms window (60 s back, 30 s ahead), payload
binding (method, path, timestamp, metadata), optional body hash and the
single-use replay cache of SignedFetchVerifier."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dclcomms.auth import (
    Identity,
    SignedFetchVerifier,
    signed_fetch_status,
    verify_signed_fetch,
)
from tests.helpers.common import CONFORMANCE

SEED = 20261122
NOW = 1_748_779_200_000
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
META = {"realmName": "main", "sceneId": "bafkreiabc"}
PATH = "/get-scene-adapter"

ALICE = Identity.generate(SEED)


def signed(
    method: str = "POST", path: str = PATH, metadata: Any = META, at: int = NOW
) -> dict[str, str]:
    return ALICE.sign_fetch_headers(method, path, metadata=metadata, now_ms=at)


def check(headers: dict[str, str], method: str = "POST", path: str = PATH, **kw: Any) -> Any:
    return verify_signed_fetch(method, path, headers, now_ms=kw.pop("now_ms", NOW), **kw)


def test_valid_request() -> None:
    headers = signed()
    payload = json.loads(headers["x-identity-auth-chain-2"])["payload"]
    assert payload == (
        'post:/get-scene-adapter:1748779200000:{"realmname":"main","sceneid":"bafkreiabc"}'
    )
    result = check(headers)
    assert result.ok and result.signer == ALICE.address.lower() and result.code is None
    assert signed_fetch_status(result.code) == 200


def test_header_names_are_case_insensitive() -> None:
    headers = {k.upper() if i % 2 else k.title(): v for i, (k, v) in enumerate(signed().items())}
    assert check(headers).ok


def test_window_both_directions() -> None:
    assert check(signed(at=NOW - 60_000)).ok
    old = check(signed(at=NOW - 60_001))
    assert (old.ok, old.code) == (False, "signed_fetch_expired")
    assert check(signed(at=NOW + 30_000)).ok
    future = check(signed(at=NOW + 30_001))
    assert (future.ok, future.code) == (False, "signed_fetch_future")
    assert signed_fetch_status(future.code) == 401
    wide = check(signed(at=NOW + 50_000), max_future_ms=60_000, window_ms=1)
    assert wide.ok


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", PATH), ("PUT", PATH), ("POST", "/get-scene-adapter/"), ("POST", "/other"),
     ("POST", "/prefix" + PATH)],
)  # fmt: skip
def test_wrong_method_or_path(method: str, path: str) -> None:
    result = check(signed(), method=method, path=path)
    assert (result.ok, result.code) == (False, "final_authority_mismatch")
    assert signed_fetch_status(result.code) == 401


def test_method_and_path_case_is_not_authenticated() -> None:
    # The payload is lower-cased on both sides (reference behaviour).
    assert check(signed(), method="post", path=PATH.upper()).ok


def test_tampered_metadata_and_timestamp() -> None:
    headers = signed()
    headers["x-identity-metadata"] = json.dumps({**META, "realmName": "other"})
    assert check(headers).code == "final_authority_mismatch"
    headers = signed()
    headers["x-identity-timestamp"] = str(NOW + 1)
    assert check(headers).code == "final_authority_mismatch"
    # Same JSON value, different text: the text is what is signed.
    headers = signed()
    headers["x-identity-metadata"] = json.dumps(META)  # with spaces
    assert check(headers).code == "final_authority_mismatch"


def test_tampered_chain() -> None:
    mallory = Identity.generate(SEED + 1)
    headers = signed()
    forged = signed()
    forged["x-identity-auth-chain-0"] = json.dumps(
        {"type": "SIGNER", "payload": mallory.address, "signature": ""}
    )
    assert check(forged).code == "signer_mismatch"
    headers["x-identity-auth-chain-1"] = headers["x-identity-auth-chain-1"].replace(
        "Decentraland Login", "Decentraland Logout"
    )
    assert check(headers).code == "signer_mismatch"


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda h: h.pop("x-identity-timestamp"), "missing timestamp"),
        (lambda h: h.update({"x-identity-timestamp": "17e11"}), "non-numeric timestamp"),
        (lambda h: h.update({"x-identity-timestamp": "-5"}), "negative timestamp"),
        (lambda h: h.update({"x-identity-timestamp": " 1748779200000"}), "spaces"),
        (lambda h: h.update({"x-identity-timestamp": "١٧٤٨٧٧٩٢٠٠٠٠٠"}), "non-ASCII digits"),
        (lambda h: h.pop("x-identity-metadata"), "missing metadata"),
        (lambda h: h.update({"x-identity-metadata": "{not json"}), "non-JSON metadata"),
        (lambda h: h.update({"x-identity-metadata": "[1]"}), "metadata not an object"),
        (lambda h: h.pop("x-identity-auth-chain-0"), "no link 0 (gap at 0)"),
        (lambda h: h.pop("x-identity-auth-chain-1"), "gap at 1: only one link read"),
        (lambda h: h.update({"x-identity-auth-chain-1": "nope"}), "link not JSON"),
        (lambda h: h.update({"x-identity-auth-chain-1": "[]"}), "link not an object"),
        (lambda h: h.update({"X-Identity-Timestamp": h["x-identity-timestamp"]}), "duplicate"),
        # A recursive JSON reader raised RecursionError (an HTTP 500) on these.
        (lambda h: h.update({"x-identity-metadata": "[" * 100_000}), "deeply nested metadata"),
        (lambda h: h.update({"x-identity-auth-chain-1": "{" + '"a":[' * 5000}), "deep link"),
        # Header bytes that are not UTF-8 (aiohttp hands them over surrogate-escaped).
        (
            lambda h: h.update({"x-identity-metadata": '{"a":"\udcff"}'}),
            "metadata not UTF-8",
        ),
        (lambda h: h.update({"x-identity-\udcff": "1", "X-IDENTITY-\udcff": "2"}), "odd dup"),
        # Found by fuzz_signed_fetch: a JSON reader that stops at NUL accepted the link, whose
        # text (not UTF-8 after the NUL) then could not be handed back to Python.
        (
            lambda h: h.update(
                {"x-identity-auth-chain-0": h["x-identity-auth-chain-0"] + "\0\udccc"}
            ),
            "NUL after a link",
        ),
    ],
)
def test_malformed_requests(mutate: Any, why: str) -> None:
    headers = signed()
    mutate(headers)
    result = check(headers)
    assert (result.ok, result.code) == (False, "signed_fetch_malformed"), why
    assert signed_fetch_status(result.code) == 400


def test_no_headers_at_all() -> None:
    assert check({}).code == "signed_fetch_malformed"


def test_body_hash_binding() -> None:
    body = b'{"action":"kick"}'
    meta = {**META, "bodySha256": hashlib.sha256(body).hexdigest()}
    headers = signed(metadata=meta)
    assert check(headers, body=body).ok
    assert check(headers).ok  # no body given: nothing to compare
    result = check(headers, body=b'{"action":"ban"}')
    assert (result.ok, result.code) == (False, "signed_fetch_body_mismatch")


def test_replay_is_rejected_for_non_get() -> None:
    verifier = SignedFetchVerifier()
    headers = signed()
    assert verifier.verify("POST", PATH, headers, now_ms=NOW).ok
    again = verifier.verify("POST", PATH, headers, now_ms=NOW + 1000)
    assert (again.ok, again.code) == (False, "replayed")
    assert signed_fetch_status(again.code) == 401
    # A fresh signature from the same identity is fine.
    assert verifier.verify("POST", PATH, signed(at=NOW + 1), now_ms=NOW + 1000).ok


def test_replay_with_a_malleated_signature_is_still_a_replay() -> None:
    verifier = SignedFetchVerifier()
    headers = signed()
    assert verifier.verify("POST", PATH, headers, now_ms=NOW).ok
    link = json.loads(headers["x-identity-auth-chain-2"])
    sig = link["signature"]
    r, s, v = sig[2:66], int(sig[66:130], 16), int(sig[130:], 16)
    for variant in (
        f"0x{r}{N - s:064x}{(27 if v == 28 else 28):02x}",  # high-s twin
        f"0x{r}{s:064x}{v - 27:02x}",  # v as 0/1
        "0x" + sig[2:].upper(),  # hex case
    ):
        replay = dict(headers)
        replay["x-identity-auth-chain-2"] = json.dumps({**link, "signature": variant})
        assert verify_signed_fetch("POST", PATH, replay, now_ms=NOW).ok  # valid signature...
        assert verifier.verify("POST", PATH, replay, now_ms=NOW).code == "replayed"  # ...used


def test_get_is_not_replay_protected_and_cache_expires() -> None:
    verifier = SignedFetchVerifier()
    get = signed(method="GET")
    assert verifier.verify("GET", PATH, get, now_ms=NOW).ok
    assert verifier.verify("GET", PATH, get, now_ms=NOW).ok
    assert len(verifier) == 0
    post = signed(at=NOW)
    assert verifier.verify("POST", PATH, post, now_ms=NOW).ok
    assert len(verifier) == 1
    # After the window the entry is purged (and the request is expired anyway).
    late = verifier.verify("POST", PATH, signed(at=NOW + 60_002), now_ms=NOW + 60_002)
    assert late.ok and len(verifier) == 1
    assert verifier.verify("POST", PATH, post, now_ms=NOW + 60_002).code == "signed_fetch_expired"


def test_replay_protection_can_be_disabled() -> None:
    verifier = SignedFetchVerifier(replay_protection=False)
    headers = signed()
    assert verifier.verify("POST", PATH, headers, now_ms=NOW).ok
    assert verifier.verify("POST", PATH, headers, now_ms=NOW).ok


def test_concurrent_replays_admit_exactly_one() -> None:
    verifier = SignedFetchVerifier()
    headers = signed()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: verifier.verify("POST", PATH, headers, now_ms=NOW),
                                range(32)))  # fmt: skip
    assert sum(r.ok for r in results) == 1
    assert {r.code for r in results if not r.ok} == {"replayed"}


def test_eip1654_signed_fetch_needs_a_provider() -> None:
    headers = signed()
    link = json.loads(headers["x-identity-auth-chain-2"])
    headers["x-identity-auth-chain-2"] = json.dumps(
        {**link, "type": "ECDSA_EIP_1654_SIGNED_ENTITY"}
    )
    assert check(headers).code == "eip1271_no_provider"


SAMPLES = json.loads((CONFORMANCE / "signed-fetch-samples.json").read_text())["samples"]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["description"] for s in SAMPLES])
def test_reference_client_requests_verify(sample: dict[str, Any]) -> None:
    """Requests as decentraland-crypto-fetch sends them verify, and only while fresh."""
    assert len(SAMPLES) >= 4
    method, path, headers = sample["method"], sample["path"], sample["headers"]
    body = sample["body"].encode()
    now = sample["now_ms"]
    result = check(headers, method, path, now_ms=now, body=body)
    assert result.ok, result
    assert result.signer == sample["expected"]["signer"]
    # The final link signs exactly the payload the sample names.
    last = max(int(k.rsplit("-", 1)[1]) for k in headers if k.startswith("x-identity-auth-chain-"))
    final = json.loads(headers[f"x-identity-auth-chain-{last}"])
    assert final["payload"] == sample["expected"]["signed_payload"]
    # Outside the window, or for another path, the same headers are refused.
    assert check(headers, method, path, now_ms=now + 61_000).code == "signed_fetch_expired"
    assert not check(headers, method, path + "x", now_ms=now).ok
    # Replays of non-GET requests are refused by the caching verifier.
    verifier = SignedFetchVerifier()
    assert verifier.verify(method, path, headers, now_ms=now, body=body).ok
    second = verifier.verify(method, path, headers, now_ms=now, body=body)
    assert second.ok is (method == "GET")
