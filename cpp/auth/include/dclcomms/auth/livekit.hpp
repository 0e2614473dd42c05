#pragma once
// LiveKit access tokens (transports.md section 2): HS256 JWT with header
// {"alg":"HS256"} and the claim order of LiveKit's JavaScript server SDK
// (metadata, name, video, iss, exp, nbf, sub), so tokens are byte-identical
// to the SDK's for the same inputs.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace dclcomms::auth {

struct LiveKitTokenOptions {
  std::string identity;                 // "sub"; required (roomJoin needs it)
  std::string room;                     // video.room; required
  int64_t ttl_s = 300;                  // exp = nbf + ttl_s; must be > 0
  int64_t now_s = 0;                    // nbf
  std::optional<std::string> name;      // "name" claim when set
  std::optional<std::string> metadata;  // "metadata" claim (DCL puts JSON text)
  // Applied on top of the island grant: existing keys are replaced in place,
  // new keys appended. Must be an object when set.
  const nlohmann::ordered_json* grants = nullptr;
};

// The island grant: roomJoin, room, roomList:false, canPublish, canSubscribe,
// canPublishData, canUpdateOwnMetadata:true, canPublishSources:["microphone"].
// Throws dclcomms::Error{Token, ...} on invalid options.
std::string livekit_token(std::string_view api_key, std::string_view api_secret,
                          const LiveKitTokenOptions& options);

// livekit_token for each of `identities` (options.identity is ignored), the
// key's HMAC set up once for all of them (an island's arrivals). The same
// tokens; throws as livekit_token does, for the first identity that fails.
std::vector<std::string> livekit_tokens(std::string_view api_key, std::string_view api_secret,
                                        LiveKitTokenOptions options,
                                        const std::vector<std::string_view>& identities);

}  // namespace dclcomms::auth
