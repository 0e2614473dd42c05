// Signed fetch headers (authchain.md section 8): see signed_fetch.hpp.

#include "dclcomms/auth/signed_fetch.hpp"

#include <limits>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "internal.hpp"

namespace dclcomms::auth {
namespace {

constexpr std::string_view kPrefix = "x-identity-";
constexpr std::string_view kLinkPrefix = "x-identity-auth-chain-";
constexpr size_t kMaxTimestampDigits = 16;
constexpr int kMaxDepth = 64;

using json = nlohmann::json;

SignedFetchHeaders failure(std::string code, std::string message) {
  SignedFetchHeaders out;
  out.code = std::move(code);
  out.message = std::move(message);
  return out;
}

// A header name for a message: bytes outside printable ASCII become '?', so
// the text is always valid UTF-8.
std::string printable(std::string_view name) {
  std::string out(name.substr(0, 64));
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

// a - b and a + b, saturated at the int64_t range.
int64_t sub_sat(int64_t a, int64_t b) noexcept {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) {
    return b > 0 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
  }
  return r;
}
int64_t add_sat(int64_t a, int64_t b) noexcept {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

SignedFetchHeaders malformed(std::string message) {
  return failure("signed_fetch_malformed", std::move(message));
}

// Containers nested deeper than kMaxDepth (outside strings): refused before
// parsing, so no input can exhaust the stack of a recursive consumer.
bool too_deep(std::string_view text) noexcept {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// The JSON object of a header value, or nullopt with *why set.
std::optional<json> parse_object(std::string_view text, const char** why) {
  if (too_deep(text)) {
    *why = "is nested deeper than 64 levels";
    return std::nullopt;
  }
  // nlohmann's reader ends the input at a NUL byte, so "{...}\0anything"
  // would parse; JSON text never holds a raw NUL (in strings it is escaped).
  json value = text.find('\0') != std::string_view::npos
                   ? json(json::value_t::discarded)
                   : json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    *why = "is not JSON";
    return std::nullopt;
  }
  if (!value.is_object()) {
    *why = "is not a JSON object";
    return std::nullopt;
  }
  return value;
}

std::string string_member(const json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

}  // namespace

std::string SignedFetchHeaders::chain_json() const {
  std::string out = "[";
  for (size_t i = 0; i < links.size(); ++i) {
    if (i > 0) out += ',';
    out += links[i];
  }
  out += ']';
  return out;
}

SignedFetchHeaders parse_signed_fetch(
    const std::vector<std::pair<std::string, std::string>>& headers, int64_t now_ms,
    int64_t window_ms, int64_t max_future_ms) {
  std::map<std::string, const std::string*, std::less<>> identity;
  for (const auto& [name, value] : headers) {
    if (name.size() < kPrefix.size()) continue;
    std::string key = detail::ascii_lower(name);
    if (key.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    if (!identity.emplace(key, &value).second)
      return malformed("duplicate header " + printable(key));
  }

  SignedFetchHeaders out;
  json last_link;
  for (;;) {
    const std::string name = std::string(kLinkPrefix) + std::to_string(out.links.size());
    const auto it = identity.find(name);
    if (it == identity.end()) break;
    const char* why = nullptr;
    auto link = parse_object(*it->second, &why);
    if (!link) return malformed(name + " " + why);
    out.links.push_back(*it->second);
    out.link_types.push_back(string_member(*link, "type"));
    last_link = std::move(*link);
  }
  if (out.links.size() < 2) {
    return malformed("need at least 2 " + std::string(kLinkPrefix) + "<i> headers, got " +
                     std::to_string(out.links.size()));
  }
  out.final_signature = string_member(last_link, "signature");

  const auto ts = identity.find("x-identity-timestamp");
  bool digits =
      ts != identity.end() && !ts->second->empty() && ts->second->size() <= kMaxTimestampDigits;
  if (digits) {
    for (char c : *ts->second) digits = digits && c >= '0' && c <= '9';
  }
  if (!digits) return malformed("x-identity-timestamp missing or not a decimal number of ms");
  out.timestamp = *ts->second;
  // At most 16 digits: fits an int64_t.
  for (char c : out.timestamp) out.timestamp_ms = out.timestamp_ms * 10 + (c - '0');

  const auto meta = identity.find("x-identity-metadata");
  if (meta == identity.end()) return malformed("x-identity-metadata missing");
  const char* why = nullptr;
  const auto metadata = parse_object(*meta->second, &why);
  if (!metadata) return malformed(std::string("x-identity-metadata ") + why);
  out.metadata = *meta->second;
  const auto body = metadata->find("bodySha256");
  if (body != metadata->end() && !body->is_null()) {
    if (body->is_string()) {
      out.body_hash = SignedFetchHeaders::BodyHash::Text;
      out.body_sha256 = body->get<std::string>();
    } else {
      out.body_hash = SignedFetchHeaders::BodyHash::NotText;
    }
  }

  if (out.timestamp_ms < sub_sat(now_ms, window_ms)) {
    return failure("signed_fetch_expired", "timestamp " + out.timestamp + " older than " +
                                               std::to_string(window_ms) + " ms (now " +
                                               std::to_string(now_ms) + ")");
  }
  if (out.timestamp_ms > add_sat(now_ms, max_future_ms)) {
    return failure("signed_fetch_future", "timestamp " + out.timestamp + " more than " +
                                              std::to_string(max_future_ms) + " ms ahead (now " +
                                              std::to_string(now_ms) + ")");
  }
  return out;
}

}  // namespace dclcomms::auth
