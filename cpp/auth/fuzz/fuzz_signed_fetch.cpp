// libFuzzer target: signed fetch (ADR-44; authchain.md section 8) as a server
// reads it: the x-identity-* headers (parse_signed_fetch: names, duplicates,
// link JSON, timestamp, metadata, window), then the chain they carry verified
// against lower(METHOD:PATH:TIMESTAMP:METADATA) (ASCII here; the embedder
// lowercases Unicode).
// Input: "METHOD PATH\n", then "name: value\n" header lines.
// Invariants: nothing throws; a failure is one of the three signed-fetch codes
// with a message that is valid UTF-8; a success has >= 2 links whose texts,
// joined, parse back as an array of that many objects, a timestamp of <= 16
// digits inside the window, and every returned text valid UTF-8 (the Python
// binding turns them into str); the chain result is ok exactly when it has no
// code, with a lowercase signer.
// Build and run: scripts/fuzz (docs/operations.md, "Fuzzing").

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/signed_fetch.hpp"

namespace {

constexpr int64_t kNow = 1748779200000;  // 2025-06-01T12:00:00Z, as the seeds
constexpr int64_t kWindow = 60'000;
constexpr int64_t kFuture = 30'000;

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

std::string ascii_lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nl = input.find('\n');
  const std::string_view request = input.substr(0, nl);
  const size_t sp = request.find(' ');
  const std::string method(request.substr(0, sp));
  const std::string path(sp == std::string_view::npos ? "" : request.substr(sp + 1));

  std::vector<std::pair<std::string, std::string>> headers;
  while (nl != std::string_view::npos) {
    const size_t start = nl + 1;
    nl = input.find('\n', start);
    const std::string_view line =
        input.substr(start, nl == std::string_view::npos ? nl : nl - start);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }

  const auto h = dclcomms::auth::parse_signed_fetch(headers, kNow, kWindow, kFuture);
  if (!valid_utf8(h.message)) std::abort();
  if (!h.ok()) {
    if (h.code != "signed_fetch_malformed" && h.code != "signed_fetch_expired" &&
        h.code != "signed_fetch_future") {
      std::abort();
    }
    if (h.message.empty()) std::abort();
    return 0;
  }
  if (h.links.size() < 2 || h.link_types.size() != h.links.size()) std::abort();
  if (h.timestamp.empty() || h.timestamp.size() > 16) std::abort();
  if (h.timestamp_ms < kNow - kWindow || h.timestamp_ms > kNow + kFuture) std::abort();
  for (const auto& s : {h.timestamp, h.metadata, h.body_sha256, h.final_signature}) {
    if (!valid_utf8(s)) std::abort();
  }
  for (size_t i = 0; i < h.links.size(); ++i) {
    if (!valid_utf8(h.links[i]) || !valid_utf8(h.link_types[i])) std::abort();
  }
  const std::string chain = h.chain_json();
  const auto parsed = nlohmann::json::parse(chain, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_array() || parsed.size() != h.links.size()) std::abort();
  for (const auto& link : parsed) {
    if (!link.is_object()) std::abort();
  }

  const std::string payload =
      ascii_lower(method + ":" + path + ":" + h.timestamp + ":" + h.metadata);
  const auto r = dclcomms::auth::verify_auth_chain(chain, payload, kNow);
  if (r.ok != r.code.empty()) std::abort();
  if (r.ok) {
    for (char c : r.signer) {
      if (c >= 'A' && c <= 'Z') std::abort();
    }
  }
  return 0;
}
