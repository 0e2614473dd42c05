#pragma once
// Signed fetch (ADR-44; spec authchain.md section 8): the request headers
// x-identity-auth-chain-<i> (one JSON link each, read until the first gap, at
// least two), x-identity-timestamp (decimal ms) and x-identity-metadata (JSON
// object text), read and checked here; the chain then authorizes
// lower(METHOD:PATH:TIMESTAMP:METADATA). Lowercasing that payload is Unicode
// (the client's toLowerCase), so the embedder builds it from the exact header
// texts returned here and verifies the chain with verify_auth_chain. No
// pybind11 here; the Python layer (dclcomms.auth.signed_fetch) adds the
// replay and delegation caches.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dclcomms::auth {

struct SignedFetchHeaders {
  // Empty when the headers are a well-formed signed fetch inside the time
  // window; else signed_fetch_malformed (HTTP 400), signed_fetch_expired or
  // signed_fetch_future (HTTP 401), with a message naming the header.
  std::string code;
  std::string message;
  std::vector<std::string> links;       // link JSON texts as sent, in order (>= 2)
  std::vector<std::string> link_types;  // each link's "type" when a string, else ""
  std::string timestamp;                // the x-identity-timestamp text (ASCII digits)
  int64_t timestamp_ms = 0;
  std::string metadata;  // the x-identity-metadata text (a JSON object)
  // The metadata's "bodySha256": absent (or null), a string, or another JSON
  // value (which no body can match).
  enum class BodyHash { Absent, Text, NotText };
  BodyHash body_hash = BodyHash::Absent;
  std::string body_sha256;      // the string when body_hash == Text
  std::string final_signature;  // the last link's "signature" when a string, else ""

  bool ok() const noexcept { return code.empty(); }
  // "[" + links joined by "," + "]": the chain for verify_auth_chain.
  std::string chain_json() const;
};

// Header names are matched ASCII-case-insensitively; a duplicated
// x-identity-* name is malformed. Values must be valid UTF-8 where they are
// JSON (and nested at most 64 levels). The window:
// now_ms - window_ms <= timestamp <= now_ms + max_future_ms. Never throws.
SignedFetchHeaders parse_signed_fetch(
    const std::vector<std::pair<std::string, std::string>>& headers, int64_t now_ms,
    int64_t window_ms, int64_t max_future_ms);

}  // namespace dclcomms::auth
