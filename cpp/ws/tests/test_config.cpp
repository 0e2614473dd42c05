// ws::Config: the defaults are valid; every minimum of DCLCOMMS_WS_CONFIG and
// the soft <= hard rule reject with invalid_parameter, naming the setting.

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "dclcomms/error.hpp"
#include "dclcomms/ws/server.hpp"

namespace dclcomms::ws {
namespace {

TEST(Config, DefaultsAreValid) {
  EXPECT_NO_THROW(validate(Config{}));
  Config c;
  c.idle_timeout_ms = 0;  // 0 = off
  c.rooms_sender_max_msgs_per_s = 0;
  c.rooms_max_users = 0;
  c.rooms_soft_limit_bytes = c.rooms_hard_limit_bytes;
  EXPECT_NO_THROW(validate(c));
}

TEST(Config, EachViolationNamesItsSetting) {
  struct Case {
    std::string field;
    std::function<void(Config&)> set;
  };
  const std::vector<Case> cases = {
      {"io_threads", [](Config& c) { c.io_threads = 0; }},
      {"auth_threads", [](Config& c) { c.auth_threads = -1; }},
      {"max_frame_bytes", [](Config& c) { c.max_frame_bytes = 0; }},
      {"connector_handshake_timeout_ms", [](Config& c) { c.connector_handshake_timeout_ms = 0; }},
      {"heartbeat_max_per_s", [](Config& c) { c.heartbeat_max_per_s = 0; }},
      {"rooms_handshake_timeout_ms", [](Config& c) { c.rooms_handshake_timeout_ms = -5; }},
      {"rooms_sender_max_msgs_per_s", [](Config& c) { c.rooms_sender_max_msgs_per_s = -1; }},
      {"bus_max_frames_per_s", [](Config& c) { c.bus_max_frames_per_s = 0; }},
      {"bus_max_frame_bytes", [](Config& c) { c.bus_max_frame_bytes = 0; }},
      {"idle_timeout_ms", [](Config& c) { c.idle_timeout_ms = -1; }},
      {"http_timeout_ms", [](Config& c) { c.http_timeout_ms = 0; }},
      {"max_pending_frames", [](Config& c) { c.max_pending_frames = 0; }},
      {"rooms_soft_limit_bytes", [](Config& c) { c.rooms_soft_limit_bytes = 2 << 20; }},
  };
  for (const auto& k : cases) {
    Config c;
    k.set(c);
    try {
      validate(c);
      ADD_FAILURE() << k.field << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Config);
      EXPECT_EQ(e.code(), "invalid_parameter");
      EXPECT_EQ(std::string(e.what()).rfind(k.field + ": ", 0), 0u) << e.what();
    }
  }
}

TEST(Config, TheServerValidatesToo) {
  Config c;
  c.max_pending_frames = 0;
  EXPECT_THROW(Server{c}, Error);
}

}  // namespace
}  // namespace dclcomms::ws
