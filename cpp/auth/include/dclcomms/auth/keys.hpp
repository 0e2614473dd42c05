#pragma once
// Keys, addresses and personal_sign signing (spec: authchain.md sections 3
// and 5). Used by the Python Identity helpers, tests and benchmarks; servers
// only verify. No pybind11 here; every function is thread-safe.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dclcomms/auth/auth.hpp"

namespace dclcomms::auth {

using PrivateKey = std::array<uint8_t, 32>;
using Signature65 = std::array<uint8_t, 65>;  // r(32) || s(32) || v(1)

// Lowercase hex of bytes, without a prefix.
std::string to_hex(const uint8_t* data, size_t size);
// Decodes hex digits (any case, no prefix, even length); nullopt otherwise.
std::optional<std::string> from_hex(std::string_view hex);

// EIP-55 mixed-case checksum form of a 20-byte address given as 0x + 40 hex
// (any case). Throws dclcomms::Error{Auth, "bad_address"} otherwise.
std::string to_checksum_address(std::string_view address);

// True when key is a valid secp256k1 secret key (0 < key < n).
bool is_valid_private_key(const PrivateKey& key) noexcept;

// Lowercase 0x address of a private key. Throws dclcomms::Error{Auth,
// "bad_private_key"} when the key is not valid.
std::string address_of(const PrivateKey& key);

// Recoverable signature of a 32-byte hash: RFC-6979 nonce, low-s, v = 27/28
// (what eth-account and ethers produce). Throws like address_of.
Signature65 sign_hash(const PrivateKey& key, const Hash32& hash);

// personal_sign: sign_hash(key, personal_message_hash(message)) as "0x" + 130
// lowercase hex characters.
std::string sign_personal(const PrivateKey& key, std::string_view message);

// Raw recovery over a 32-byte hash with the signature rules S1-S5 of
// authchain.md section 5 (same codes as recover_address).
std::optional<std::string> recover_address_from_hash(const Hash32& hash,
                                                     std::string_view signature_hex,
                                                     std::string* code = nullptr);

}  // namespace dclcomms::auth
