// Load generator for the WebSocket servers (bench/bench_ws.py drives it).
//
// One process, one thread, many client connections, each with a real
// secp256k1 identity (2-link auth chain: SIGNER + signed challenge). Modes:
//   rooms      R rooms x C clients; each client keeps K 100-byte updates in
//              flight (an update completes when the next client of its room,
//              in a ring, receives it); reports delivered updates/s,
//              send->receive latency percentiles and lost updates (a gap in
//              a sender's sequence numbers at any receiver). Raw non-blocking
//              sockets on epoll with their own RFC 6455 framing (RoomsLoad):
//              the load must cost less per delivery than the server it
//              measures, which a websocketpp client (a message object, a
//              handler call and a write per frame) does not.
//   handshakes N connector clients connect at once; reports handshakes/s.
//   heartbeats N connector clients, then each sends `rate` heartbeats/s.
//   islands    (raw sockets, like rooms) N connector clients (new identities per
//              --seed) complete the connector handshake, each sends one
//              heartbeat at a seeded position in a --side x --side m square
//              (prints {"event":"ready"} once all are sent), then counts the
//              island_changed / join_island / left_island frames it receives;
//              reports when every client got its island_changed (or after
//              --duration s) with the CLOCK_MONOTONIC ns of the first and last
//              (bench/bench_nats.py --deliver: tick start -> delivered).
//   (both on websocketpp, one asio thread)
// Output: one JSON object on stdout.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <websocketpp/client.hpp>
#include <websocketpp/config/asio_no_tls_client.hpp>

#include "dclcomms/auth/auth.hpp"

namespace {

using Client = websocketpp::client<websocketpp::config::asio_client>;
using Hdl = websocketpp::connection_hdl;
using Clock = std::chrono::steady_clock;

// ---- tiny protobuf helpers (client side only) ---------------------------------

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
std::string ld(int field, const std::string& payload) {
  std::string out;
  put_varint(out, static_cast<uint64_t>(field) << 3 | 2);
  put_varint(out, payload.size());
  out += payload;
  return out;
}
std::string f32(int field, float v) {
  std::string out;
  put_varint(out, static_cast<uint64_t>(field) << 3 | 5);
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
  return out;
}

// Reads (field, payload-or-varint) pairs of one message level.
struct Field {
  int num = 0;
  uint64_t varint = 0;
  std::string_view bytes;
};
bool get_varint(std::string_view& s, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !s.empty(); shift += 7) {
    auto b = static_cast<uint8_t>(s[0]);
    s.remove_prefix(1);
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}
std::vector<Field> parse(std::string_view s) {
  std::vector<Field> out;
  while (!s.empty()) {
    uint64_t key;
    if (!get_varint(s, key)) break;
    Field f;
    f.num = static_cast<int>(key >> 3);
    switch (key & 7) {
      case 0:
        get_varint(s, f.varint);
        break;
      case 2: {
        uint64_t n;
        get_varint(s, n);
        f.bytes = s.substr(0, n);
        s.remove_prefix(std::min<size_t>(n, s.size()));
        break;
      }
      case 5:
        s.remove_prefix(std::min<size_t>(4, s.size()));
        break;
      case 1:
        s.remove_prefix(std::min<size_t>(8, s.size()));
        break;
      default:
        return out;
    }
    out.push_back(f);
  }
  return out;
}

// ---- identities ----------------------------------------------------------------

secp256k1_context* ctx() {
  static secp256k1_context* c = secp256k1_context_create(SECP256K1_CONTEXT_SIGN);
  return c;
}

std::string hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(d[p[i] >> 4]);
    out.push_back(d[p[i] & 15]);
  }
  return out;
}

struct Identity {
  std::array<uint8_t, 32> key{};
  std::string address;

  explicit Identity(uint64_t seed) {
    for (uint64_t bump = 0;; ++bump) {
      key =
          dclcomms::auth::keccak256("ws_load:" + std::to_string(seed) + ":" + std::to_string(bump));
      if (secp256k1_ec_seckey_verify(ctx(), key.data())) break;
    }
    secp256k1_pubkey pub;
    if (!secp256k1_ec_pubkey_create(ctx(), &pub, key.data())) std::abort();
    uint8_t ser[65];
    size_t n = sizeof ser;
    secp256k1_ec_pubkey_serialize(ctx(), ser, &n, &pub, SECP256K1_EC_UNCOMPRESSED);
    auto h = dclcomms::auth::keccak256(std::string_view(reinterpret_cast<char*>(ser + 1), 64));
    address = "0x" + hex(h.data() + 12, 20);
  }

