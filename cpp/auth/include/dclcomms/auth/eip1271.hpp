#pragma once
// EIP-1271 isValidSignature(bytes32,bytes) call data (authchain.md section 7).

#include <string>
#include <string_view>

#include "dclcomms/auth/auth.hpp"

namespace dclcomms::auth {

// The 4-byte selector 0x1626ba7e, also the "magic value" a valid answer starts with.
inline constexpr std::string_view kEip1271Magic = "1626ba7e";

// "0x" + lowercase hex of selector || hash || uint256(0x40) || uint256(len)
// || sig right-padded to a multiple of 32 bytes. sig: raw signature bytes.
std::string eip1271_call_data(const Hash32& hash, std::string_view sig);

// True when the eth_call result word (hex, with or without 0x, any case)
// starts with the magic value.
bool eip1271_result_ok(std::string_view result_hex) noexcept;

}  // namespace dclcomms::auth
