// LiveKit access tokens with the island grant (transports.md section 2.2).

#include "dclcomms/auth/livekit.hpp"

#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/error.hpp"

namespace dclcomms::auth {

std::string livekit_token(std::string_view api_key, std::string_view api_secret,
                          const LiveKitTokenOptions& o) {
  if (api_key.empty() || api_secret.empty()) {
    throw Error(ErrorKind::Token, "bad_claims", "LiveKit api_key and api_secret are required");
  }
  if (o.identity.empty()) throw Error(ErrorKind::Token, "bad_claims", "identity is required");
  if (o.room.empty()) throw Error(ErrorKind::Token, "bad_claims", "room is required");
  if (o.ttl_s <= 0) throw Error(ErrorKind::Token, "bad_claims", "ttl_s must be positive");

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

}  // namespace dclcomms::auth