  std::string sign(const std::string& message) const {
    auto h = dclcomms::auth::personal_message_hash(message);
    secp256k1_ecdsa_recoverable_signature sig;
    secp256k1_ecdsa_sign_recoverable(ctx(), &sig, h.data(), key.data(), nullptr, nullptr);
    uint8_t out[65];
    int recid = 0;
    secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx(), out, &recid, &sig);
    out[64] = static_cast<uint8_t>(27 + recid);
    return "0x" + hex(out, 65);
  }

  std::string chain(const std::string& challenge) const {
    return R"([{"type":"SIGNER","payload":")" + address +
           R"(","signature":""},{"type":"ECDSA_SIGNED_ENTITY","payload":")" + challenge +
           R"(","signature":")" + sign(challenge) + R"("}])";
  }
};

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// ---- the load generator -------------------------------------------------------------

struct Conn {
  int idx = 0;
  Identity id;
  Client::connection_ptr con;
  bool welcomed = false;
  explicit Conn(uint64_t seed) : id(seed) {}
};

struct Options {
  std::string mode = "rooms";
  std::string host = "127.0.0.1";
  int port = 0;
  int rooms = 1, clients = 50, inflight = 1, size = 100;
  double duration = 10, rate = 1, side = 3000;
  uint64_t seed = 1;
};

// Connector modes (handshakes, heartbeats) on websocketpp.
class Load {
 public:
  explicit Load(Options o) : o_(std::move(o)) {
    c_.clear_access_channels(websocketpp::log::alevel::all);
    c_.clear_error_channels(websocketpp::log::elevel::all);
    c_.init_asio();
    c_.set_open_handshake_timeout(120000);
    c_.set_tcp_post_init_handler([this](Hdl h) {
      asio::error_code ignored;
      c_.get_con_from_hdl(h)->get_socket().set_option(asio::ip::tcp::no_delay(true), ignored);
    });
  }

  int run() {
    for (int i = 0; i < o_.clients; ++i) {
      auto c = std::make_unique<Conn>(o_.seed * 1'000'003 + static_cast<uint64_t>(i));
      c->idx = i;
      conns_.push_back(std::move(c));
    }
    t_connect_ = Clock::now();
    for (auto& c : conns_) open(*c);
    timer_ = std::make_unique<asio::steady_timer>(c_.get_io_service());
    tick();
    c_.run();
    return 0;
  }

 private:
  void open(Conn& c) {
    std::string url = "ws://" + o_.host + ":" + std::to_string(o_.port) + "/ws";
    websocketpp::lib::error_code ec;
    c.con = c_.get_connection(url, ec);
    if (ec) fail("get_connection: " + ec.message());
    Conn* cp = &c;
    c.con->set_open_handler([this, cp](Hdl) { send(*cp, ld(1, ld(1, cp->id.address))); });
    c.con->set_message_handler(
        [this, cp](Hdl, Client::message_ptr m) { on_connector_message(*cp, m->get_payload()); });
    c.con->set_fail_handler([this](Hdl) { ++failed_; });
    c.con->set_close_handler([this, cp](Hdl) {
      if (!stopping_) {
        ++closed_;
        std::fprintf(stderr, "closed %d: %d %s\n", cp->idx, cp->con->get_remote_close_code(),
                     cp->con->get_remote_close_reason().c_str());
      }
    });
    c_.connect(c.con);
  }

  void send(Conn& c, const std::string& payload) {
    // Errors (socket already closing) are counted by the close handler.
    (void)c.con->send(payload, websocketpp::frame::opcode::binary);
  }

  [[noreturn]] void fail(const std::string& why) {
    std::fprintf(stderr, "ws_load: %s\n", why.c_str());
    std::exit(2);
  }

  void on_connector_message(Conn& c, const std::string& data) {
    auto top = parse(data);
    if (top.empty()) return;
    if (top[0].num == 1) {
      for (auto& g : parse(top[0].bytes)) {
        if (g.num == 1) send(c, ld(2, ld(1, c.id.chain(std::string(g.bytes)))));
      }
    } else if (top[0].num == 2 && !c.welcomed) {
      c.welcomed = true;
      if (++welcomed_ == static_cast<int>(conns_.size())) t_all_welcomed_ = Clock::now();
    }
  }

  void heartbeat(Conn& c) {
    float x = static_cast<float>(c.idx % 100) * 16.0f, z = static_cast<float>(c.idx / 100) * 16.0f;
    send(c, ld(3, ld(1, f32(1, x) + f32(2, 0.5f) + f32(3, z))));
    if (measuring_) ++sent_;
  }

