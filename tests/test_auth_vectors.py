"""Every auth-chain conformance vector gives the reference verdict.

The vectors were produced by running @dcl/crypto. Their fields:
``validate_signature_ok`` is the verdict of @dcl/crypto 3.7.0 (null = the text
is not even JSON, i.e. rejected), ``validate_signature_ok_3_4_5`` the deployed
3.4.5 verdict, and ``server_accepts_latest`` / ``server_accepts_deployed`` add
the @dcl/schemas JSON gate in front of each library. authchain.md section 6
says dclcomms follows the newer, stricter semantics *and* applies the schema
gate (step 2 of the pipeline), i.e. ``server_accepts_latest``. In this file the
two newer fields agree on every vector, so the test asserts both: ``ok`` equals
``validate_signature_ok`` (the acceptance criterion) and
``server_accepts_latest`` (what the spec says we implement), and on success
the signer is ``peer_id``.
"""

from __future__ import annotations

from typing import Any

import pytest

from dclcomms.auth import verify_auth_chain, verify_many
from tests.helpers.common import load_conformance

VECTORS: list[dict[str, Any]] = load_conformance("auth-vectors.json")["vectors"]


def _expected_ok(vector: dict[str, Any]) -> bool:
    return vector["expected"]["validate_signature_ok"] is True


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_verdict(vector: dict[str, Any]) -> None:
    expected = vector["expected"]
    result = verify_auth_chain(
        vector["auth_chain_json"], vector["challenge"], now_ms=vector["now_ms"]
    )
    assert result.ok is _expected_ok(vector), (vector["description"], result)
    assert result.ok is (expected["server_accepts_latest"] is True)
    if result.ok:
        assert result.signer == expected["peer_id"]
        assert result.code is None
    else:
        assert result.signer is None
        assert result.code, result


def test_vectors_cover_both_verdicts() -> None:
    oks = [_expected_ok(v) for v in VECTORS]
    assert len(VECTORS) >= 40 and any(oks) and not all(oks)


def test_verify_many_agrees_with_single_verification_on_the_vectors() -> None:
    # verify_many takes one clock; group the vectors by theirs.
    by_clock: dict[int, list[dict[str, Any]]] = {}
    for v in VECTORS:
        by_clock.setdefault(v["now_ms"], []).append(v)
    for now_ms, group in by_clock.items():
        items = [(v["auth_chain_json"], v["challenge"]) for v in group]
        for threads in (1, 2, 0):
            results = verify_many(items, now_ms=now_ms, threads=threads)
            assert [r.ok for r in results] == [_expected_ok(v) for v in group]
            singles = [verify_auth_chain(c, p, now_ms=now_ms) for c, p in items]
            assert results == singles
