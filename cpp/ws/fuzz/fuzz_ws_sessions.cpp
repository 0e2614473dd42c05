// libFuzzer target: the session state machines (connector, bus, rooms) on the
// in-memory endpoint. The input is a script: each step's first byte picks an
// action (connect to a path, a frame of the next bytes, a valid handshake
// step, run the auth checks, move the clocks, the client leaves, an embedder
// call), so sequences of frames, timers and closes reach every state.
// Invariants: nothing throws out of the hub; a closed connection got a close
// code in 1000-4999; the counters of sessions never exceed the connections.
// Build and run: scripts/fuzz (docs/operations.md, "Fuzzing").

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "clients.hpp"
#include "dclcomms/auth/jwt.hpp"
#include "fake_endpoint.hpp"

using namespace dclcomms::ws;
using namespace dclcomms::ws::testing;

namespace {

constexpr const char* kSecret = "fuzz-room-secret";

struct Input {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::string bytes(size_t len) {
    len = std::min(len, n);
    std::string s(reinterpret_cast<const char*>(p), len);
    p += len;
    n -= len;
    return s;
  }
};

Config fuzz_config() {
  Config c;
  c.bus = true;
  c.rooms_max_users = 3;
  c.max_pending_frames = 2;
  c.ws_room_secret = kSecret;
  c.ws_room_require_token = true;
  c.heartbeat_max_per_s = 3;
  c.bus_max_frames_per_s = 3;
  c.rooms_sender_max_msgs_per_s = 5;
  c.connector_max_queued_bytes = 4096;
  c.rooms_soft_limit_bytes = 1024;
  c.rooms_hard_limit_bytes = 4096;
  c.idle_timeout_ms = 6000;
  c.unauthenticated_timeout_ms = 5000;
  return c;
}

std::string token(const std::string& room, const std::string& sub, int64_t now_ms) {
  nlohmann::ordered_json claims;
  claims["sub"] = sub;
  claims["room"] = room;
  claims["exp"] = now_ms / 1000 + 600;
  return dclcomms::auth::jwt_encode(claims, kSecret);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Wallet wallets[] = {Wallet(1), Wallet(2), Wallet(3)};
  static const char* const rooms[] = {"plaza", "I1", "bad room", ""};
  Input in{data, size};
  FakeEndpoint ep(fuzz_config(), 1'767'225'600'000);
  std::vector<Conn> conns;
  std::vector<const Wallet*> who;
  auto pick = [&](uint8_t b) -> size_t { return conns.empty() ? 0 : b % conns.size(); };
  for (int step = 0; step < 64 && in.n > 0; ++step) {
    uint8_t op = in.byte();
    uint8_t arg = in.byte();
    const Wallet& w = wallets[arg % 3];
    switch (op % 12) {
      case 0: {  // connect
        static const char* const paths[] = {"/ws", "/archipelago/ws", "/bus", "/rooms/", "/nope"};
        std::string path = paths[arg % 5];
        if (path == "/rooms/") {
          std::string room = rooms[(arg >> 3) % 4];
          path += room;
          if (arg & 0x80) path += "?access_token=" + token(room, w.address(), ep.unix_ms());
          if (arg & 0x40) path += "?access_token=" + in.bytes(in.byte() % 64);
        }
        if (Conn c = ep.connect(path)) {
          conns.push_back(c);
          who.push_back(&w);
        }
        break;
      }
      case 1:
      case 2: {  // a raw frame
        if (conns.empty()) break;
        size_t i = pick(arg);
        std::string frame = in.bytes(in.byte());
        ep.receive(conns[i], frame, (arg & 1) ? FrameType::Text : FrameType::Binary);
        break;
      }
      case 3: {  // a well-formed first handshake step
        if (conns.empty()) break;
        size_t i = pick(arg);
        const std::string& a = who[i]->address();
        ep.receive(conns[i], conns[i]->kind == Hub::Kind::Room ? peer_identification(a)
                                                               : challenge_request(a));
        break;
      }
      case 4: {  // the signed challenge, when one was sent
        if (conns.empty()) break;
        size_t i = pick(arg);
        std::string challenge;
        try {
          challenge = last_challenge(conns[i]);
        } catch (const std::exception&) {
          break;
        }
        std::string chain = who[i]->auth_chain(challenge, ep.unix_ms() + 3'600'000);
        ep.receive(conns[i], conns[i]->kind == Hub::Kind::Room ? signed_challenge_for_server(chain)
                                                               : signed_challenge(chain));
        break;
      }
      case 5:
        ep.finish_verifications();
        break;
      case 6:
        ep.advance(static_cast<int64_t>(arg) * 50);
        break;
      case 7:
        if (!conns.empty()) ep.disconnect(conns[pick(arg)]);
        break;
      case 8: {  // heartbeat or room update
        if (conns.empty()) break;
        size_t i = pick(arg);
        float x = static_cast<float>(static_cast<int8_t>(in.byte())) * 10.0f;
        ep.receive(conns[i], conns[i]->kind == Hub::Kind::Room
                                 ? peer_update(0, in.bytes(in.byte() % 32), arg & 1)
                                 : heartbeat(dclcomms::codec::Position{x, 0, x}));
        break;
      }
      case 9:
        if (!conns.empty()) ep.pong(conns[pick(arg)]);
        if (!conns.empty()) conns[pick(arg)]->reading = (arg & 1) != 0;
        break;
      case 10: {  // embedder calls
        const std::string& a = w.address();
        switch (arg % 5) {
          case 0:
            ep.send_connector(a, in.bytes(in.byte()));
            break;
          case 1:
            ep.kick(a, 4005 + (arg & 1), "kicked");
            break;
          case 2:
            ep.send_bus(a, "{\"type\":\"x\"}");
            break;
          case 3:
            ep.close_bus(a, 4000, "bye");
            break;
          default:
            ep.set_deny_list({a});
            break;
        }
        break;
      }
      default:
        ep.events();
        break;
    }
  }
  if (in.byte() & 1) ep.shutdown();
  ep.finish_verifications();
  ep.events();
  for (const Conn& c : conns) {
    if (c->close_code && (*c->close_code < 1000 || *c->close_code > 4999)) std::abort();
  }
  uint64_t sessions = ep.counter("connector", "sessions") + ep.counter("bus", "sessions") +
                      ep.counter("rooms", "users");
  if (sessions > conns.size()) std::abort();
  return 0;
}
