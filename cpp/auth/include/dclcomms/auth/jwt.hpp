#pragma once
// HS256 JSON Web Tokens (RFC 7519 compact JWS): the building block of LiveKit
// island tokens and WebSocket-room access tokens. Only HS256 is accepted;
// "none" and every other alg are rejected. No pybind11 here; thread-safe.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dclcomms::auth {

// Encodes claims with the given header (default {"alg":"HS256","typ":"JWT"};
// its "alg" must be HS256). Key order of claims is preserved as given.
// Throws dclcomms::Error{ErrorKind::Token, code} on invalid input.
std::string jwt_encode(const nlohmann::ordered_json& claims, std::string_view secret,
                       const nlohmann::ordered_json* header = nullptr);

// HS256 under one key for many tokens (a tick signs one per arriving peer): the
// key's HMAC inner and outer hash states are computed once. token(payload) is
// jwt_encode(claims, secret) for payload == claims.dump(), default header.
// Not thread-safe: one signer per thread. Throws Error{Token, ...} when the
// hash cannot be set up.
class Hs256Signer {
 public:
  explicit Hs256Signer(std::string_view secret);
  ~Hs256Signer();
  Hs256Signer(const Hs256Signer&) = delete;
  Hs256Signer& operator=(const Hs256Signer&) = delete;
  // header.payload.signature of an already serialised JSON payload.
  std::string token(std::string_view payload_json);
  // The raw HMAC-SHA256 (32 bytes) of data under the key.
  std::string mac(std::string_view data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct JwtCheck {
  int64_t now_s = 0;                  // verification clock, seconds since the epoch
  int64_t leeway_s = 0;               // applied to exp and nbf
  std::optional<std::string> issuer;  // when set, "iss" must equal it
  bool require_exp = false;           // LiveKit and WS-room tokens require exp
};

// Verifies signature (constant-time), alg, exp/nbf/iss; returns the claims.
// Throws dclcomms::Error{ErrorKind::Token, code}.
nlohmann::ordered_json jwt_decode(std::string_view token, std::string_view secret,
                                  const JwtCheck& check);

}  // namespace dclcomms::auth
