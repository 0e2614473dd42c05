// LiveKit access tokens with the island grant (transports.md section 2.2).

#include "dclcomms/auth/livekit.hpp"

#include <memory>

#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/error.hpp"
#include "internal.hpp"

namespace dclcomms::auth {
namespace {

// Printable ASCII only: then JSON escaping is just \" and \\.
bool printable_ascii(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

void append_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

// The common case (no grant overrides, ASCII strings) without building a JSON
// tree: same bytes as nlohmann's dump of the tree below, at a fraction of the
// cost (the mint is on the archipelago hot path).
std::string fast_claims(std::string_view api_key, const LiveKitTokenOptions& o) {
  std::string out;
  out.reserve(320 + o.room.size() + o.identity.size() + (o.metadata ? o.metadata->size() : 0));
  out += '{';
  if (o.metadata) {
    out += "\"metadata\":";
    append_string(out, *o.metadata);
    out += ',';
  }
  if (o.name) {
    out += "\"name\":";
    append_string(out, *o.name);
    out += ',';
  }
  out += "\"video\":{\"roomJoin\":true,\"room\":";
  append_string(out, o.room);
  out +=
      ",\"roomList\":false,\"canPublish\":true,\"canSubscribe\":true,\"canPublishData\":true,"
      "\"canUpdateOwnMetadata\":true,\"canPublishSources\":[\"microphone\"]},\"iss\":";
  append_string(out, api_key);
  out += ",\"exp\":" + std::to_string(o.now_s + o.ttl_s) + ",\"nbf\":" + std::to_string(o.now_s) +
         ",\"sub\":";
  append_string(out, o.identity);
  out += '}';
  return out;
}

void check(std::string_view api_key, std::string_view api_secret, const LiveKitTokenOptions& o) {
  if (api_key.empty() || api_secret.empty()) {
    throw Error(ErrorKind::Token, "bad_claims", "LiveKit api_key and api_secret are required");
  }
  if (o.identity.empty()) throw Error(ErrorKind::Token, "bad_claims", "identity is required");
  if (o.room.empty()) throw Error(ErrorKind::Token, "bad_claims", "room is required");
  if (o.ttl_s <= 0) throw Error(ErrorKind::Token, "bad_claims", "ttl_s must be positive");
}

bool fast(std::string_view api_key, const LiveKitTokenOptions& o) {
  return o.grants == nullptr && printable_ascii(api_key) && printable_ascii(o.identity) &&
         printable_ascii(o.room) && (!o.name || printable_ascii(*o.name)) &&
         (!o.metadata || printable_ascii(*o.metadata));
}

// The fast path's token; `mac` signs its header and claims.
template <typename Mac>
std::string fast_token(std::string_view api_key, const LiveKitTokenOptions& o, Mac&& mac) {
  // base64url('{"alg":"HS256"}')
  std::string token = "eyJhbGciOiJIUzI1NiJ9.";
  token += detail::base64url_encode(fast_claims(api_key, o));
  const std::string signature = mac(token);
  token += '.';
  token += detail::base64url_encode(signature);
  return token;
}

std::string slow_token(std::string_view api_key, std::string_view api_secret,
                       const LiveKitTokenOptions& o);

}  // namespace

std::string livekit_token(std::string_view api_key, std::string_view api_secret,
                          const LiveKitTokenOptions& o) {
  check(api_key, api_secret, o);
  if (fast(api_key, o)) {
    return fast_token(api_key, o,
                      [&](std::string_view data) { return detail::hmac_sha256(api_secret, data); });
  }
  return slow_token(api_key, api_secret, o);
}

std::vector<std::string> livekit_tokens(std::string_view api_key, std::string_view api_secret,
                                        LiveKitTokenOptions o,
                                        const std::vector<std::string_view>& identities) {
  std::vector<std::string> out;
  out.reserve(identities.size());
  std::unique_ptr<Hs256Signer> signer;  // once a fast token is needed
  for (const auto identity : identities) {
    o.identity.assign(identity.data(), identity.size());
    check(api_key, api_secret, o);
    if (!fast(api_key, o)) {
      out.push_back(slow_token(api_key, api_secret, o));
      continue;
    }
    if (!signer) signer = std::make_unique<Hs256Signer>(api_secret);
    out.push_back(fast_token(api_key, o, [&](std::string_view data) { return signer->mac(data); }));
  }
  return out;
}

namespace {

std::string slow_token(std::string_view api_key, std::string_view api_secret,
                       const LiveKitTokenOptions& o) {
  nlohmann::ordered_json video = {
      {"roomJoin", true},
      {"room", o.room},
      {"roomList", false},
      {"canPublish", true},
      {"canSubscribe", true},
      {"canPublishData", true},
      {"canUpdateOwnMetadata", true},
      {"canPublishSources", nlohmann::ordered_json::array({"microphone"})},
  };
  if (o.grants != nullptr) {
    if (!o.grants->is_object()) {
      throw Error(ErrorKind::Token, "bad_claims", "grants must be a JSON object");
    }
    for (const auto& [key, value] : o.grants->items()) video[key] = value;  // in place or appended
  }
  // Claim order of livekit-server-sdk: metadata, name, video, iss, exp, nbf, sub.
  nlohmann::ordered_json claims = nlohmann::ordered_json::object();
  if (o.metadata) claims["metadata"] = *o.metadata;
  if (o.name) claims["name"] = *o.name;
  claims["video"] = std::move(video);
  claims["iss"] = std::string(api_key);
  claims["exp"] = o.now_s + o.ttl_s;
  claims["nbf"] = o.now_s;
  claims["sub"] = o.identity;
  static const nlohmann::ordered_json kHeader = {{"alg", "HS256"}};
  return jwt_encode(claims, api_secret, &kHeader);
}

}  // namespace

}  // namespace dclcomms::auth