  // 10 ms scheduler: phase changes and heartbeat pacing.
  void tick() {
    timer_->expires_after(std::chrono::milliseconds(10));
    timer_->async_wait([this](const asio::error_code& ec) {
      if (ec) return;
      step();
      if (!done_) tick();
    });
  }

  void step() {
    const int n = static_cast<int>(conns_.size());
    auto now = Clock::now();
    double since_connect = std::chrono::duration<double>(now - t_connect_).count();
    // Only the setup (connect, handshake, room joins) has a deadline: a steady
    // run may last longer than 120 s (the soak runs for 10 minutes).
    if (!setup_done_ && since_connect > 120) fail("setup took over 120 s");
    if (o_.mode == "handshakes") {
      if (welcomed_ == n) finish_handshakes();
      return;
    }
    if (!measuring_ && !done_) {
      if (welcomed_ != n) return;
      measuring_ = running_ = setup_done_ = true;
      t0_ = now;
      cpu0_ = cpu_seconds();
      // The driver samples the server's CPU between this line and the result.
      std::printf("{\"event\":\"measuring\"}\n");
      std::fflush(stdout);
      return;
    }
    double elapsed = std::chrono::duration<double>(now - t0_).count();
    if (o_.mode == "heartbeats" && running_) {
      // Spread each client's heartbeats evenly: client i sends when its
      // phase slot passes.
      double per_client = 1.0 / o_.rate;
      for (int i = 0; i < n; ++i) {
        double phase = per_client * i / n;
        auto due = static_cast<int64_t>((elapsed - phase) / per_client);
        while (hb_sent_[i] <= due) {
          heartbeat(*conns_[static_cast<size_t>(i)]);
          ++hb_sent_[i];
        }
      }
    }
    if (elapsed >= o_.duration && !done_) finish_steady(elapsed);
  }

  void finish_handshakes() {
    double secs = std::chrono::duration<double>(t_all_welcomed_ - t_connect_).count();
    std::printf(
        "{\"mode\":\"handshakes\",\"clients\":%zu,\"seconds\":%.4f,\"handshakes_per_s\":%.1f,"
        "\"failed\":%d,\"closed\":%d,\"client_cpu_s\":%.3f}\n",
        conns_.size(), secs, static_cast<double>(conns_.size()) / secs, failed_, closed_,
        cpu_seconds());
    std::fflush(stdout);
    wait_then_stop();
  }

  void finish_steady(double elapsed) {
    measuring_ = running_ = false;
    double cpu = cpu_seconds() - cpu0_;
    std::printf(
        "{\"mode\":\"%s\",\"clients\":%zu,\"seconds\":%.3f,\"sent_per_s\":%.1f,"
        "\"client_cpu_s\":%.3f,\"client_cpu_share\":%.3f,\"failed\":%d,\"closed\":%d}\n",
        o_.mode.c_str(), conns_.size(), elapsed, static_cast<double>(sent_) / elapsed, cpu,
        cpu / elapsed, failed_, closed_);
    std::fflush(stdout);
    wait_then_stop();
  }

  void wait_then_stop() {
    done_ = stopping_ = true;
    for (auto& c : conns_) {
      websocketpp::lib::error_code ec;
      c->con->close(websocketpp::close::status::normal, "done", ec);
    }
    timer_->expires_after(std::chrono::milliseconds(500));
    timer_->async_wait([this](const asio::error_code&) { c_.stop(); });
  }

 public:
  void init_heartbeat_schedule() { hb_sent_.assign(static_cast<size_t>(o_.clients), 0); }

 private:
  Options o_;
  Client c_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::unique_ptr<asio::steady_timer> timer_;
  Clock::time_point t_connect_, t_all_welcomed_, t0_;
  double cpu0_ = 0;
  int welcomed_ = 0, failed_ = 0, closed_ = 0;
  bool measuring_ = false, running_ = false, done_ = false, stopping_ = false;
  bool setup_done_ = false;
  uint64_t sent_ = 0;
  std::vector<int64_t> hb_sent_;
};

// ---- rooms: raw sockets on epoll ----------------------------------------------------
//
// Level-triggered epoll, one read per readable socket per round (a short read
// means the socket is drained: no EAGAIN read), frames parsed in place; the
// updates a round makes due are written after the round, all of one socket's
// in one write. Client frames are masked (RFC 6455 5.3) with a per-connection
// key. Body of an update: send time (ns, 8 bytes), the sender's sequence
// number (8 bytes, from 1), the sender's index in its room (4 bytes), padding.

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "ws_load: %s\n", why.c_str());
  std::exit(2);
}

