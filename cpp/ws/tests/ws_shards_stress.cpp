// The cross-shard paths of a sharded server under concurrent load, over real
// sockets on 127.0.0.1: a Server with io_threads 3 serving the connector and
// rooms, connector sessions spread over its shards, and at the same time
//  * the same address authenticating on two new sockets at once while its
//    first session is open (newest wins: the others get kicked, close 4006);
//  * kicks (4005 with a kicked packet, 4003 without) from another thread;
//  * clients closing their own sessions;
//  * sends to sessions of every shard from another thread (in order, none lost);
//  * the relay's island changes and moves from a non-I/O thread (what the NATS
//    relay does: each recipient queued for its session's shard);
//  * heartbeats from sessions of every shard into shard 0's queue;
//  * room traffic in rooms of every shard;
// then stop() while relay, sends, heartbeats and room updates keep flowing.
// It checks what each client received, the embedder's events (per address in
// directory order) and that the counters add up. Run under ThreadSanitizer by
// scripts/fuzz tsan (build/tsan), and in the normal ctest.

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "clients.hpp"
#include "dclcomms/codec/fast.hpp"
#include "dclcomms/codec/value.hpp"
#include "dclcomms/ws/server.hpp"
#include "socket_clients.hpp"

namespace {

using namespace dclcomms;
using namespace dclcomms::ws;
using ws::testing::Peer;
using ws::testing::SocketClients;
using ws::testing::Wallet;
using PeerPtr = std::shared_ptr<Peer>;
using std::chrono::milliseconds;

codec::Value server_packet(const std::string& f) {
  return ws::testing::server_packet(f);
}
codec::Value ws_packet(const std::string& f) {
  return ws::testing::ws_packet(f);
}
const codec::Value& path(const codec::Value& v, std::string_view p) {
  return ws::testing::path(v, p);
}
uint64_t stat(const std::vector<std::pair<std::string, uint64_t>>& list, const std::string& name) {
  for (const auto& [k, v] : list) {
    if (k == name) return v;
  }
  ADD_FAILURE() << "no counter " << name;
  return 0;
}

// Drains poll() on its own thread: each address's Connected/Disconnected
// events in order, and its heartbeats.
class Embedder {
 public:
  explicit Embedder(Server& server) : server_(server) {
    thread_ = std::thread([this] { run(); });
  }
  ~Embedder() { halt(); }
  void halt() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // 'C' connected, 'D' disconnected, in the order poll() gave them.
  std::string events(const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    return events_[address];
  }
  size_t heartbeats(const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    return heartbeats_[address];
  }
  size_t heartbeats_total() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const auto& [_, c] : heartbeats_) n += c;
    return n;
  }
  // Waits until pred() holds (under the embedder's lock); false after 20 s.
  bool wait(const std::function<bool()>& pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (pred()) return true;
      }
      std::this_thread::sleep_for(milliseconds(2));
    }
    return false;
  }
  std::map<std::string, std::string>& events_locked() { return events_; }
  std::map<std::string, size_t>& heartbeats_locked() { return heartbeats_; }

 private:
  void run() {
    while (!stop_) {
      auto evs = server_.poll(256);
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& ev : evs) {
        if (auto* c = std::get_if<PeerConnected>(&ev)) {
          events_[c->address] += 'C';
        } else if (auto* d = std::get_if<PeerDisconnected>(&ev)) {
          events_[d->address] += 'D';
        } else if (auto* hb = std::get_if<Heartbeats>(&ev)) {
          for (const auto& a : hb->addresses) ++heartbeats_[a];
        }
      }
      if (evs.empty()) std::this_thread::sleep_for(milliseconds(1));
    }
  }
  Server& server_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<std::string, std::string> events_;
  std::map<std::string, size_t> heartbeats_;
  std::thread thread_;
};

// The connector handshake up to the challenge (its alreadyConnected flag
// returned), then the signed challenge.
bool request_challenge(SocketClients& c, const PeerPtr& p, const Wallet& w, std::string* to_sign) {
  c.send(p, ws::testing::challenge_request(w.address()));
  auto challenge = SocketClients::next(*p, server_packet, "challengeResponse");
  if (!challenge) throw std::runtime_error("no challenge for " + w.address());
  *to_sign = path(*challenge, "challengeResponse.challengeToSign").as_string();
  return path(*challenge, "challengeResponse.alreadyConnected").as_bool();
}
void sign_challenge(SocketClients& c, const PeerPtr& p, const Wallet& w, const std::string& s) {
  c.send(p,
         ws::testing::signed_challenge(w.auth_chain(s, ws::testing::real_unix_ms() + 3'600'000)));
}
// A whole handshake; the welcome's peer id.
std::string join_connector(SocketClients& c, const PeerPtr& p, const Wallet& w) {
  std::string to_sign;
  request_challenge(c, p, w, &to_sign);
  sign_challenge(c, p, w, to_sign);
  auto welcome = SocketClients::next(*p, server_packet, "welcome");
  if (!welcome) throw std::runtime_error("no welcome for " + w.address());
  return path(*welcome, "welcome.peerId").as_string();
}

