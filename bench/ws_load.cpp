// Load generator for the WebSocket servers (bench/bench_ws.py drives it).
//
// One process, one asio thread, many websocketpp client connections, each
// with a real secp256k1 identity (2-link auth chain: SIGNER + signed
// challenge). Modes:
//   rooms      R rooms x C clients; each client keeps K 100-byte updates in
//              flight (an update completes when the next client of its room,
//              in a ring, receives it); reports delivered updates/s and
//              send->receive latency percentiles.
//   handshakes N connector clients connect at once; reports handshakes/s.
//   heartbeats N connector clients, then each sends `rate` heartbeats/s.
// Output: one JSON object on stdout.

#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
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
  int room = 0;
  Identity id;
  Client::connection_ptr con;
  bool welcomed = false;
  uint32_t alias = 0;
  size_t members_seen = 0;  // others known (welcome + joins)
  int inflight = 0;
  int next_in_ring = 0;
  explicit Conn(uint64_t seed) : id(seed) {}
};

struct Options {
  std::string mode = "rooms";
  std::string host = "127.0.0.1";
  int port = 0;
  int rooms = 1, clients = 50, inflight = 1, size = 100;
  double duration = 10, rate = 1;
  uint64_t seed = 1;
};

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
    const bool rooms = o_.mode == "rooms";
    const int n = rooms ? o_.rooms * o_.clients : o_.clients;
    for (int i = 0; i < n; ++i) {
      auto c = std::make_unique<Conn>(o_.seed * 1'000'003 + static_cast<uint64_t>(i));
      c->idx = i;
      c->room = rooms ? i / o_.clients : 0;
      if (rooms) c->next_in_ring = c->room * o_.clients + (i % o_.clients + 1) % o_.clients;
      conns_.push_back(std::move(c));
    }
    t_connect_ = Clock::now();
    for (auto& c : conns_) open(*c, rooms);
    timer_ = std::make_unique<asio::steady_timer>(c_.get_io_service());
    tick();
    c_.run();
    return 0;
  }

 private:
  void open(Conn& c, bool rooms) {
    std::string url = "ws://" + o_.host + ":" + std::to_string(o_.port) +
                      (rooms ? "/rooms/bench-" + std::to_string(c.room) : std::string("/ws"));
    websocketpp::lib::error_code ec;
    c.con = c_.get_connection(url, ec);
    if (ec) fail("get_connection: " + ec.message());
    Conn* cp = &c;
    c.con->set_open_handler([this, cp, rooms](Hdl) {
      send(*cp, rooms ? ld(7, ld(1, cp->id.address)) : ld(1, ld(1, cp->id.address)));
    });
    c.con->set_message_handler([this, cp, rooms](Hdl, Client::message_ptr m) {
      if (rooms) {
        on_room_message(*cp, m->get_payload());
      } else {
        on_connector_message(*cp, m->get_payload());
      }
    });
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

  void on_room_message(Conn& c, const std::string& data) {
    auto top = parse(data);
    if (top.empty()) return;
    const Field& f = top[0];
    if (f.num == 4) {  // challenge
      for (auto& g : parse(f.bytes)) {
        if (g.num == 1) send(c, ld(5, ld(1, c.id.chain(std::string(g.bytes)))));
      }
    } else if (f.num == 1) {  // welcome
      c.welcomed = true;
      for (auto& g : parse(f.bytes)) {
        if (g.num == 1) c.alias = static_cast<uint32_t>(g.varint);
        if (g.num == 2) ++c.members_seen;
      }
      by_alias_[c.alias] = c.idx;
      ++welcomed_;
    } else if (f.num == 2) {  // join
      ++c.members_seen;
    } else if (f.num == 3) {  // update
      uint32_t from = 0;
      std::string_view body;
      for (auto& g : parse(f.bytes)) {
        if (g.num == 1) from = static_cast<uint32_t>(g.varint);
        if (g.num == 2) body = g.bytes;
      }
      if (body.size() < 8) return;
      int64_t sent;
      std::memcpy(&sent, body.data(), 8);
      if (measuring_) {
        ++delivered_;
        latencies_us_.push_back(static_cast<uint32_t>((now_ns() - sent) / 1000));
      }
      auto it = by_alias_.find(from);
      if (it == by_alias_.end()) return;
      Conn& sender = *conns_[static_cast<size_t>(it->second)];
      if (sender.next_in_ring == c.idx) {
        --sender.inflight;
        if (running_) pump(sender);
      }
    }
  }

  void pump(Conn& c) {
    while (c.inflight < o_.inflight) {
      std::string body(static_cast<size_t>(std::max(o_.size, 8)), 'b');
      int64_t t = now_ns();
      std::memcpy(body.data(), &t, 8);
      std::string inner = ld(2, body);  // from_alias 0, reliable
      send(c, ld(3, inner));
      ++c.inflight;
      if (measuring_) ++sent_;
    }
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
      bool ready = welcomed_ == n;
      if (o_.mode == "rooms") {
        for (auto& c : conns_) ready = ready && c->members_seen + 1 >= size_t(o_.clients);
      }
      if (!ready) return;
      measuring_ = running_ = setup_done_ = true;
      t0_ = now;
      cpu0_ = cpu_seconds();
      // The driver samples the server's CPU between this line and the result.
      std::printf("{\"event\":\"measuring\"}\n");
      std::fflush(stdout);
      if (o_.mode == "rooms") {
        for (auto& c : conns_) pump(*c);
      }
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
    std::sort(latencies_us_.begin(), latencies_us_.end());
    auto pct = [&](double p) -> double {
      if (latencies_us_.empty()) return 0;
      return latencies_us_[std::min(latencies_us_.size() - 1,
                                    static_cast<size_t>(p * latencies_us_.size()))];
    };
    std::printf(
        "{\"mode\":\"%s\",\"clients\":%zu,\"seconds\":%.3f,\"sent_per_s\":%.1f,"
        "\"delivered_per_s\":%.1f,\"p50_us\":%.0f,\"p99_us\":%.0f,\"client_cpu_s\":%.3f,"
        "\"client_cpu_share\":%.3f,\"failed\":%d,\"closed\":%d}\n",
        o_.mode.c_str(), conns_.size(), elapsed, static_cast<double>(sent_) / elapsed,
        static_cast<double>(delivered_) / elapsed, pct(0.5), pct(0.99), cpu, cpu / elapsed, failed_,
        closed_);
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
  std::map<uint32_t, int> by_alias_;
  std::unique_ptr<asio::steady_timer> timer_;
  Clock::time_point t_connect_, t_all_welcomed_, t0_;
  double cpu0_ = 0;
  int welcomed_ = 0, failed_ = 0, closed_ = 0;
  bool measuring_ = false, running_ = false, done_ = false, stopping_ = false;
  bool setup_done_ = false;
  uint64_t sent_ = 0, delivered_ = 0;
  std::vector<uint32_t> latencies_us_;
  std::vector<int64_t> hb_sent_;
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
    else if (k == "--seed")
      o.seed = std::stoull(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (o.port <= 0 || (o.mode != "rooms" && o.mode != "handshakes" && o.mode != "heartbeats")) {
    std::fprintf(stderr,
                 "usage: ws_load --mode rooms|handshakes|heartbeats --port P [--rooms R] "
                 "[--clients C] [--inflight K] [--size B] [--duration S] [--rate HZ]\n");
    return 2;
  }
  Load load(o);
  load.init_heartbeat_schedule();
  return load.run();
}