// Also the connector's islands mode (--mode islands): the same sockets on /ws,
// the connector handshake, one heartbeat each, then island frames counted.
class RoomsLoad {
 public:
  explicit RoomsLoad(Options o) : o_(std::move(o)), islands_(o_.mode == "islands") {
    if (islands_) o_.rooms = 1;
  }

  int run() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) fail("epoll_create1");
    const int n = o_.rooms * o_.clients;
    for (int i = 0; i < n; ++i) {
      auto p = std::make_unique<Peer>(o_.seed * 1'000'003 + static_cast<uint64_t>(i));
      p->idx = i;
      p->room = i / o_.clients;
      p->pos = i % o_.clients;
      p->mask = 0x9e3779b9u * static_cast<uint32_t>(i + 1) | 0x01010101u;
      if (!islands_) p->last_seq.assign(static_cast<size_t>(o_.clients), 0);
      peers_.push_back(std::move(p));
    }
    hist_.assign(kBuckets, 0);
    t_connect_ = Clock::now();
    for (auto& p : peers_) connect_peer(*p);
    std::vector<epoll_event> evs(512);
    auto last_step = Clock::now();
    while (!exit_) {
      int k = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), 10);
      if (k < 0 && errno != EINTR) fail("epoll_wait");
      for (int i = 0; i < k; ++i) {
        Peer& p = *peers_[evs[static_cast<size_t>(i)].data.u32];
        uint32_t e = evs[static_cast<size_t>(i)].events;
        if (e & EPOLLOUT) on_writable(p);
        if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(p);
      }
      for (Peer* p : due_) {
        p->due = false;
        if (running_) pump(*p);
      }
      due_.clear();
      auto now = Clock::now();
      if (now - last_step >= std::chrono::milliseconds(10)) {
        last_step = now;
        step(now);
      }
    }
    return 0;
  }

 private:
  static constexpr size_t kBuckets = 1 << 20;  // 10 us each: up to 10.5 s
  static constexpr size_t kRead = 1 << 18;

  struct Peer {
    int fd = -1;
    int idx = 0, room = 0, pos = 0;
    Identity id;
    enum class St { Connecting, Upgrading, Open, Closed } st = St::Connecting;
    std::string in;   // bytes of an incomplete frame (or response) from earlier reads
    std::string out;  // bytes the socket did not take yet
    bool out_armed = false, due = false, welcomed = false;
    bool changed = false;  // islands: got an island_changed
    uint32_t alias = 0, prev_alias = 0, mask = 0;
    bool has_prev = false;
    size_t members_seen = 0;
    int inflight = 0;
    uint64_t seq = 0;
    std::vector<uint64_t> last_seq;  // per sender index in the room
    explicit Peer(uint64_t seed) : id(seed) {}
  };

  void connect_peer(Peer& p) {
    p.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p.fd < 0) fail("socket: " + std::string(std::strerror(errno)));
    int one = 1;
    setsockopt(p.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(o_.port));
    if (inet_pton(AF_INET, o_.host.c_str(), &a.sin_addr) != 1) fail("bad host " + o_.host);
    if (connect(p.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 && errno != EINPROGRESS) {
      fail("connect: " + std::string(std::strerror(errno)));
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u32 = static_cast<uint32_t>(p.idx);
    p.out_armed = true;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, p.fd, &ev) < 0) fail("epoll_ctl");
  }

  void arm_out(Peer& p, bool on) {
    if (p.out_armed == on) return;
    p.out_armed = on;
    epoll_event ev{};
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.u32 = static_cast<uint32_t>(p.idx);
    epoll_ctl(ep_, EPOLL_CTL_MOD, p.fd, &ev);
  }

  void on_writable(Peer& p) {
    if (p.st == Peer::St::Connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) {
        ++failed_;
        drop(p);
        return;
      }
      p.st = Peer::St::Upgrading;
      const std::string path = islands_ ? "/ws" : "/rooms/bench-" + std::to_string(p.room);
      std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + o_.host + ":" +
                        std::to_string(o_.port) +
                        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n";
      write_bytes(p, req.data(), req.size());
      if (p.out.empty()) arm_out(p, false);
      return;
    }
    if (p.st == Peer::St::Closed) return;
    while (!p.out.empty()) {
      ssize_t w = ::write(p.fd, p.out.data(), p.out.size());
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        lost_connection(p);
        return;
      }
      p.out.erase(0, static_cast<size_t>(w));
    }
    arm_out(p, false);
  }

  // Writes now what the socket takes; the rest waits for EPOLLOUT, in order.
  void write_bytes(Peer& p, const char* data, size_t n) {
    if (p.st == Peer::St::Closed) return;
    if (!p.out.empty()) {
      p.out.append(data, n);
      return;
    }
    ssize_t w = ::write(p.fd, data, n);
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        lost_connection(p);
        return;
      }
      w = 0;
    }
    if (static_cast<size_t>(w) < n) {
      p.out.append(data + w, n - static_cast<size_t>(w));
      arm_out(p, true);
    }
  }

  // Appends one masked binary (or control) frame to buf.
  static void append_frame(std::string& buf, uint32_t mask, const char* payload, size_t n,
                           uint8_t opcode = 0x2) {
    buf.push_back(static_cast<char>(0x80 | opcode));
    if (n < 126) {
      buf.push_back(static_cast<char>(0x80 | n));
    } else if (n < 65536) {
      buf.push_back(static_cast<char>(0x80 | 126));
      buf.push_back(static_cast<char>(n >> 8));
      buf.push_back(static_cast<char>(n & 0xff));
    } else {
      buf.push_back(static_cast<char>(0x80 | 127));
      for (int i = 7; i >= 0; --i)
        buf.push_back(static_cast<char>((uint64_t(n) >> (8 * i)) & 0xff));
    }
    char m[4];
    std::memcpy(m, &mask, 4);
    buf.append(m, 4);
    size_t at = buf.size();
    buf.append(payload, n);
    for (size_t i = 0; i < n; ++i) buf[at + i] = static_cast<char>(buf[at + i] ^ m[i & 3]);
  }

  void send_frame(Peer& p, const std::string& payload, uint8_t opcode = 0x2) {
    std::string buf;
    append_frame(buf, p.mask, payload.data(), payload.size(), opcode);
    write_bytes(p, buf.data(), buf.size());
  }

  void on_readable(Peer& p) {
    if (p.st == Peer::St::Closed || p.st == Peer::St::Connecting) {
      if (p.st == Peer::St::Connecting) on_writable(p);  // connect failed: HUP/ERR
      return;
    }
    for (;;) {
      ssize_t r = ::read(p.fd, scratch_, kRead);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        lost_connection(p);
        return;
      }
      if (r == 0) {
        lost_connection(p);
        return;
      }
      int64_t now = now_ns();
      if (p.in.empty()) {
        size_t used = consume(p, scratch_, static_cast<size_t>(r), now);
        if (p.st != Peer::St::Closed && used < static_cast<size_t>(r)) {
          p.in.assign(scratch_ + used, static_cast<size_t>(r) - used);
        }
      } else {
        p.in.append(scratch_, static_cast<size_t>(r));
        size_t used = consume(p, p.in.data(), p.in.size(), now);
        p.in.erase(0, used);
      }
      if (static_cast<size_t>(r) < kRead || p.st == Peer::St::Closed) return;
    }
  }

  // Parses what it can of data (the HTTP response, then frames); returns the
  // bytes used.
  size_t consume(Peer& p, const char* data, size_t n, int64_t now) {
    size_t at = 0;
    if (p.st == Peer::St::Upgrading) {
      std::string_view v(data, n);
      size_t end = v.find("\r\n\r\n");
      if (end == std::string_view::npos) return 0;
      if (v.substr(0, 12) != "HTTP/1.1 101") {
        std::fprintf(stderr, "upgrade refused: %s\n", std::string(v.substr(0, end)).c_str());
        ++failed_;
        drop(p);
        return n;
      }
      p.st = Peer::St::Open;
      // connector: challenge_request{address}; rooms: peer_identification{address}
      send_frame(p, islands_ ? ld(1, ld(1, p.id.address)) : ld(7, ld(1, p.id.address)));
      at = end + 4;
    }
    while (p.st == Peer::St::Open && n - at >= 2) {
      auto b0 = static_cast<uint8_t>(data[at]), b1 = static_cast<uint8_t>(data[at + 1]);
      size_t hdr = 2;
      uint64_t len = b1 & 0x7f;
      if (len == 126) {
        if (n - at < 4) break;
        len = uint64_t(uint8_t(data[at + 2])) << 8 | uint8_t(data[at + 3]);
        hdr = 4;
      } else if (len == 127) {
        if (n - at < 10) break;
        len = 0;
        for (int i = 0; i < 8; ++i) len = len << 8 | uint8_t(data[at + 2 + i]);
        hdr = 10;
      }
      if (b1 & 0x80) fail("masked frame from the server");
      if (n - at - hdr < len) break;
      std::string_view payload(data + at + hdr, static_cast<size_t>(len));
      at += hdr + static_cast<size_t>(len);
      switch (b0 & 0x0f) {
        case 0x1:
        case 0x2:
          on_message(p, payload, now);
          break;
        case 0x8:
          if (!stopping_) {
            ++closed_;
            uint16_t code =
                payload.size() >= 2 ? uint16_t(uint8_t(payload[0]) << 8 | uint8_t(payload[1])) : 0;
            std::fprintf(stderr, "closed %d: %u %s\n", p.idx, code,
                         std::string(payload.size() > 2 ? payload.substr(2) : "").c_str());
          }
          drop(p);
          return n;
        case 0x9:
          send_frame(p, std::string(payload), 0xA);
          break;
        default:
          break;
      }
    }
    return at;
  }

  void on_message(Peer& p, std::string_view data, int64_t now) {
    std::string_view s = data;
    uint64_t key = 0, len = 0;
    if (!get_varint(s, key) || (key & 7) != 2 || !get_varint(s, len) || len > s.size()) return;
    std::string_view msg = s.substr(0, static_cast<size_t>(len));
    if (islands_) {
      on_connector_message(p, static_cast<int>(key >> 3), msg, data.size(), now);
      return;
    }
    switch (key >> 3) {
      case 3: {  // peer_update: from_alias (1), body (2)
        uint64_t from = 0;
        std::string_view body;
        while (!msg.empty()) {
          uint64_t k = 0, v = 0;
          if (!get_varint(msg, k)) break;
          if ((k & 7) == 0) {
            get_varint(msg, v);
            if ((k >> 3) == 1) from = v;
          } else if ((k & 7) == 2) {
            get_varint(msg, v);
            if ((k >> 3) == 2) body = msg.substr(0, static_cast<size_t>(v));
            msg.remove_prefix(std::min<size_t>(static_cast<size_t>(v), msg.size()));
          } else {
            break;
          }
        }
        if (body.size() < 20) return;
        int64_t sent;
        uint64_t seq;
        uint32_t sender;
        std::memcpy(&sent, body.data(), 8);
        std::memcpy(&seq, body.data() + 8, 8);
        std::memcpy(&sender, body.data() + 16, 4);
        if (sender < p.last_seq.size()) {
          uint64_t& last = p.last_seq[sender];
          if (seq != last + 1) lost_ += seq > last ? seq - last - 1 : 1;
          last = seq;
        }
        if (measuring_) {
          ++delivered_;
          auto b = static_cast<size_t>(std::max<int64_t>(0, now - sent) / 10'000);
          ++hist_[std::min(b, kBuckets - 1)];
        }
        if (p.has_prev && from == p.prev_alias) {
          Peer& sp = *peers_[static_cast<size_t>(p.room * o_.clients +
                                                 (p.pos + o_.clients - 1) % o_.clients)];
          --sp.inflight;
          if (running_ && !sp.due) {
            sp.due = true;
            due_.push_back(&sp);
          }
        }
        return;
      }
      case 4:  // challenge: challenge_to_sign (1)
        for (auto& g : parse(msg)) {
          if (g.num == 1) send_frame(p, ld(5, ld(1, p.id.chain(std::string(g.bytes)))));
        }
        return;
      case 1:  // welcome: alias (1), peer_identities (2)
        p.welcomed = true;
        for (auto& g : parse(msg)) {
          if (g.num == 1) p.alias = static_cast<uint32_t>(g.varint);
          if (g.num == 2) ++p.members_seen;
        }
        ++welcomed_;
        return;
      case 2:  // peer_join
        ++p.members_seen;
        return;
      default:
        return;
    }
  }

  // islands: a v3 ServerPacket (challenge_response 1, welcome 2, island_changed 3,
  // left_island 4, join_island 5).
  void on_connector_message(Peer& p, int field, std::string_view msg, size_t bytes, int64_t now) {
    switch (field) {
      case 1:  // challenge_response: challenge_to_sign (1) -> signed_challenge{auth_chain_json}
        for (auto& g : parse(msg)) {
          if (g.num == 1) send_frame(p, ld(2, ld(1, p.id.chain(std::string(g.bytes)))));
        }
        return;
      case 2:
        if (!p.welcomed) {
          p.welcomed = true;
          ++welcomed_;
        }
        return;
      case 3:
        island_bytes_ += bytes;
        if (island_changed_++ == 0) first_changed_ns_ = now;
        last_changed_ns_ = now;
        if (!p.changed) {
          p.changed = true;
          if (++with_island_ == static_cast<int>(peers_.size()) && ready_ && !stopping_) {
            finish_islands(false);
          }
        }
        return;
      case 4:
      case 5:
        island_bytes_ += bytes;
        ++(field == 4 ? lefts_ : joins_);
        return;
      default:
        return;
    }
  }

  // islands: one heartbeat per client at a seeded position, then wait.
  void place_all() {
    std::mt19937_64 rng(o_.seed);
    std::uniform_real_distribution<float> u(0.0f, static_cast<float>(o_.side));
    for (auto& p : peers_) {
      const float x = u(rng), z = u(rng);
      send_frame(*p, ld(3, ld(1, f32(1, x) + f32(2, 0.0f) + f32(3, z))));
    }
    ready_ = true;
    t0_ = Clock::now();
    cpu0_ = cpu_seconds();
    std::printf("{\"event\":\"ready\",\"clients\":%zu}\n", peers_.size());
    std::fflush(stdout);
  }

  void finish_islands(bool timed_out) {
    std::printf(
        "{\"mode\":\"islands\",\"clients\":%zu,\"with_island\":%d,\"island_changed\":%llu,"
        "\"join_island\":%llu,\"left_island\":%llu,\"bytes\":%llu,\"first_changed_ns\":%lld,"
        "\"last_changed_ns\":%lld,\"timed_out\":%s,\"client_cpu_s\":%.3f,\"failed\":%d,"
        "\"closed\":%d}\n",
        peers_.size(), with_island_, static_cast<unsigned long long>(island_changed_),
        static_cast<unsigned long long>(joins_), static_cast<unsigned long long>(lefts_),
        static_cast<unsigned long long>(island_bytes_), static_cast<long long>(first_changed_ns_),
        static_cast<long long>(last_changed_ns_), timed_out ? "true" : "false",
        cpu_seconds() - cpu0_, failed_, closed_);
    std::fflush(stdout);
    close_all();
  }

  void close_all() {
    stopping_ = true;
    const uint16_t code = 1000;
    std::string close_payload{static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
    close_payload += "done";
    for (auto& p : peers_) {
      if (p->st == Peer::St::Open) send_frame(*p, close_payload, 0x8);
    }
    stop_at_ = Clock::now() + std::chrono::milliseconds(500);
  }

  // Sends updates until K are in flight, in one write.
  void pump(Peer& p) {
    if (p.st != Peer::St::Open || p.inflight >= o_.inflight) return;
    out_.clear();
    const size_t size = static_cast<size_t>(std::max(o_.size, 20));
    // WsPacket{peer_update_message (3) {body (2)}}: from_alias 0, reliable.
    body_.assign(size, 'b');
    inner_.clear();
    put_varint(inner_, 2 << 3 | 2);
    put_varint(inner_, size);
    size_t body_at = inner_.size();
    inner_ += body_;
    pkt_.clear();
    put_varint(pkt_, 3 << 3 | 2);
    put_varint(pkt_, inner_.size());
    size_t inner_at = pkt_.size();
    pkt_ += inner_;
    char* body = pkt_.data() + inner_at + body_at;
    auto sender = static_cast<uint32_t>(p.pos);
    std::memcpy(body + 16, &sender, 4);
    int64_t t = now_ns();
    while (p.inflight < o_.inflight) {
      uint64_t seq = ++p.seq;
      std::memcpy(body, &t, 8);
      std::memcpy(body + 8, &seq, 8);
      append_frame(out_, p.mask, pkt_.data(), pkt_.size());
      ++p.inflight;
      if (measuring_) ++sent_;
    }
    write_bytes(p, out_.data(), out_.size());
  }

  void lost_connection(Peer& p) {
    if (p.st == Peer::St::Closed) return;
    if (!stopping_) {
      ++closed_;
      std::fprintf(stderr, "connection %d lost\n", p.idx);
    }
    drop(p);
  }

  void drop(Peer& p) {
    if (p.st == Peer::St::Closed) return;
    p.st = Peer::St::Closed;
    epoll_ctl(ep_, EPOLL_CTL_DEL, p.fd, nullptr);
    ::close(p.fd);
    p.fd = -1;
  }

  void step(Clock::time_point now) {
    const int n = static_cast<int>(peers_.size());
    double since_connect = std::chrono::duration<double>(now - t_connect_).count();
    if (stopping_) {
      if (now >= stop_at_) exit_ = true;
      return;
    }
    if (since_connect > 120 && !measuring_ && !ready_) fail("setup took over 120 s");
    if (islands_) {
      if (failed_ > 0 && !ready_) fail("connections failed during setup");
      if (!ready_ && welcomed_ == n) {
        place_all();
      } else if (ready_ && std::chrono::duration<double>(now - t0_).count() > o_.duration) {
        finish_islands(true);
      }
      return;
    }
    if (!measuring_) {
      if (failed_ > 0) fail("connections failed during setup");
      bool ready = welcomed_ == n;
      for (auto& p : peers_) ready = ready && p->members_seen + 1 >= size_t(o_.clients);
      if (!ready) return;
      for (auto& p : peers_) {
        const Peer& prev = *peers_[static_cast<size_t>(p->room * o_.clients +
                                                       (p->pos + o_.clients - 1) % o_.clients)];
        p->prev_alias = prev.alias;
        p->has_prev = o_.clients > 1;
      }
      measuring_ = running_ = true;
      t0_ = now;
      cpu0_ = cpu_seconds();
      // The driver samples the server's CPU between this line and the result.
      std::printf("{\"event\":\"measuring\"}\n");
      std::fflush(stdout);
      for (auto& p : peers_) pump(*p);
      return;
    }
    double elapsed = std::chrono::duration<double>(now - t0_).count();
    if (elapsed >= o_.duration) finish(elapsed);
  }

  void finish(double elapsed) {
    measuring_ = running_ = false;
    double cpu = cpu_seconds() - cpu0_;
    auto pct = [&](double q) -> double {
      uint64_t total = 0;
      for (uint32_t c : hist_) total += c;
      if (total == 0) return 0;
      auto want = static_cast<uint64_t>(q * static_cast<double>(total));
      uint64_t seen = 0;
      for (size_t i = 0; i < hist_.size(); ++i) {
        seen += hist_[i];
        if (seen > want) return static_cast<double>(i * 10 + 5);
      }
      return static_cast<double>(kBuckets * 10);
    };
    std::printf(
        "{\"mode\":\"rooms\",\"clients\":%zu,\"seconds\":%.3f,\"sent_per_s\":%.1f,"
        "\"delivered_per_s\":%.1f,\"p50_us\":%.0f,\"p99_us\":%.0f,\"client_cpu_s\":%.3f,"
        "\"client_cpu_share\":%.3f,\"failed\":%d,\"closed\":%d,\"lost\":%llu}\n",
        peers_.size(), elapsed, static_cast<double>(sent_) / elapsed,
        static_cast<double>(delivered_) / elapsed, pct(0.5), pct(0.99), cpu, cpu / elapsed, failed_,
        closed_, static_cast<unsigned long long>(lost_));
    std::fflush(stdout);
    close_all();
  }

  Options o_;
  const bool islands_;
  bool ready_ = false;  // islands: every client sent its heartbeat
  int with_island_ = 0;
  uint64_t island_changed_ = 0, joins_ = 0, lefts_ = 0, island_bytes_ = 0;
  int64_t first_changed_ns_ = 0, last_changed_ns_ = 0;
  int ep_ = -1;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::vector<Peer*> due_;
  std::vector<uint32_t> hist_;
  std::string out_, body_, inner_, pkt_;
  char scratch_[kRead];
  Clock::time_point t_connect_, t0_, stop_at_;
  double cpu0_ = 0;
  int welcomed_ = 0, failed_ = 0, closed_ = 0;
  bool measuring_ = false, running_ = false, stopping_ = false, exit_ = false;
  uint64_t sent_ = 0, delivered_ = 0, lost_ = 0;
};
}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--mode")
      o.mode = v;
    else if (k == "--host")
      o.host = v;
    else if (k == "--port")
      o.port = std::stoi(v);
    else if (k == "--rooms")
      o.rooms = std::stoi(v);
    else if (k == "--clients")
      o.clients = std::stoi(v);
    else if (k == "--inflight")
      o.inflight = std::stoi(v);
    else if (k == "--size")
      o.size = std::stoi(v);
    else if (k == "--duration")
      o.duration = std::stod(v);
    else if (k == "--rate")
      o.rate = std::stod(v);
    else if (k == "--side")
      o.side = std::stod(v);
    else if (k == "--seed")
      o.seed = std::stoull(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (o.port <= 0 || (o.mode != "rooms" && o.mode != "handshakes" && o.mode != "heartbeats" &&
                      o.mode != "islands")) {
    std::fprintf(stderr,
                 "usage: ws_load --mode rooms|handshakes|heartbeats|islands --port P [--rooms R] "
                 "[--clients C] [--inflight K] [--size B] [--duration S] [--rate HZ] "
                 "[--side M] [--seed N]\n");
    return 2;
  }
  if (o.mode == "rooms" || o.mode == "islands") {
    auto load = std::make_unique<RoomsLoad>(o);  // 256 KiB read buffer: not on the stack
    return load->run();
  }
  Load load(o);
  load.init_heartbeat_schedule();
  return load.run();
}
