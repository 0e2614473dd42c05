"""SignedFetchVerifier's delegation cache: a repeated (SIGNER, ECDSA_EPHEMERAL) pair
costs one signature recovery instead of two, and every result (ok, signer, code)
equals the stateless verify_signed_fetch's, hits or misses."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from dclcomms.auth import Identity, SignedFetchVerifier, verify_signed_fetch

SEED = 8_044
NOW = 1_748_779_200_000
PATH = "/get-scene-adapter"
META = {"realmName": "main", "sceneId": "s1"}


def request(ident: Identity, at: int, path: str = PATH, meta: Any = META) -> dict[str, str]:
    return ident.sign_fetch_headers("POST", path, metadata=meta, now_ms=at)


def same(a: Any, b: Any) -> None:
    assert (a.ok, a.signer, a.code) == (b.ok, b.signer, b.code), (a, b)
    if a.ok:
        assert (a.ephemeral, a.expires_ms) == (b.ephemeral, b.expires_ms)


def test_second_request_of_a_session_hits_the_cache() -> None:
    alice = Identity.generate(SEED)
    v = SignedFetchVerifier()
    first = v.verify("POST", PATH, request(alice, NOW), now_ms=NOW)
    assert first.ok and v.delegation_hits == 0
    second = v.verify("POST", PATH, request(alice, NOW + 1), now_ms=NOW + 1)
    assert second.ok and v.delegation_hits == 1
    same(second, first)
    assert second.signer == alice.address.lower()
    # The replay cache still applies on a hit.
    again = v.verify("POST", PATH, request(alice, NOW + 1), now_ms=NOW + 2)
    assert again.code == "replayed"


def test_hits_and_misses_answer_like_the_stateless_verifier(rng: random.Random) -> None:
    people = [Identity.generate(SEED + i) for i in range(3)]
    v = SignedFetchVerifier(replay_protection=False)
    for p in people:  # warm the cache
        assert v.verify("POST", PATH, request(p, NOW), now_ms=NOW).ok
    t = NOW
    for _ in range(60):
        t += 1
        who, other = rng.sample(people, 2)
        h = request(who, t)
        mutation = rng.randrange(7)
        path = PATH
        if mutation == 1:  # the final link of someone else's request
            h["x-identity-auth-chain-2"] = request(other, t)["x-identity-auth-chain-2"]
        elif mutation == 2:  # a forged final signature
            link = json.loads(h["x-identity-auth-chain-2"])
            sig = link["signature"]
            link["signature"] = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
            h["x-identity-auth-chain-2"] = json.dumps(link)
        elif mutation == 3:  # signed for another path
            path = "/scene-bans"
        elif mutation == 4:  # metadata changed after signing
            h["x-identity-metadata"] = '{"realmName":"main","sceneId":"s2"}'
        elif mutation == 5:  # a fourth link: not the cached shape
            h["x-identity-auth-chain-3"] = h["x-identity-auth-chain-2"]
        got = v.verify("POST", path, h, now_ms=t)
        want = verify_signed_fetch("POST", path, h, now_ms=t)
        same(got, want)
        assert got.ok == (mutation in (0, 6)), (mutation, got)
    assert v.delegation_hits > 0


def test_an_expired_delegation_fails_like_without_the_cache() -> None:
    alice = Identity.generate(SEED)
    eph = alice.create_ephemeral_chain(NOW + 120_000)  # delegation valid 2 minutes
    v = SignedFetchVerifier()
    assert v.verify("POST", PATH, eph.sign_fetch_headers("POST", PATH, now_ms=NOW), now_ms=NOW).ok
    late = NOW + 120_000
    h = eph.sign_fetch_headers("POST", PATH, now_ms=late)
    got = v.verify("POST", PATH, h, now_ms=late)
    assert got.code == "ephemeral_expired"
    same(got, verify_signed_fetch("POST", PATH, h, now_ms=late))


def test_the_cache_is_bounded_and_can_be_off() -> None:
    people = [Identity.generate(SEED + i) for i in range(9)]
    v = SignedFetchVerifier(delegation_cache=4)
    now = int(time.time() * 1000)
    for i, p in enumerate(people):
        assert v.verify("POST", PATH, request(p, now + i), now_ms=now + i).ok
        assert len(v._delegations) <= 4
    off = SignedFetchVerifier(delegation_cache=0)
    for i in range(3):
        assert off.verify("POST", PATH, request(people[0], now + i), now_ms=now + i).ok
    assert off.delegation_hits == 0 and not off._delegations
