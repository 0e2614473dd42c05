// End-to-end realm smoke test over real sockets, built and run in the
// sanitizer tree (scripts/fuzz: ASan + UBSan), where it checks the code the
// unit tests reach only through the in-memory endpoint: the websocketpp/asio
// server, its I/O and auth threads, the admission and HTTP paths.
//
// One process: the Server (connector, rooms with required tokens, HTTP) on a
// free port of 127.0.0.1, an embedder thread doing what the realm does
// (drains poll(): heartbeats into the Archipelago engine, HTTP answered;
// flushes the engine and sends each changed peer its island with a ws-room
// connection string carrying a room JWT), and websocketpp clients with real
// secp256k1 identities: two players complete the connector handshake,
// heartbeat, are put on one island, join its room with the token, exchange a
// reliable update; an eavesdropper without a token is closed 4010; a plain
// HTTP request is answered; stop() closes the sessions left 1001.

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "clients.hpp"
#include "dclcomms/archipelago/engine.hpp"
#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/ws/server.hpp"
#include "socket_clients.hpp"

namespace {

using namespace dclcomms;
using namespace dclcomms::ws;
using std::chrono::milliseconds;
using ws::testing::member;
using ws::testing::path;
using ws::testing::Wallet;

constexpr const char* kSecret = "realm-smoke-room-secret";

// websocketpp clients on one asio thread (cpp/ws/testing/socket_clients.hpp).
using Clients = ws::testing::SocketClients;
using ws::testing::Peer;
constexpr std::chrono::milliseconds kWait = Clients::kWait;

// The next frame decoded with decode whose oneof member is `want`; throws when
// the connection closes or nothing came in Clients::kWait.
template <typename Decode>
codec::Value next(Peer& p, Decode decode, const std::string& want) {
  auto v = Clients::next(p, decode, want);
  if (!v) throw std::runtime_error("timed out waiting for " + want);
  return *v;
}

codec::Value server_packet(const std::string& f) {
  return ws::testing::server_packet(f);
}
codec::Value ws_packet(const std::string& f) {
  return ws::testing::ws_packet(f);
}

// What the realm does with the server: engine fed from poll(), islands sent
// with ws-room connection strings, HTTP answered.
class Embedder {
 public:
  Embedder(Server& server, uint16_t port)
      : server_(server), port_(port), engine_(archipelago::Config{}) {
    thread_ = std::thread([this] { run(); });
  }
  ~Embedder() {
    stop_ = true;
    thread_.join();
  }
  uint64_t http_answered() const { return http_; }

