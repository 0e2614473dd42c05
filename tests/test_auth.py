"""Auth core from Python: hashes, recovery, identities, chains cross-checked
against eth-account, every verification code, EIP-1271 providers (callable and
a real JSON-RPC server on 127.0.0.1), verify_many and thread safety.

Randomness is seeded (SEED below; Hypothesis runs with @seed(SEED)), so a
failure reproduces; Hypothesis prints the falsifying example.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from dclcomms import AuthError, errors
from dclcomms import auth as dauth
from dclcomms.auth import (
    Identity,
    JsonRpcProvider,
    keccak256,
    personal_message_hash,
    random_challenge,
    recover_address,
    verify_auth_chain,
    verify_many,
)
from tests.helpers.common import free_port, load_conformance

SEED = 20261122
NOW = 1_748_779_200_000  # 2025-06-01T12:00:00.000Z
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAGIC = "0x1626ba7e" + "00" * 28
AUTH_CODES = errors.CODES[errors.AuthError]


def eth_sign(key: bytes, message: str) -> str:
    """personal_sign by eth-account (the independent implementation)."""
    return "0x" + bytes(Account.sign_message(encode_defunct(text=message), key).signature).hex()


def iso(ms: int) -> str:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def eth_chain(rng: random.Random, challenge: str, expires_ms: int = NOW + 3_600_000) -> str:
    """A 3-link chain built entirely with eth-account from seeded random keys."""
    owner, eph = rng.randbytes(32), rng.randbytes(32)
    text = (
        "Decentraland Login\n"
        f"Ephemeral address: {Account.from_key(eph).address}\n"
        f"Expiration: {iso(expires_ms)}"
    )
    links = [
        {"type": "SIGNER", "payload": Account.from_key(owner).address, "signature": ""},
        {"type": "ECDSA_EPHEMERAL", "payload": text, "signature": eth_sign(owner, text)},
        {
            "type": "ECDSA_SIGNED_ENTITY",
            "payload": challenge,
            "signature": eth_sign(eph, challenge),
        },
    ]
    return json.dumps(links, separators=(",", ":"))


# --- hashes and recovery ------------------------------------------------------


def test_keccak_known_answers() -> None:
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert keccak256(bytearray(b"abc")).hex() == (
        "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    )


@seed(SEED)
@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600))
def test_keccak_matches_eth_hash(data: bytes) -> None:
    from eth_hash.auto import keccak

    assert keccak256(data) == keccak(data)


def test_personal_hash_counts_utf8_bytes() -> None:
    # authchain.md section 3: 13 bytes, not 10 UTF-16 units or 9 code points.
    h = "4a8f75025dcce2fb3a63ff70719a556ff94608e601b214fb26e27062cc2bd10f"
    assert personal_message_hash("dcl-café🙂").hex() == h
    assert personal_message_hash("dcl-café🙂".encode()).hex() == h


@seed(SEED)
@settings(max_examples=40, deadline=None)
@given(key=st.integers(min_value=1, max_value=N - 1), message=st.text(max_size=200))
def test_sign_personal_equals_eth_account_byte_for_byte(key: int, message: str) -> None:
    raw = key.to_bytes(32, "big")
    identity = Identity.from_private_key(raw)
    assert identity.address == Account.from_key(raw).address
    signature = identity.sign_personal(message)
    assert signature == eth_sign(raw, message)
    assert recover_address(message, signature) == identity.address


def test_recover_address_returns_eip55() -> None:
    key = bytes([0x11]) * 32
    sig = eth_sign(key, "dcl-0.eteoa4r566")
    assert recover_address("dcl-0.eteoa4r566", sig) == "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    # v written as 0/1 and upper-case hex digits recover the same key.
    v01 = sig[:-2] + f"{int(sig[-2:], 16) - 27:02x}"
    assert recover_address("dcl-0.eteoa4r566", v01.upper().replace("0X", "0x")) == (
        "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    )


def test_recover_accepts_high_s_twin() -> None:
    key = bytes([0x11]) * 32
    sig = eth_sign(key, "m")
    r, s, v = sig[2:66], int(sig[66:130], 16), int(sig[130:], 16)
    twin = f"0x{r}{N - s:064x}{(27 if v == 28 else 28):02x}"
    assert recover_address("m", twin) == Account.from_key(key).address


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        ("", "bad_signature_encoding"),
        ("0x", "bad_signature_encoding"),
        ("0X" + "11" * 65, "bad_signature_encoding"),
        ("11" * 65, "bad_signature_encoding"),
        ("0x" + "zz" * 65, "bad_signature_encoding"),
        ("0x" + "11" * 64, "bad_signature_length"),
        ("0x" + "11" * 66, "bad_signature_length"),
        ("0x" + "1" * 129, "bad_signature_length"),
        ("0x" + "11" * 64 + "1d", "bad_recovery_id"),
        ("0x" + "11" * 64 + "25", "bad_recovery_id"),
        ("0x" + "00" * 32 + "11" * 32 + "1b", "signature_range"),
        ("0x" + "11" * 32 + f"{N:064x}" + "1b", "signature_range"),
    ],
)
def test_recover_address_errors(signature: str, code: str) -> None:
    with pytest.raises(AuthError) as info:
        recover_address("dcl-x", signature)
    assert info.value.code == code


def test_recover_address_rejects_non_str_signature() -> None:
    with pytest.raises(TypeError):
        recover_address("m", b"0x00")  # type: ignore[arg-type]


def test_random_challenge() -> None:
    challenges = {random_challenge() for _ in range(200)}
    assert len(challenges) == 200
    assert all(re.fullmatch(r"dcl-[0-9a-f]{32}", c) for c in challenges)


def test_checksum_address() -> None:
    address = "0x9ff76D18CB94012398Acb0Ca9b503F7d4A5bef0E"
    assert dauth.to_checksum_address(address.lower()) == address
    with pytest.raises(AuthError) as info:
        dauth.to_checksum_address("0x1234")
    assert info.value.code == "bad_address"


# --- identities ---------------------------------------------------------------


def test_identity_seeded_is_reproducible() -> None:
    a, b, c = Identity.generate(SEED), Identity.generate(SEED), Identity.generate(SEED + 1)
    assert a.address == b.address and a.private_key == b.private_key
    assert a.address != c.address
    assert a.create_ephemeral_chain(NOW).address == b.create_ephemeral_chain(NOW).address
    assert Identity.generate().address != Identity.generate().address
    assert re.fullmatch(r"0x[0-9a-f]{64}", a.private_key)
    assert Account.from_key(a.private_key).address == a.address
    assert Identity.from_private_key(a.private_key).address == a.address
    assert a.private_key not in repr(a)


@pytest.mark.parametrize("key", ["0x" + "00" * 32, "0x" + "ff" * 32, "0x1234", "zz" * 32])
def test_identity_rejects_bad_keys(key: str) -> None:
    with pytest.raises(AuthError) as info:
        Identity.from_private_key(key)
    assert info.value.code == "bad_private_key"


def test_ephemeral_chain_text_and_json_format() -> None:
    owner = Identity.generate(SEED)
    eph = owner.create_ephemeral_chain(1_748_865_600_000)
    assert eph.text == (
        "Decentraland Login\n"
        f"Ephemeral address: {eph.address}\n"
        "Expiration: 2025-06-02T12:00:00.000Z"
    )
    assert eph.signature == eth_sign(bytes.fromhex(owner.private_key[2:]), eph.text)
    chain = eph.sign_challenge("dcl-abc")
    links = json.loads(chain)
    assert [list(link) for link in links] == [["type", "payload", "signature"]] * 3
    assert [link["type"] for link in links] == ["SIGNER", "ECDSA_EPHEMERAL", "ECDSA_SIGNED_ENTITY"]
    # Compact, like JSON.stringify (the JS-built vector eph-085 re-serializes identically).
    assert chain == json.dumps(links, separators=(",", ":"), ensure_ascii=False)
    js = next(v for v in VECTORS if v["id"] == "eph-085")["auth_chain_json"]
    assert js == json.dumps(json.loads(js), separators=(",", ":"), ensure_ascii=False)
    result = verify_auth_chain(chain, "dcl-abc", now_ms=NOW)
    assert result.ok and result.signer == owner.address.lower()
    assert result.ephemeral == eph.address and result.expires_ms == 1_748_865_600_000


def test_identity_sign_challenge_reuses_then_renews_its_ephemeral() -> None:
    owner = Identity.generate(SEED)
    first = json.loads(owner.sign_challenge("dcl-1", now_ms=NOW))
    again = json.loads(owner.sign_challenge("dcl-2", now_ms=NOW + 1000))
    assert first[1] == again[1]
    later = json.loads(owner.sign_challenge("dcl-3", now_ms=NOW + 2 * 86_400_000))
    assert later[1] != first[1]
    assert verify_auth_chain(json.dumps(later), "dcl-3", now_ms=NOW + 2 * 86_400_000).ok


# --- cross-check with eth-account, and tampering ----------------------------------

VECTORS: list[dict[str, Any]] = load_conformance("auth-vectors.json")["vectors"]


def test_eth_account_chains_verify() -> None:
    rng = random.Random(SEED)
    for i in range(25):
        challenge = f"dcl-{rng.getrandbits(128):032x}"
        chain = eth_chain(rng, challenge)
        result = verify_auth_chain(chain, challenge, now_ms=NOW)
        assert result.ok, (SEED, i, result)
        assert result.signer == json.loads(chain)[0]["payload"].lower()


_FIXED_CHAIN = json.loads(eth_chain(random.Random(SEED), "dcl-fixed"))
_HEX = "0123456789abcdef"


@seed(SEED)
@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=2),
    field=st.sampled_from(["payload", "signature"]),
    position=st.integers(min_value=0),
    replacement=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
)
def test_changing_any_character_of_any_link_fails(
    index: int, field: str, position: int, replacement: str
) -> None:
    links = json.loads(json.dumps(_FIXED_CHAIN))
    value: str = links[index][field]
    if not value:  # SIGNER has no signature: tamper by adding one
        links[index][field] = "0x" + "11" * 65
    elif field == "signature" or index == 0:
        # Hex fields: change a digit's *value* (case is not significant).
        pos = 2 + position % (len(value) - 2)
        old = value[pos].lower()
        new = _HEX[(_HEX.index(old) + 1 + ord(replacement) % 15) % 16]
        links[index][field] = value[:pos] + new + value[pos + 1 :]
    else:
        pos = position % len(value)
        if value[pos] == replacement:
            replacement = "~" if replacement != "~" else "!"
        links[index][field] = value[:pos] + replacement + value[pos + 1 :]
    expected = links[2]["payload"] if index == 2 and field == "payload" else "dcl-fixed"
    result = verify_auth_chain(json.dumps(links), expected, now_ms=NOW)
    assert not result.ok
    assert result.code in AUTH_CODES


def test_fixed_chain_is_valid() -> None:
    assert verify_auth_chain(json.dumps(_FIXED_CHAIN), "dcl-fixed", now_ms=NOW).ok


# --- verification codes ---------------------------------------------------------


def _chain(**changes: Any) -> str:
    links = json.loads(json.dumps(_FIXED_CHAIN))
    for path, value in changes.items():
        i, key = path.split("_", 1)
        links[int(i[1:])][key] = value
    return json.dumps(links)


@pytest.mark.parametrize(
    ("chain", "expected", "now_ms", "code"),
    [
        ("not json", "dcl-fixed", NOW, "json_invalid"),
        ("\ufeff" + json.dumps(_FIXED_CHAIN), "dcl-fixed", NOW, "json_invalid"),
        # JSON.parse rejects a NUL after the chain; nlohmann's reader stopped there.
        (json.dumps(_FIXED_CHAIN) + "\0 junk", "dcl-fixed", NOW, "json_invalid"),
        ("[]", "dcl-fixed", NOW, "schema_invalid"),
        ('{"type":"SIGNER"}', "dcl-fixed", NOW, "schema_invalid"),
        (_chain(l1_type="ECDSA_PERSONAL_EPHEMERAL"), "dcl-fixed", NOW, "schema_invalid"),
        (_chain(l2_payload=7), "dcl-fixed", NOW, "schema_invalid"),
        (_chain(l2_signature="0x" + "1" * 100_000), "dcl-fixed", NOW, "schema_invalid"),
        (_chain(l0_payload="vitalik.eth"), "dcl-fixed", NOW, "malformed_chain"),
        (
            _chain(l0_type="ECDSA_SIGNED_ENTITY", l0_signature="0x00"),
            "dcl-fixed",
            NOW,
            "malformed_chain",
        ),
        (_chain(l2_signature=""), "dcl-fixed", NOW, "bad_signature_encoding"),
        (_chain(l2_signature="0x" + "11" * 64), "dcl-fixed", NOW, "bad_signature_length"),
        (_chain(l2_signature="0x" + "11" * 64 + "05"), "dcl-fixed", NOW, "bad_recovery_id"),
        (_chain(l2_signature="0x" + "00" * 64 + "1b"), "dcl-fixed", NOW, "signature_range"),
        (
            _chain(l1_payload="Decentraland Login\nExpiration: x"),
            "dcl-fixed",
            NOW,
            "ephemeral_payload_invalid",
        ),
        (json.dumps(_FIXED_CHAIN), "dcl-fixed", NOW + 3_600_000, "ephemeral_expired"),
        (_chain(l2_payload="dcl-other"), "dcl-other", NOW, "signer_mismatch"),
        (json.dumps(_FIXED_CHAIN), "dcl-fixed ", NOW, "final_authority_mismatch"),
    ],
)
def test_verification_codes(chain: str, expected: str, now_ms: int, code: str) -> None:
    result = verify_auth_chain(chain, expected, now_ms=now_ms)
    assert (result.ok, result.code) == (False, code), result
    assert result.signer is None and result.message


def test_expiry_is_strict_and_uses_the_clock() -> None:
    chain = json.dumps(_FIXED_CHAIN)
    assert verify_auth_chain(chain, "dcl-fixed", now_ms=NOW + 3_600_000 - 1).ok
    assert not verify_auth_chain(chain, "dcl-fixed").ok  # the real clock is past 2025


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
links_like = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "SIGNER",
                    "ECDSA_EPHEMERAL",
                    "ECDSA_SIGNED_ENTITY",
                    "ECDSA_EIP_1654_EPHEMERAL",
                    "ECDSA_EIP_1654_SIGNED_ENTITY",
                    "x",
                ]
            ),
            "payload": st.text(max_size=120) | json_values,
            "signature": st.none() | st.text(max_size=140) | st.just("0x" + "ab" * 65),
        }
    ),
    max_size=12,
)


@seed(SEED)
@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300) | links_like.map(json.dumps), expected=st.text(max_size=40))
def test_never_raises_on_any_input(text: str, expected: str) -> None:
    result = verify_auth_chain(text, expected, now_ms=NOW)
    assert isinstance(result, dauth.AuthResult)
    assert result.ok or result.code in AUTH_CODES


def test_lone_surrogates_do_not_raise() -> None:
    result = verify_auth_chain('["\ud800"]', "\udfff", now_ms=NOW)
    assert (result.ok, result.code) == (False, "json_invalid")


# --- EIP-1654 / EIP-1271 ----------------------------------------------------------


def _wallet_chain(owner_key: bytes, wallet: str, challenge: str, variant: str) -> str:
    """[SIGNER(wallet), ECDSA_EIP_1654_EPHEMERAL(text, owner sig of H1|H2), SIGNED_ENTITY]."""
    eph = Identity.generate(SEED + 7)
    text = f"Decentraland Login\nEphemeral address: {eph.address}\nExpiration: {iso(NOW + 60_000)}"
    digest = keccak256(text.encode()) if variant == "H1" else personal_message_hash(text)
    sig = "0x" + bytes(Account.unsafe_sign_hash(digest, owner_key).signature).hex()
    return json.dumps(
        [
            {"type": "SIGNER", "payload": wallet, "signature": ""},
            {"type": "ECDSA_EIP_1654_EPHEMERAL", "payload": text, "signature": sig},
            {
                "type": "ECDSA_SIGNED_ENTITY",
                "payload": challenge,
                "signature": eph.sign_personal(challenge),
            },
        ]
    )


OWNER_KEY = bytes([0x42]) * 32
WALLET = "0x" + "c0" * 20


def _is_valid_signature(contract: str, data_hex: str) -> str:
    """What a 1-of-1 contract wallet owned by OWNER_KEY answers to isValidSignature."""
    data = bytes.fromhex(data_hex[2:])
    assert data[:4].hex() == "1626ba7e"
    digest = data[4:36]
    assert int.from_bytes(data[36:68], "big") == 0x40
    length = int.from_bytes(data[68:100], "big")
    signature = data[100 : 100 + length]
    assert len(data) == 100 + (length + 31) // 32 * 32
    ok = contract.lower() == WALLET and (
        Account._recover_hash(digest, signature=signature) == Account.from_key(OWNER_KEY).address
    )
    return MAGIC if ok else "0x" + "00" * 32


@pytest.mark.parametrize("variant", ["H1", "H2"])
def test_eip1271_callable_provider_both_hash_variants(variant: str) -> None:
    calls: list[str] = []

    def provider(contract: str, data_hex: str) -> str:
        calls.append(data_hex[10:74])
        return _is_valid_signature(contract, data_hex)

    chain = _wallet_chain(OWNER_KEY, WALLET, "dcl-w", variant)
    result = verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=provider)
    assert result.ok and result.signer == WALLET, result
    assert len(calls) == (1 if variant == "H1" else 2)  # H1 is always tried first
    assert bytes.fromhex(calls[0]) == keccak256(json.loads(chain)[1]["payload"].encode())


def test_eip1271_codes_with_callables() -> None:
    chain = _wallet_chain(OWNER_KEY, WALLET, "dcl-w", "H2")
    assert verify_auth_chain(chain, "dcl-w", now_ms=NOW).code == "eip1271_no_provider"
    other = _wallet_chain(bytes([0x43]) * 32, WALLET, "dcl-w", "H2")
    assert (
        verify_auth_chain(other, "dcl-w", now_ms=NOW, provider=_is_valid_signature).code
        == "eip1271_invalid"
    )

    def broken(contract: str, data_hex: str) -> str:
        raise ConnectionError("node unreachable")

    result = verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=broken)
    assert result.code == "eip1271_rpc_error" and "node unreachable" in result.message

    def wrong_type(contract: str, data_hex: str) -> str:
        return True  # type: ignore[return-value]

    assert (
        verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=wrong_type).code
        == "eip1271_rpc_error"
    )
    with pytest.raises(TypeError):
        verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=42)  # type: ignore[arg-type]


class _RpcHandler(BaseHTTPRequestHandler):
    mode = "ok"  # ok | error | revert | slow | garbage

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        assert request["method"] == "eth_call" and request["params"][1] == "latest"
        call = request["params"][0]
        if self.mode == "slow":
            threading.Event().wait(1.0)
        if self.mode == "error":
            answer: Any = {
                "jsonrpc": "2.0",
                "id": request["id"],
                "error": {"code": -32000, "message": "header not found"},
            }
        elif self.mode == "revert":
            answer = {
                "jsonrpc": "2.0",
                "id": request["id"],
                "error": {"code": 3, "message": "execution reverted"},
            }
        elif self.mode == "garbage":
            answer = ["not", "an", "object"]
        else:
            answer = {
                "jsonrpc": "2.0",
                "id": request["id"],
                "result": _is_valid_signature(call["to"], call["data"]),
            }
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def rpc_server() -> Iterator[tuple[str, type[_RpcHandler]]]:
    handler = type("Handler", (_RpcHandler,), {"mode": "ok"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sepolia", handler
    finally:
        server.shutdown()
        server.server_close()


def test_eip1271_json_rpc_url_provider(rpc_server: tuple[str, type[_RpcHandler]]) -> None:
    url, handler = rpc_server
    for variant in ("H1", "H2"):
        chain = _wallet_chain(OWNER_KEY, WALLET, "dcl-w", variant)
        result = verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=url)
        assert result.ok and result.signer == WALLET, (variant, result)
    chain = _wallet_chain(OWNER_KEY, WALLET, "dcl-w", "H2")
    handler.mode = "revert"
    assert verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=url).code == "eip1271_invalid"
    for mode in ("error", "garbage"):
        handler.mode = mode
        result = verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=url)
        assert result.code == "eip1271_rpc_error", (mode, result)
    handler.mode = "slow"
    slow = JsonRpcProvider(url, timeout_s=0.2)
    assert verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=slow).code == "eip1271_rpc_error"


def test_eip1271_unreachable_node() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    chain = _wallet_chain(OWNER_KEY, WALLET, "dcl-w", "H2")
    assert verify_auth_chain(chain, "dcl-w", now_ms=NOW, provider=url).code == "eip1271_rpc_error"
    with pytest.raises(errors.ConfigError):
        JsonRpcProvider("ftp://example.org")


# --- batches and threads ------------------------------------------------------------


def test_verify_many_order_threads_and_failures() -> None:
    rng = random.Random(SEED)
    items = []
    for i in range(60):
        challenge = f"dcl-{i}"
        items.append((eth_chain(rng, challenge), challenge if i % 4 else challenge + "x"))
    for threads in (0, 1, 2, 7, 200):
        results = verify_many(items, now_ms=NOW, threads=threads)
        assert [r.ok for r in results] == [i % 4 != 0 for i in range(60)], threads
        assert all(r.code == "final_authority_mismatch" for r in results[::4])
    assert verify_many([], now_ms=NOW) == []
    with pytest.raises(errors.ConfigError):
        verify_many(items, threads=-1)


def test_concurrent_python_threads_share_the_core_safely() -> None:
    rng = random.Random(SEED)
    items = [(eth_chain(rng, f"dcl-{i}"), f"dcl-{i}") for i in range(40)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda it: verify_auth_chain(*it, now_ms=NOW), items * 3))
    assert all(r.ok for r in results)


# --- CLI and GIL ----------------------------------------------------------------------


def test_cli_auth_verify(tmp_path: Any) -> None:
    import subprocess
    import sys

    chain_file = tmp_path / "chain.json"
    chain_file.write_text(json.dumps(_FIXED_CHAIN) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "dclcomms", "auth-verify", "--now-ms", str(NOW)]
    ok = subprocess.run([*cmd, "dcl-fixed", str(chain_file)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["signer"] == _FIXED_CHAIN[0]["payload"].lower()
    bad = subprocess.run(
        [*cmd, "dcl-other"], input=json.dumps(_FIXED_CHAIN), capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["code"] == "final_authority_mismatch"


def test_verify_many_releases_the_gil() -> None:
    """Python code keeps running in another thread while a batch verifies."""
    rng = random.Random(SEED)
    chain = eth_chain(rng, "dcl-gil")
    items = [(chain, "dcl-gil")] * 1500  # ~0.2 s of work on one thread
    started, done = threading.Event(), threading.Event()
    progress = 0

    def worker() -> None:
        started.set()
        verify_many(items, now_ms=NOW, threads=1)
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait()
    while not done.is_set():
        progress += 1
    thread.join()
    # With the GIL held for the whole batch this loop could only run in the
    # instants before and after it; released, it spins throughout.
    assert progress > 10_000
