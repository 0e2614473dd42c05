#pragma once
// Auth core: Keccak-256, personal_sign recovery, auth-chain verification
// (spec: authchain.md), CSPRNG challenges and HS256 JWT. No pybind11 here.
//
// Thread-safety: every function is safe to call concurrently (the secp256k1
// context is created once, read-only afterwards).

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace dclcomms::auth {

using Hash32 = std::array<uint8_t, 32>;

Hash32 keccak256(std::string_view data) noexcept;
Hash32 personal_message_hash(std::string_view message) noexcept;

// personal_sign recovery; returns the lowercase 0x address, or nullopt with
// *code set (bad_signature_encoding, bad_signature_length, bad_recovery_id,
// signature_range, signer_mismatch) when the signature cannot be recovered.
std::optional<std::string> recover_address(std::string_view message, std::string_view signature_hex,
                                           std::string* code = nullptr);

// EIP-1271 check performed by the caller's provider: given the contract
// address, the 32-byte hash and the signature bytes, returns true/false, or
// throws std::exception on RPC failure (=> eip1271_rpc_error).
using Eip1271Check =
    std::function<bool(std::string_view contract, const Hash32& hash, std::string_view sig)>;

struct AuthResult {
  bool ok = false;
  std::string signer;     // lowercase 0x owner address (chain[0].payload), set when parsed
  std::string ephemeral;  // ephemeral address as written in the text, if any
  std::optional<int64_t> expires_ms;
  std::string code;     // empty when ok; else a stable code (authchain.md section 4)
  std::string message;  // human-readable, for logs
};

// Never throws. now_ms: the verification clock (ms since the Unix epoch).
AuthResult verify_auth_chain(std::string_view chain_json, std::string_view expected_payload,
                             int64_t now_ms, const Eip1271Check* provider = nullptr);

// "dcl-" + 32 lowercase hex characters from a CSPRNG (OpenSSL RAND_bytes).
std::string random_challenge();

}  // namespace dclcomms::auth