 private:
  void run() {
    while (!stop_) {
      for (auto& ev : server_.poll(256)) {
        if (auto* hb = std::get_if<Heartbeats>(&ev)) {
          for (size_t i = 0; i < hb->addresses.size(); ++i) {
            engine_.update(hb->addresses[i], hb->positions[3 * i], hb->positions[3 * i + 1],
                           hb->positions[3 * i + 2]);
          }
        } else if (auto* gone = std::get_if<PeerDisconnected>(&ev)) {
          engine_.disconnect(gone->address);
        } else if (auto* req = std::get_if<HttpRequest>(&ev)) {
          ++http_;  // before the answer, which the client may read at once
          server_.respond(req->request_id, 200, {{"Content-Type", "application/json"}},
                          "{\"healthy\":true,\"path\":\"" + req->path + "\"}");
        }
      }
      for (const auto& change : engine_.flush()) {
        if (change.kind != archipelago::ChangeKind::Changed) continue;
        codec::IslandChanged msg;
        msg.island_id = change.island_id;
        msg.from_island_id = change.from_island_id;
        nlohmann::ordered_json claims;
        claims["sub"] = change.peer_id;
        claims["room"] = change.island_id;
        claims["exp"] = ws::testing::real_unix_ms() / 1000 + 300;
        msg.conn_str = "ws-room:ws://127.0.0.1:" + std::to_string(port_) + "/rooms/" +
                       change.island_id + "?access_token=" + auth::jwt_encode(claims, kSecret);
        for (const auto& island : engine_.islands()) {
          if (island.id != change.island_id) continue;
          for (size_t i = 0; i < island.peers.size(); ++i) {
            msg.peers.emplace_back(island.peers[i], codec::Position{island.positions[3 * i],
                                                                    island.positions[3 * i + 1],
                                                                    island.positions[3 * i + 2]});
          }
        }
        server_.send_island_changed(change.peer_id, msg);
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
  }

  Server& server_;
  uint16_t port_;
  archipelago::Engine engine_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> http_{0};
  std::thread thread_;
};

std::string http_get(uint16_t port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req =
        "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

struct Player {
  Wallet wallet;
  std::shared_ptr<Peer> connector, room;
  std::string island, room_url;
  int64_t alias = 0;
};

TEST(RealmSmoke, HandshakeHeartbeatsIslandRoomExchangeOverSockets) {
  Config config;
  config.io_threads = 2;
  config.auth_threads = 2;
  config.ws_room_secret = kSecret;
  config.ws_room_require_token = true;
  validate(config);
  Server server(config);
  const uint16_t port = server.start();
  ASSERT_NE(port, 0);
  Embedder embedder(server, port);
  Clients clients;
  const std::string base = "ws://127.0.0.1:" + std::to_string(port);

  Player players[] = {{Wallet(101), nullptr, nullptr, "", "", 0},
                      {Wallet(202), nullptr, nullptr, "", "", 0}};
  // Connector handshake: challenge, signed challenge, welcome.
  for (auto& p : players) {
    p.connector = clients.connect(base + "/ws");
    clients.send(p.connector, ws::testing::challenge_request(p.wallet.address()));
    const auto challenge = next(*p.connector, server_packet, "challengeResponse");
    const std::string to_sign = path(challenge, "challengeResponse.challengeToSign").as_string();
    clients.send(p.connector, ws::testing::signed_challenge(p.wallet.auth_chain(
                                  to_sign, ws::testing::real_unix_ms() + 3'600'000)));
    const auto welcome = next(*p.connector, server_packet, "welcome");
    EXPECT_EQ(path(welcome, "welcome.peerId").as_string(), p.wallet.address());
  }
  // Heartbeats close together: one island for both, with a room token.
  float x = 10;
  for (auto& p : players) {
    for (int i = 0; i < 3; ++i) {
      clients.send(p.connector, ws::testing::heartbeat(codec::Position{x, 0, 10}));
    }
    x += 4;
  }
  // Each player's latest island (the engine may move a player again when islands merge).
  auto read_island = [&](Player& p, std::chrono::milliseconds wait) {
    auto changed = Clients::next(*p.connector, server_packet, "islandChanged", wait);
    if (!changed) return false;
    p.island = path(*changed, "islandChanged.islandId").as_string();
    const std::string conn = path(*changed, "islandChanged.connStr").as_string();
    EXPECT_EQ(conn.rfind("ws-room:ws://127.0.0.1:", 0), 0u) << conn;
    p.room_url = conn.substr(std::string("ws-room:").size());
    return true;
  };
  for (auto& p : players) ASSERT_TRUE(read_island(p, kWait));
  for (int round = 0; round < 20 && players[0].island != players[1].island; ++round) {
    for (auto& p : players) read_island(p, milliseconds(100));
  }
  ASSERT_EQ(players[0].island, players[1].island);

  // The island's room: identification, signed challenge, welcome with an alias.
  for (auto& p : players) {
    p.room = clients.connect(p.room_url);
    clients.send(p.room, ws::testing::peer_identification(p.wallet.address()));
    const auto challenge = next(*p.room, ws_packet, "challengeMessage");
    const std::string to_sign = path(challenge, "challengeMessage.challengeToSign").as_string();
    clients.send(p.room, ws::testing::signed_challenge_for_server(p.wallet.auth_chain(
                             to_sign, ws::testing::real_unix_ms() + 3'600'000)));
    const auto welcome = next(*p.room, ws_packet, "welcomeMessage");
    p.alias = path(welcome, "welcomeMessage.alias").as_int();
  }
  // A reliable update from the first player reaches the second.
  clients.send(players[0].room,
               ws::testing::peer_update(static_cast<uint32_t>(players[0].alias), "hello", false));
  const auto update = next(*players[1].room, ws_packet, "peerUpdateMessage");
  EXPECT_EQ(path(update, "peerUpdateMessage.fromAlias").as_int(), players[0].alias);
  EXPECT_EQ(path(update, "peerUpdateMessage.body").as_string(), "aGVsbG8=");  // base64 "hello"

  // An eavesdropper without the realm's token is refused 4010.
  auto eve = clients.connect(base + "/rooms/" + players[0].island);
  EXPECT_EQ(clients.closed(*eve), 4010);

  // Plain HTTP goes through the embedder.
  const std::string answer = http_get(port, "/status");
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"path\":\"/status\""), std::string::npos) << answer;
  EXPECT_GE(embedder.http_answered(), 1u);

  // stop() closes the sessions still open with 1001.
  server.stop();
  for (auto& p : players) {
    EXPECT_EQ(clients.closed(*p.connector), 1001);
    EXPECT_EQ(clients.closed(*p.room), 1001);
  }
}

}  // namespace
