#pragma once
// Small helpers shared by the auth sources (not installed, not public).

#include <string>
#include <string_view>

namespace dclcomms::auth::detail {

inline int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

inline std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// ^0[xX][0-9a-fA-F]{40}$
inline bool is_hex_address(std::string_view s) noexcept {
  if (s.size() != 42 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return false;
  for (size_t i = 2; i < s.size(); ++i) {
    if (hex_value(s[i]) < 0) return false;
  }
  return true;
}

// Base64url without padding (RFC 7515 section 2).
std::string base64url_encode(std::string_view data);
// Strict: alphabet A-Z a-z 0-9 - _, no padding, no whitespace, length % 4 != 1,
// unused trailing bits zero. Returns false on any violation.
bool base64url_decode(std::string_view text, std::string& out);

// HMAC-SHA256(key, data) as 32 raw bytes (OpenSSL EVP_MAC). Thread-safe.
std::string hmac_sha256(std::string_view key, std::string_view data);

}  // namespace dclcomms::auth::detail