struct RoomMember {
  Wallet wallet;
  PeerPtr peer;
  int64_t alias = 0;
};

int64_t join_room(SocketClients& c, const PeerPtr& p, const Wallet& w) {
  c.send(p, ws::testing::peer_identification(w.address()));
  auto challenge = SocketClients::next(*p, ws_packet, "challengeMessage");
  if (!challenge) throw std::runtime_error("no room challenge");
  const std::string to_sign = path(*challenge, "challengeMessage.challengeToSign").as_string();
  c.send(p, ws::testing::signed_challenge_for_server(
                w.auth_chain(to_sign, ws::testing::real_unix_ms() + 3'600'000)));
  auto welcome = SocketClients::next(*p, ws_packet, "welcomeMessage");
  if (!welcome) throw std::runtime_error("no room welcome");
  return path(*welcome, "welcomeMessage.alias").as_int();
}

// A WebSocket client on a plain socket that completes the upgrade to path and
// then never reads or answers anything (so never pongs): what an idle sweep
// closes.
class SilentSocket {
 public:
  SilentSocket(uint16_t port, const std::string& path) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{20, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("connect");
    }
    const std::string req = "GET " + path +
                            " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n";
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
      throw std::runtime_error("send");
    }
    while (in_.find("\r\n\r\n") == std::string::npos) {
      if (!read_some()) throw std::runtime_error("no upgrade answer");
    }
    if (in_.rfind("HTTP/1.1 101", 0) != 0) throw std::runtime_error("not upgraded: " + in_);
    in_.erase(0, in_.find("\r\n\r\n") + 4);
  }
  ~SilentSocket() { ::close(fd_); }
  SilentSocket(const SilentSocket&) = delete;
  SilentSocket& operator=(const SilentSocket&) = delete;

  // Reads server frames (unmasked, short control frames) until the close
  // frame: its code and reason, and the pings before it.
  std::pair<int, std::string> close_frame(int* pings) {
    for (;;) {
      while (in_.size() >= 2 && in_.size() >= 2 + size_t(uint8_t(in_[1]) & 0x7f)) {
        const int opcode = uint8_t(in_[0]) & 0x0f;
        const size_t len = uint8_t(in_[1]) & 0x7f;  // < 126: every frame expected here
        std::string payload = in_.substr(2, len);
        in_.erase(0, 2 + len);
        if (opcode == 0x9) ++*pings;
        if (opcode == 0x8 && payload.size() >= 2) {
          return {(uint8_t(payload[0]) << 8) | uint8_t(payload[1]), payload.substr(2)};
        }
      }
      if (!read_some()) return {-1, ""};
    }
  }

 private:
  bool read_some() {
    char buf[1024];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    in_.append(buf, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
  std::string in_;
};

// Runs each function on its own thread; rethrows the first exception.
void run_together(std::vector<std::function<void()>> fs) {
  std::vector<std::thread> threads;
  std::mutex mu;
  std::exception_ptr first;
  for (auto& f : fs) {
    threads.emplace_back([&, f] {
      try {
        f();
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first) first = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

constexpr int kShards = 3;
constexpr size_t kSessions = 24;
constexpr int kSends = 40;        // join_island frames to each send target
constexpr int kRelayRounds = 10;  // island changes to each relay target
constexpr int kHeartbeats = 30;   // per heartbeating session
constexpr int kUpdates = 20;      // reliable updates per room member
constexpr size_t kRoomSize = 3;

TEST(WsShardsStress, CrossShardConnectorAndRoomsUnderConcurrentLoad) {
  Config config;
  config.io_threads = kShards;
  config.auth_threads = 2;
  config.heartbeat_max_per_s = 1000;
  validate(config);
  Server server(config);
  const uint16_t port = server.start();
  ASSERT_NE(port, 0);
  const std::string base = "ws://127.0.0.1:" + std::to_string(port);
  Embedder embedder(server);
  SocketClients clients[2];

  // --- every session connects and authenticates, from 4 threads at once
  std::vector<Wallet> wallets;
  for (size_t i = 0; i < kSessions; ++i) wallets.emplace_back(1000 + i);
  std::vector<PeerPtr> first(kSessions);
  {
    std::vector<std::function<void()>> joins;
    for (size_t t = 0; t < 4; ++t) {
      joins.emplace_back([&, t] {
        for (size_t i = t; i < kSessions; i += 4) {
          SocketClients& c = clients[i % 2];
          first[i] = c.connect(base + (i % 3 == 0 ? "/archipelago/ws" : "/ws"));
          const std::string peer_id = join_connector(c, first[i], wallets[i]);
          if (peer_id != wallets[i].address()) throw std::runtime_error("welcome " + peer_id);
        }
      });
    }
    run_together(std::move(joins));
  }
  ASSERT_TRUE(embedder.wait([&] {
    for (auto& w : wallets) {
      if (embedder.events_locked()[w.address()] != "C") return false;
    }
    return true;
  })) << "a PeerConnected missing";
  EXPECT_EQ(stat(server.stats().connector, "sessions"), kSessions);

  // Roles: [0,4) duplicates, [4,8) kicked, [8,12) leave, [12,18) send targets,
  // [18,24) relay targets; [12,24) heartbeat.
  auto role = [&](size_t from, size_t to) {
    std::vector<size_t> out;
    for (size_t i = from; i < to; ++i) out.push_back(i);
    return out;
  };
  const auto dups = role(0, 4), kicked = role(4, 8), leavers = role(8, 12),
             send_targets = role(12, 18), relay_targets = role(18, 24), heartbeaters = role(12, 24);

  // Rooms: two per shard (their ids hash to each shard, as the server places them).
  std::vector<std::string> rooms;
  {
    int per_shard[kShards] = {};
    for (int k = 0; rooms.size() < 2 * kShards; ++k) {
      std::string id = "stress-room-" + std::to_string(k);
      size_t sh = std::hash<std::string>{}(id) % kShards;
      if (per_shard[sh] < 2) {
        ++per_shard[sh];
        rooms.push_back(id);
      }
    }
  }
  std::vector<std::vector<RoomMember>> members(rooms.size());
  for (size_t r = 0; r < rooms.size(); ++r) {
    for (size_t m = 0; m < kRoomSize; ++m) members[r].push_back({Wallet(5000 + 10 * r + m), {}, 0});
  }

  // --- phase 2: everything at once
  std::vector<PeerPtr> second(4), third(4);
  std::vector<char> second_flag(4), third_flag(4);  // alreadyConnected (not vector<bool>: threads)
  auto relay_island = [](int round) { return "isl-" + std::to_string(round); };
  std::vector<std::string> relay_addresses;
  for (size_t i : relay_targets) relay_addresses.push_back(wallets[i].address());
  std::vector<float> xyz;
  for (size_t i = 0; i < relay_addresses.size(); ++i) xyz.insert(xyz.end(), {float(i), 0, 1});
  const std::string peers_entries = codec::encode_island_changed_peers(relay_addresses, xyz.data());

  std::vector<std::function<void()>> work;
  // Two new sessions for each duplicate address, handshaking in lockstep from
  // two threads on different client threads (and different server shards:
  // upgrades go to the shards in turn).
  for (size_t d = 0; d < dups.size(); ++d) {
    work.emplace_back([&, d] {
      const Wallet& w = wallets[dups[d]];
      second[d] = clients[0].connect(base + "/ws");
      third[d] = clients[1].connect(base + "/ws");
      std::string s2, s3;
      second_flag[d] = request_challenge(clients[0], second[d], w, &s2);
      third_flag[d] = request_challenge(clients[1], third[d], w, &s3);
      sign_challenge(clients[0], second[d], w, s2);
      sign_challenge(clients[1], third[d], w, s3);
    });
  }
  work.emplace_back([&] {  // kicks from another thread
    for (size_t k = 0; k < kicked.size(); ++k) {
      server.kick(wallets[kicked[k]].address(), k < 2 ? 4005 : 4003, "stress kick");
    }
  });
  work.emplace_back([&] {  // clients leaving
    for (size_t i : leavers) clients[i % 2].close(first[i], 1000);
  });
  work.emplace_back([&] {  // sends to sessions of every shard
    for (int n = 0; n < kSends; ++n) {
      for (size_t i : send_targets) {
        server.send_join_island(wallets[i].address(), "s", "p" + std::to_string(n));
      }
    }
  });
  work.emplace_back([&] {  // the relay, as the NATS thread drives it
    for (int round = 0; round < kRelayRounds; ++round) {
      IslandChangesItem changes;
      changes.island_id = relay_island(round);
      changes.peers_entries = peers_entries;
      changes.frame_heads = true;
      for (const auto& a : relay_addresses) {
        IslandChangesItem::Recipient r;
        r.address = a;
        r.conn_str = "livekit:stress-" + std::to_string(round);
        if (round > 0) r.from_island_id = relay_island(round - 1);
        r.frame = codec::encode_server_island_changed_head(changes.island_id, r.conn_str,
                                                           r.from_island_id, peers_entries.size());
        changes.recipients.push_back(std::move(r));
      }
      std::vector<RelayItem> items;
      items.emplace_back(std::move(changes));
      items.emplace_back(TickEndItem{});
      if (round == kRelayRounds - 1) {
        items.emplace_back(IslandMovesItem{relay_island(round), {}, {"0xnewcomer"}});
      }
      server.relay(std::move(items));
    }
  });
  for (size_t h = 0; h < 2; ++h) {  // heartbeats, two threads
    work.emplace_back([&, h] {
      for (int n = 0; n < kHeartbeats; ++n) {
        for (size_t k = h; k < heartbeaters.size(); k += 2) {
          size_t i = heartbeaters[k];
          clients[i % 2].send(first[i], ws::testing::heartbeat(codec::Position{float(n), 0, 2}));
        }
      }
    });
  }
  for (size_t r = 0; r < rooms.size(); ++r) {  // a thread per room: join, then updates
    work.emplace_back([&, r] {
      SocketClients& c = clients[r % 2];
      for (auto& m : members[r]) {
        m.peer = c.connect(base + "/rooms/" + rooms[r]);
        m.alias = join_room(c, m.peer, m.wallet);
      }
      for (int n = 0; n < kUpdates; ++n) {
        for (size_t m = 0; m < kRoomSize; ++m) {
          c.send(members[r][m].peer,
                 ws::testing::peer_update(
                     static_cast<uint32_t>(members[r][m].alias),
                     rooms[r] + ":" + std::to_string(m) + ":" + std::to_string(n), false));
        }
      }
    });
  }
  run_together(std::move(work));

  // Duplicates: the first session is kicked 4006 (kicked packet first); of
  // the two new ones exactly one is replaced too, the other stays.
  std::vector<PeerPtr> dup_survivor(dups.size());
  auto has = [](Peer& p, const std::string& want) {
    for (const auto& f : SocketClients::take(p)) {
      if (ws::testing::member(server_packet(f)) == want) return true;
    }
    return false;
  };
  for (size_t d = 0; d < dups.size(); ++d) {
    const std::string& address = wallets[dups[d]].address();
    EXPECT_TRUE(second_flag[d]) << "already_connected: the first session is open";
    EXPECT_TRUE(third_flag[d]);
    EXPECT_EQ(SocketClients::closed(*first[dups[d]]), 4006) << address;
    EXPECT_TRUE(has(*first[dups[d]], "kicked")) << "kicked packet before 4006";
    // Both new ones are welcomed; the one registered first is then replaced.
    for (auto* p : {&second[d], &third[d]}) {
      auto welcome = SocketClients::next(**p, server_packet, "welcome");
      ASSERT_TRUE(welcome) << address;
      EXPECT_EQ(path(*welcome, "welcome.peerId").as_string(), address);
    }
    const auto deadline = std::chrono::steady_clock::now() + SocketClients::kWait;
    while (SocketClients::closed(*second[d], milliseconds(0)) < 0 &&
           SocketClients::closed(*third[d], milliseconds(0)) < 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(2));
    }
    std::this_thread::sleep_for(milliseconds(100));  // a wrong second close would show
    int replaced = 0;
    for (auto* p : {&second[d], &third[d]}) {
      const int code = SocketClients::closed(**p, milliseconds(0));
      if (code == 4006) {
        ++replaced;
        EXPECT_TRUE(has(**p, "kicked")) << "replaced session: kicked packet, then 4006";
      } else {
        EXPECT_EQ(code, -1) << "the newest session stays open";
        dup_survivor[d] = *p;
      }
    }
    EXPECT_EQ(replaced, 1) << address;
    ASSERT_TRUE(dup_survivor[d]) << address;
  }
  // Kicked: 4005 after a kicked packet, 4003 without.
  for (size_t k = 0; k < kicked.size(); ++k) {
    Peer& p = *first[kicked[k]];
    EXPECT_EQ(SocketClients::closed(p), k < 2 ? 4005 : 4003);
    bool kicked_pkt = false;
    for (const auto& f : SocketClients::take(p)) {
      if (ws::testing::member(server_packet(f)) == "kicked") kicked_pkt = true;
    }
    EXPECT_EQ(kicked_pkt, k < 2) << "kicked packet only before 4005/4006";
  }
  for (size_t i : leavers) EXPECT_EQ(SocketClients::closed(*first[i]), 1000);

  // Sends: every join_island, in order, to each target.
  for (size_t i : send_targets) {
    for (int n = 0; n < kSends; ++n) {
      auto j = SocketClients::next(*first[i], server_packet, "joinIsland");
      ASSERT_TRUE(j) << "send " << n << " to " << wallets[i].address();
      EXPECT_EQ(path(*j, "joinIsland.peerId").as_string(), "p" + std::to_string(n));
    }
  }
  // Relay: every island change in order (from_island_id the previous one),
  // with the shared member map; then the newcomer's join on the last island.
  for (size_t i : relay_targets) {
    for (int round = 0; round < kRelayRounds; ++round) {
      auto ch = SocketClients::next(*first[i], server_packet, "islandChanged");
      ASSERT_TRUE(ch) << "round " << round << " to " << wallets[i].address();
      EXPECT_EQ(path(*ch, "islandChanged.islandId").as_string(), relay_island(round));
      const auto& fields = path(*ch, "islandChanged").as_object();
      const bool has_from = std::any_of(fields.begin(), fields.end(),
                                        [](const auto& kv) { return kv.first == "fromIslandId"; });
      EXPECT_EQ(has_from, round > 0) << "a session's first island has no from_island_id";
      if (round > 0 && has_from) {
        EXPECT_EQ(path(*ch, "islandChanged.fromIslandId").as_string(), relay_island(round - 1));
      }
      EXPECT_EQ(path(*ch, "islandChanged.peers").as_object().size(), relay_addresses.size());
    }
    auto joined = SocketClients::next(*first[i], server_packet, "joinIsland");
    ASSERT_TRUE(joined);
    EXPECT_EQ(path(*joined, "joinIsland.islandId").as_string(), relay_island(kRelayRounds - 1));
    EXPECT_EQ(path(*joined, "joinIsland.peerId").as_string(), "0xnewcomer");
    EXPECT_EQ(server.connector_island_of(wallets[i].address()), relay_island(kRelayRounds - 1));
  }
  // Rooms: each member got every update of the two others, in order per sender.
  for (size_t r = 0; r < rooms.size(); ++r) {
    for (size_t m = 0; m < kRoomSize; ++m) {
      std::map<int64_t, int> next_seq;  // sender alias -> next update expected
      for (int n = 0; n < kUpdates * int(kRoomSize - 1); ++n) {
        auto u = SocketClients::next(*members[r][m].peer, ws_packet, "peerUpdateMessage");
        ASSERT_TRUE(u) << rooms[r] << " member " << m << " update " << n;
        const int64_t from = path(*u, "peerUpdateMessage.fromAlias").as_int();
        size_t sender = kRoomSize;
        for (size_t o = 0; o < kRoomSize; ++o) {
          if (members[r][o].alias == from) sender = o;
        }
        ASSERT_LT(sender, kRoomSize) << "unknown alias " << from;
        EXPECT_NE(sender, m) << "own update echoed";
        const int seq = next_seq[from]++;
        EXPECT_EQ(path(*u, "peerUpdateMessage.body").as_string(),
                  codec::base64_encode(rooms[r] + ":" + std::to_string(sender) + ":" +
                                       std::to_string(seq)));
      }
    }
  }
  // Heartbeats: every one reached the embedder (shard 0's queue).
  ASSERT_TRUE(embedder.wait([&] {
    for (size_t i : heartbeaters) {
      if (embedder.heartbeats_locked()[wallets[i].address()] != size_t(kHeartbeats)) return false;
    }
    return true;
  })) << "heartbeats missing";
  EXPECT_EQ(embedder.heartbeats_total(), heartbeaters.size() * kHeartbeats);

  // Events per address in directory order: duplicates connected three times
  // and never disconnected; the kicked and the leavers connected then
  // disconnected; the others connected once.
  ASSERT_TRUE(embedder.wait([&] {
    auto& ev = embedder.events_locked();
    for (size_t i : dups) {
      if (ev[wallets[i].address()] != "CCC") return false;
    }
    for (size_t i : kicked) {
      if (ev[wallets[i].address()] != "CD") return false;
    }
    for (size_t i : leavers) {
      if (ev[wallets[i].address()] != "CD") return false;
    }
    for (size_t i : heartbeaters) {
      if (ev[wallets[i].address()] != "C") return false;
    }
    return true;
  })) << "events: dup "
      << embedder.events(wallets[0].address()) << ", kicked "
      << embedder.events(wallets[4].address()) << ", leaver "
      << embedder.events(wallets[8].address());

  // The surviving duplicates are the registered ones: a send reaches them.
  for (size_t d = 0; d < dups.size(); ++d) {
    server.send_join_island(wallets[dups[d]].address(), "dup", "check");
    auto j = SocketClients::next(*dup_survivor[d], server_packet, "joinIsland");
    ASSERT_TRUE(j);
    EXPECT_EQ(path(*j, "joinIsland.islandId").as_string(), "dup");
  }

  // Counters, summed over the shards.
  {
    const Stats st = server.stats();
    const size_t open = kSessions - kicked.size() - leavers.size();
    EXPECT_EQ(stat(st.connector, "sessions"), open);
    EXPECT_EQ(stat(st.connector, "kicked_duplicate"), 2 * dups.size());
    EXPECT_EQ(stat(st.connector, "kicked_by_server"), kicked.size());
    EXPECT_EQ(stat(st.connector, "heartbeats_accepted"), heartbeaters.size() * kHeartbeats);
    // Sends, and the relay's island changes and joins.
    EXPECT_EQ(stat(st.connector, "messages_sent"),
              send_targets.size() * kSends + dups.size() +
                  relay_targets.size() * (size_t(kRelayRounds) + 1));
    EXPECT_EQ(stat(st.connector, "relayed_island_changed"),
              relay_targets.size() * size_t(kRelayRounds));
    EXPECT_EQ(stat(st.connector, "relayed_join_island"), relay_targets.size());
    EXPECT_EQ(stat(st.connector, "relayed_not_connected"), 0u);
    EXPECT_EQ(stat(st.rooms, "users"), rooms.size() * kRoomSize);
    EXPECT_EQ(stat(st.rooms, "rooms"), rooms.size());
    EXPECT_EQ(stat(st.rooms, "updates_received"), rooms.size() * kRoomSize * kUpdates);
    // Every broadcast frame: the updates, and each join's peer_join to the
    // members already there.
    EXPECT_EQ(
        stat(st.rooms, "updates_delivered"),
        rooms.size() * (kRoomSize * kUpdates * (kRoomSize - 1) + kRoomSize * (kRoomSize - 1) / 2));
    const RelayStats rs = server.relay_stats();
    EXPECT_EQ(rs.items, size_t(kRelayRounds) * 2 + 1);
    EXPECT_EQ(rs.dropped_stopped, 0u);
  }

  // --- phase 3: stop() while relay, sends, heartbeats and room updates flow
  std::atomic<bool> flowing{true};
  std::atomic<uint64_t> relay_items{0};
  std::vector<std::thread> traffic;
  traffic.emplace_back([&] {
    for (int round = kRelayRounds; flowing; ++round) {
      IslandChangesItem changes;
      changes.island_id = relay_island(round);
      changes.peers_entries = peers_entries;
      for (const auto& a : relay_addresses) {
        IslandChangesItem::Recipient r;
        r.address = a;
        r.conn_str = "livekit:late";
        changes.recipients.push_back(std::move(r));
      }
      std::vector<RelayItem> items;
      items.emplace_back(std::move(changes));
      items.emplace_back(TickEndItem{});
      relay_items += items.size();
      server.relay(std::move(items));
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  traffic.emplace_back([&] {
    for (int n = 0; flowing; ++n) {
      for (size_t i : send_targets) server.send_join_island(wallets[i].address(), "late", "p");
      for (size_t i : heartbeaters) {
        clients[i % 2].send(first[i], ws::testing::heartbeat(codec::Position{1, 0, float(n)}));
      }
      for (size_t r = 0; r < rooms.size(); ++r) {
        clients[r % 2].send(
            members[r][0].peer,
            ws::testing::peer_update(static_cast<uint32_t>(members[r][0].alias), "late", true));
      }
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  std::this_thread::sleep_for(milliseconds(150));
  server.stop();
  flowing = false;
  for (auto& t : traffic) t.join();
  embedder.halt();

  // Every session still open was closed 1001 by stop().
  for (size_t i : heartbeaters) EXPECT_EQ(SocketClients::closed(*first[i]), 1001);
  for (auto& s : dup_survivor) EXPECT_EQ(SocketClients::closed(*s), 1001);
  for (auto& room : members) {
    for (auto& m : room) EXPECT_EQ(SocketClients::closed(*m.peer), 1001);
  }
  // Every relay() call was either handed over or counted as dropped.
  const RelayStats rs = server.relay_stats();
  EXPECT_EQ(rs.items + rs.dropped_stopped, size_t(kRelayRounds) * 2 + 1 + relay_items.load());
  EXPECT_GT(rs.dropped_stopped + rs.items, size_t(kRelayRounds) * 2 + 1);
}

// The idle sweep closes silent sessions of every shard 1001 (each on its own
// shard's thread: it used to close them from shard 0's, racing their reads)
// while sessions that answer the pings stay.
TEST(WsShardsStress, IdleSweepClosesSilentSessionsOfEveryShard) {
  Config config;
  config.io_threads = kShards;
  // Long enough that a starved process (the sanitizer build runs at nice 19
  // beside the other tests) still pings between a third of it and all of it,
  // and its answering clients still pong within the two thirds after a ping.
  config.idle_timeout_ms = 3000;
  validate(config);
  Server server(config);
  const uint16_t port = server.start();
  const std::string base = "ws://127.0.0.1:" + std::to_string(port);
  SocketClients clients;
  // Connector upgrades go to the shards in turn, rooms to their room's shard:
  // silent sockets and answering clients in every shard.
  const auto t0 = std::chrono::steady_clock::now();  // before every upgrade
  std::vector<std::unique_ptr<SilentSocket>> silent;
  std::vector<PeerPtr> answering;
  for (int i = 0; i < 2 * kShards; ++i) {
    silent.push_back(std::make_unique<SilentSocket>(port, "/ws"));
    answering.push_back(clients.connect(base + "/ws"));
    silent.push_back(std::make_unique<SilentSocket>(port, "/rooms/idle-room-" + std::to_string(i)));
  }
  for (auto& s : silent) {
    int pings = 0;
    auto [code, reason] = s->close_frame(&pings);
    EXPECT_EQ(code, 1001);
    EXPECT_EQ(reason, "idle timeout");
    EXPECT_GE(pings, 1) << "pinged after a third of the timeout";
  }
  // Every silent socket was upgraded after t0 and closed once idle that long.
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(config.idle_timeout_ms * 9 / 10));
  // The clients that answer the pings (websocketpp pongs) are still open.
  for (auto& p : answering) EXPECT_EQ(SocketClients::closed(*p, milliseconds(0)), -1);
  EXPECT_EQ(stat(server.stats().connector, "closed_idle"), size_t(2 * kShards));
  EXPECT_EQ(stat(server.stats().rooms, "closed_idle"), size_t(2 * kShards));
  silent.clear();  // their close handshakes never end: drop the sockets
  server.stop();
  for (auto& p : answering) EXPECT_EQ(SocketClients::closed(*p), 1001);
}

// stop() while sessions of every shard keep sending: each shard closes its
// own sessions 1001 on its own thread (shard 0's thread closing them raced
// their reads in websocketpp: ThreadSanitizer).
TEST(WsShardsStress, StopWhileSessionsOfEveryShardSend) {
  for (int rep = 0; rep < 4; ++rep) {
    Config config;
    config.io_threads = kShards;
    config.heartbeat_max_per_s = 1000;
    validate(config);
    Server server(config);
    const uint16_t port = server.start();
    const std::string base = "ws://127.0.0.1:" + std::to_string(port);
    SocketClients clients;
    std::vector<PeerPtr> peers;
    for (int i = 0; i < 4 * kShards; ++i) {
      Wallet w(7000 + 100 * rep + i);
      peers.push_back(clients.connect(base + "/ws"));
      ASSERT_EQ(join_connector(clients, peers.back(), w), w.address());
    }
    std::atomic<bool> flowing{true};
    std::thread flood([&] {
      for (int n = 0; flowing; ++n) {
        for (auto& p : peers) clients.send(p, ws::testing::heartbeat(codec::Position{1, 0, 1}));
        if (n % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    const auto deadline = std::chrono::steady_clock::now() + SocketClients::kWait;
    while (stat(server.stats().connector, "heartbeats_accepted") < 100 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    server.stop();
    flowing = false;
    flood.join();
    for (auto& p : peers) EXPECT_EQ(SocketClients::closed(*p), 1001);
    EXPECT_GE(stat(server.stats().connector, "heartbeats_accepted"), 100u);
  }
}

// A relay to more sessions of one shard than kSplitFlush (512, server.cpp)
// is written by two threads (the I/O thread and the flush helper, each link
// by one of them): every session gets every island change, in order, with
// the shared member map.
TEST(WsShardsStress, SplitFlushDeliversEveryFrameInOrder) {
  constexpr size_t kMany = 540;
  constexpr int kRounds = 4;
  Config config;
  config.io_threads = 1;  // one shard: every session's link in one flush
  config.auth_threads = 2;
  validate(config);
  Server server(config);
  const uint16_t port = server.start();
  const std::string base = "ws://127.0.0.1:" + std::to_string(port);
  SocketClients clients[2];
  std::vector<Wallet> wallets;
  for (size_t i = 0; i < kMany; ++i) wallets.emplace_back(20000 + i);
  std::vector<PeerPtr> peers(kMany);
  {
    std::vector<std::function<void()>> joins;
    for (size_t t = 0; t < 4; ++t) {
      joins.emplace_back([&, t] {
        for (size_t i = t; i < kMany; i += 4) {
          peers[i] = clients[i % 2].connect(base + "/ws");
          if (join_connector(clients[i % 2], peers[i], wallets[i]) != wallets[i].address()) {
            throw std::runtime_error("welcome");
          }
        }
      });
    }
    run_together(std::move(joins));
  }
  std::vector<std::string> addresses;
  for (auto& w : wallets) addresses.push_back(w.address());
  std::vector<float> xyz(3 * 8, 1.0f);
  const std::vector<std::string> first8(addresses.begin(), addresses.begin() + 8);
  const std::string entries = codec::encode_island_changed_peers(first8, xyz.data());
  std::thread relay([&] {  // from a non-I/O thread, as the NATS relay
    for (int round = 0; round < kRounds; ++round) {
      IslandChangesItem changes;
      changes.island_id = "big-" + std::to_string(round);
      changes.peers_entries = entries;
      changes.frame_heads = true;
      for (const auto& a : addresses) {
        IslandChangesItem::Recipient r;
        r.address = a;
        r.conn_str = "livekit:big";
        r.frame = codec::encode_server_island_changed_head(changes.island_id, r.conn_str,
                                                           std::nullopt, entries.size());
        changes.recipients.push_back(std::move(r));
      }
      std::vector<RelayItem> items;
      items.emplace_back(std::move(changes));
      items.emplace_back(TickEndItem{});
      server.relay(std::move(items));
    }
  });
  relay.join();
  for (size_t i = 0; i < kMany; ++i) {
    for (int round = 0; round < kRounds; ++round) {
      auto ch = SocketClients::next(*peers[i], server_packet, "islandChanged");
      ASSERT_TRUE(ch) << "session " << i << " round " << round;
      ASSERT_EQ(path(*ch, "islandChanged.islandId").as_string(), "big-" + std::to_string(round));
      ASSERT_EQ(path(*ch, "islandChanged.peers").as_object().size(), first8.size());
    }
  }
  const Stats st = server.stats();
  EXPECT_EQ(stat(st.connector, "relayed_island_changed"), kMany * kRounds);
  if (std::thread::hardware_concurrency() > 1) {
    EXPECT_GE(stat(st.server, "flushes_split"), 1u) << "no flush was split";
  }
  server.stop();
}

// With http_keep_alive_ms = 0 nothing peeks at a new connection: a room
// connection stays on the listening thread (shard 0's) with handlers bound to
// its room's shard, whose thread flushes, kicks and closes it.
TEST(WsShardsStress, RoomsOnTheListeningThreadWithoutKeepAlive) {
  Config config;
  config.io_threads = kShards;
  config.http_keep_alive_ms = 0;
  validate(config);
  Server server(config);
  const uint16_t port = server.start();
  const std::string base = "ws://127.0.0.1:" + std::to_string(port);
  SocketClients clients;
  std::vector<std::string> rooms;
  for (int k = 0; rooms.size() < 2; ++k) {
    std::string id = "flat-room-" + std::to_string(k);
    if (std::hash<std::string>{}(id) % kShards != 0) rooms.push_back(id);
  }
  std::vector<RoomMember> members;
  for (size_t r = 0; r < rooms.size(); ++r) {
    for (size_t m = 0; m < 3; ++m) {
      members.push_back({Wallet(30000 + 10 * r + m), {}, 0});
      members.back().peer = clients.connect(base + "/rooms/" + rooms[r]);
      members.back().alias = join_room(clients, members.back().peer, members.back().wallet);
    }
  }
  EXPECT_EQ(stat(server.stats().server, "sockets_moved_to_shards"), 0u);
  std::atomic<bool> flowing{true};
  std::thread flood([&] {
    for (int n = 0; flowing; ++n) {
      for (auto& m : members) {
        clients.send(m.peer, ws::testing::peer_update(static_cast<uint32_t>(m.alias), "x", false));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  std::this_thread::sleep_for(milliseconds(100));
  // Kicked by the room's shard while the listening thread reads them.
  server.kick_room_member(false, rooms[0], members[0].wallet.address(), "flat kick", 0);
  server.kick_room_member(false, rooms[1], members[3].wallet.address(), "flat kick", 0);
  EXPECT_EQ(SocketClients::closed(*members[0].peer), 4005);
  EXPECT_EQ(SocketClients::closed(*members[3].peer), 4005);
  std::this_thread::sleep_for(milliseconds(50));
  server.stop();
  flowing = false;
  flood.join();
  for (size_t i : {1, 2, 4, 5}) EXPECT_EQ(SocketClients::closed(*members[i].peer), 1001);
}

}  // namespace
