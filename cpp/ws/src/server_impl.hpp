#pragma once
// Private to cpp/ws: the websocketpp endpoint (server.cpp, http.cpp) around
// the socket-free Hub (hub.hpp): it owns the listening socket, the I/O and
// auth threads and the eventfd, implements Environment and Link for the hub,
// answers plain HTTP, and serializes every hub entry with its shard's lock.
//
// Shards: the state is split into shards, each a Hub with its own lock and
// corking list. Shard 0 (its lock is mu_, its hub hub_) holds the connector,
// the bus, HTTP and the rooms hashing to it; with io_threads N (and rooms
// served) there are N shards and each room lives in the one its id hashes
// to. Each shard then has its own thread: shard 0 runs the listening
// endpoint ep_, shard i > 0 its own websocketpp endpoint on its own
// io_context, run by one thread. A room connection's socket moves to its
// shard's endpoint before the upgrade is read (migrate(): the keep-alive
// HttpSession peeks at the request line first), so its reads, relays,
// flushes and timers all run on that shard's thread and its lock is never
// contended by the relay of another shard; the I/O threads relay different
// rooms' updates in parallel. (A connection whose upgrade head is not whole
// in its first segment, or every one with http_keep_alive_ms = 0, stays on
// ep_'s thread and gets its shard's handlers at upgrade (on_validate): still
// correct under the shard's lock, not thread-affine; its close is posted to
// ep_'s thread, which reads it: WsppLink::close.) The duplicate rule (one
// room session per address) spans the shards through the room directory
// (room_joined/room_left, a leaf lock): the older session, in another shard,
// is kicked by a task posted to that shard.
//
// Locking: every socket handler, timer and posted task takes its shard's
// lock for its whole body and never a second shard's; the hub's event queue
// lock and the room directory lock are leaves taken under or without a shard
// lock; websocketpp's per-connection locks are only taken inside
// con->send()/close(), i.e. after a shard lock. websocketpp never calls our
// handlers from inside send()/close() (their effects complete
// asynchronously), so the order shard -> event queue / directory /
// websocketpp locks is the only one.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <websocketpp/config/asio_no_tls.hpp>
#include <websocketpp/server.hpp>

#include "dclcomms/ws/admission.hpp"
#include "fast_read.hpp"
#include "hub.hpp"
#include "link.hpp"
#include "worker_pool.hpp"

namespace dclcomms::ws {

namespace detail {
// The answers websocketpp writes on its own to a request it refuses while
// reading it (400 unparsable, 413 a Content-Length over http_max_body_bytes,
// 431 headers over 16 000 bytes) carry a JSON body like every other reject:
// the connection sets them with set_status(code, message) on this type.
class Response : public websocketpp::http::parser::response {
 public:
  using base = websocketpp::http::parser::response;
  using base::set_status;
  void set_status(websocketpp::http::status_code::value code, const std::string& msg) {
    if (msg.empty()) {
      base::set_status(code);  // the standard reason phrase
    } else {
      base::set_status(code, msg);
    }
    if (code >= 400 && get_body().empty()) {
      replace_header("Content-Type", "application/json");
      replace_header("Access-Control-Allow-Origin", "*");
      replace_header("Connection", "close");
      set_body(std::string(R"({"error":")") + websocketpp::http::status_code::get_string(code) +
               "\"}");
    }
  }
};
struct WsppConfig : websocketpp::config::asio {
  typedef WsppConfig type;
  typedef websocketpp::config::asio base;
  typedef Response response_type;
  struct transport_config : public base::transport_config {
    typedef type::response_type response_type;
  };
  // websocketpp's asio transport, room sessions' plain frames read by us (fast_read.hpp).
  typedef FastReadEndpoint<transport_config> transport_type;
};
using Endpoint = websocketpp::server<WsppConfig>;
using ConnPtr = Endpoint::connection_ptr;
using Hdl = websocketpp::connection_hdl;
using MessagePtr = Endpoint::message_ptr;
}  // namespace detail

class WsppLink;
class RoomReadSink;
class HttpSession;

// One session per address across the shards, newest wins: address -> the
// shard and the session (its key there) registered last. Server::Impl keeps
// one for room sessions and one for connector sessions (more than one shard
// only). Its own lock; `under_lock` callbacks run under it, so what they push
// keeps the directory's order across shards.
class ShardDirectory {
 public:
  struct Entry {
    size_t shard;
    uint64_t key;
  };
  // Registers mine for address; the entry it replaced when that one is in
  // another shard (whose session is then to be replaced there).
  std::optional<Entry> claim(const std::string& address, Entry mine,
                             const std::function<void()>& under_lock = nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, fresh] = map_.try_emplace(address, mine);
    std::optional<Entry> replaced;
    if (!fresh) {
      if (it->second.shard != mine.shard) replaced = it->second;
      it->second = mine;
    }
    if (under_lock) under_lock();
    return replaced;
  }
  // Erases address's entry while it is still mine (not replaced meanwhile);
  // under_lock runs only then.
  void release(const std::string& address, Entry mine,
               const std::function<void()>& under_lock = nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(address);
    if (it == map_.end() || it->second.shard != mine.shard || it->second.key != mine.key) return;
    map_.erase(it);
    if (under_lock) under_lock();
  }
  // Whether a shard other than `shard` holds address's session.
  bool elsewhere(const std::string& address, size_t shard) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(address);
    return it != map_.end() && it->second.shard != shard;
  }
  // The shard of address's session, `none` when it has none.
  size_t shard_of(const std::string& address, size_t none) const {
    std::lock_guard<std::mutex> lock(mu_);
    return shard_locked(address, none);
  }
  // f(shard_of) under the lock: many look-ups, one lock.
  template <class F>
  void with_shards(size_t none, F&& f) const {
    std::lock_guard<std::mutex> lock(mu_);
    f([&](const std::string& address) { return shard_locked(address, none); });
  }

 private:
  size_t shard_locked(const std::string& address, size_t none) const {
    auto it = map_.find(address);
    return it == map_.end() ? none : it->second.shard;
  }
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> map_;
};

class Server::Impl final {
 public:
  explicit Impl(Config cfg);  // validate(cfg) first
  ~Impl();

  uint16_t start();
  void stop();
  uint16_t port() const noexcept { return port_; }
  int event_fd() const noexcept { return efd_; }
  std::vector<Event> poll(size_t max_events) { return hub_.poll(max_events); }
  void respond(uint64_t id, int status, std::vector<std::pair<std::string, std::string>> headers,
               std::string body);
  Stats stats() const;  // every shard's, summed
  bool feed_wants_key() const {
    std::lock_guard<std::mutex> lock(mu_);
    return hub_.feed_wants_key();
  }
  // Scene rooms live in shard 0, island rooms in their room's shard.
  std::string scene_room_of(const std::string& address) const {
    Shard& sh = *shards_[0];  // scene rooms live in shard 0
    std::lock_guard<std::mutex> lock(sh.mu);
    return sh.hub.scene_room_of(address);
  }
  std::vector<std::string> room_members(bool scene, const std::string& room) const {
    Shard& sh = *shards_[scene ? 0 : shard_of_room(room)];
    std::lock_guard<std::mutex> lock(sh.mu);
    return sh.hub.room_members(scene, room);
  }
  // Runs f(hub) on an I/O thread under each shard's lock in turn.
  template <class F>
  void post_to_every_shard(const F& f) {
    for (auto& p : shards_) {
      Shard* sh = p.get();
      post(*sh, [sh, f]() mutable { f(sh->hub); });
    }
  }
  // Runs f(hub) on an I/O thread under mu_ (nothing once stopped).
  template <class F>
  void post_to_hub(F&& f) {
    post([this, f = std::forward<F>(f)]() mutable { f(hub_); });
  }
  // Runs f(hub) on an I/O thread under the lock of room's shard.
  template <class F>
  void post_to_room(const std::string& room, F&& f) {
    Shard* sh = shards_[shard_of_room(room)].get();
    post(*sh, [sh, f = std::forward<F>(f)]() mutable { f(sh->hub); });
  }
  // Runs f(hub) on an I/O thread under the lock of the shard holding the
  // connector session of address (shard 0 when none: f finds nothing there).
  template <class F>
  void post_to_connector(const std::string& address, F&& f) {
    Shard* sh = shards_[shard_of_connector(address)].get();
    post(*sh, [sh, f = std::forward<F>(f)]() mutable { f(sh->hub); });
  }
  // The connector relay (server.hpp): queued in call order, handed to the
  // hubs by one posted task at a time per shard. With connector sessions in
  // several shards, each island_changed recipient goes to its session's
  // shard (one not connected: shard 0, which counts it) and every other
  // item to every shard, so each session's messages keep their order.
  void relay(std::vector<RelayItem> items);
  RelayStats relay_stats() const;
  std::string connector_island_of(const std::string& address) const {
    Shard& sh = *shards_[shard_of_connector(address)];
    std::lock_guard<std::mutex> lock(sh.mu);
    return sh.hub.connector_island_of(address);
  }
  void set_deny_list(std::unordered_set<std::string> lowercase) {
    for (auto& sh : shards_) {  // every shard admits connector sessions
      std::lock_guard<std::mutex> lock(sh->mu);
      sh->hub.set_deny_list(lowercase);
    }
  }

  // What every shard's Environment forwards to.
  int64_t unix_ms();
  int64_t steady_ms();
  FramePtr frame(std::string payload, FrameType type);
  FramePtr split_frame(std::string head, std::shared_ptr<const std::string> tail, FrameType type);
  void events_pending(bool pending);

 private:
  friend class WsppLink;
  friend class RoomReadSink;
  struct Shard;
  // A shard's Environment: the server's, with the auth results posted back
  // to this shard and room joins/leaves reported with its index.
  class ShardEnv final : public Environment {
   public:
    ShardEnv(Impl& server, Shard& shard) : server_(server), shard_(shard) {}
    int64_t unix_ms() override { return server_.unix_ms(); }
    int64_t steady_ms() override { return server_.steady_ms(); }
    FramePtr frame(std::string payload, FrameType type) override {
      return server_.frame(std::move(payload), type);
    }
    FramePtr split_frame(std::string head, std::shared_ptr<const std::string> tail,
                         FrameType type) override {
      return server_.split_frame(std::move(head), std::move(tail), type);
    }
    void verify(std::string chain_json, std::string challenge, VerifyDone done) override {
      server_.verify(shard_, std::move(chain_json), std::move(challenge), std::move(done));
    }
    void events_pending(bool pending) override { server_.events_pending(pending); }
    void room_joined(const std::string& address, uint32_t alias) override {
      server_.room_joined(shard_, address, alias);
    }
    void room_left(const std::string& address, uint32_t alias) override {
      server_.room_left(shard_, address, alias);
    }
    bool room_member_elsewhere(const std::string& address) override {
      return server_.room_member_elsewhere(shard_, address);
    }
    void connector_registered(const std::string& address, uint64_t id,
                              const std::function<void()>& announce) override {
      server_.connector_registered(shard_, address, id, announce);
    }
    void connector_left(const std::string& address, uint64_t id,
                        const std::function<void()>& announce) override {
      server_.connector_left(shard_, address, id, announce);
    }
    bool connector_elsewhere(const std::string& address) override {
      return server_.connector_elsewhere(shard_, address);
    }

   private:
    Impl& server_;
    Shard& shard_;
  };
  struct Shard {
    Shard(Impl& server, size_t i) : index(i), env(server, *this), hub(server.cfg_, env) {}
    const size_t index;
    ShardEnv env;
    // Shards 1.. of a sharded server: their own io_context, one thread, and
    // a websocketpp endpoint on it (null for shard 0: ep_). Declared before
    // hub: destroyed after every link and connection that uses them.
    std::unique_ptr<asio::io_context> io;
    std::unique_ptr<detail::Endpoint> ep;
    std::mutex mu;                 // guards everything below
    std::vector<WsppLink*> dirty;  // declared before hub: its links unlist themselves
    // The frames in the dirty links' corks (which keep plain pointers), one
    // reference each, until the flush.
    std::vector<FramePtr> held;
    // The pending flush (server.cpp, "corking"): frames received (input) and
    // what the flush task saw of it, its deferrals and when it was posted.
    bool flush_posted = false;
    uint64_t input = 0, input_seen = 0;
    int deferrals = 0;
    int64_t flush_posted_us = 0;
    // Counters (Stats.server): sendmsg calls, writes handed to websocketpp's
    // queue (full socket buffer), frames written, flushes deferred. The first
    // three are atomic: a big flush writes from two threads (flush_dirty).
    std::atomic<uint64_t> socket_writes{0}, handed_over{0}, frames_flushed{0};
    uint64_t flushes_deferred = 0, flushes_split = 0;  // split: written by two threads
    uint64_t frames_read_direct = 0;  // room frames read by the connection (fast_read.hpp)
    // The connector relay's items for this shard's hub (under relay_mu_).
    std::vector<RelayItem> relay_queue;
    bool relay_posted = false;  // a drain task is posted and has not taken the queue yet
    Hub hub;
  };
  std::vector<std::unique_ptr<Shard>> make_shards();
  // The shard of a room (its id, without /rooms/; one shard: 0).
  size_t shard_of_room(const std::string& room) const;
  // The shard whose thread serves a WebSocket upgrade to path: an island
  // room's; a connector session's (connector_sharded()): the next in turn;
  // else 0. Called once per upgrade.
  size_t shard_of_path(const std::string& path);
  // A shard's endpoint and the io_context its handlers, timers and tasks run on.
  detail::Endpoint& ep_of(Shard& shard) { return shard.ep ? *shard.ep : ep_; }
  asio::io_context& io_of(Shard& shard) { return ep_of(shard).get_io_service(); }
  // The handlers and limits every endpoint shares, bound to shard.
  void configure(detail::Endpoint& ep, Shard& shard);
  // Moves an accepted connection whose upgrade is not read yet to shard's
  // endpoint (a new connection object on the same socket; the admission
  // slot follows) and starts it there.
  void migrate(const detail::ConnPtr& con, size_t shard);
  void verify(Shard& shard, std::string chain_json, std::string challenge,
              Environment::VerifyDone done);
  void room_joined(Shard& shard, const std::string& address, uint32_t alias);
  void room_left(Shard& shard, const std::string& address, uint32_t alias);
  bool room_member_elsewhere(Shard& shard, const std::string& address);
  // Connector sessions spread over the shards (more than one shard and the
  // connector served): each upgrade to a connector path is given the next
  // shard in turn (HttpSession::keep; a connection it does not peek stays
  // in shard 0); the directory below keeps one session per address.
  bool connector_sharded() const noexcept { return shards_.size() > 1 && cfg_.connector; }
  size_t next_connector_shard();
  size_t shard_of_connector(const std::string& address) const;
  void connector_registered(Shard& shard, const std::string& address, uint64_t id,
                            const std::function<void()>& announce);
  void connector_left(Shard& shard, const std::string& address, uint64_t id,
                      const std::function<void()>& announce);
  bool connector_elsewhere(Shard& shard, const std::string& address);
  // A plain HTTP request waiting for respond(): answered on its websocketpp
  // connection (which then closes), or on a keep-alive session (http.cpp).
  struct PendingHttp {
    detail::ConnPtr con;
    std::unique_ptr<asio::steady_timer> timer;
    std::shared_ptr<HttpSession> session;
  };

  // Runs f on an I/O thread under mu_ / shard's lock (nothing once stopped).
  template <class F>
  void post(F&& f) {
    post(*shards_[0], std::forward<F>(f));
  }
  template <class F>
  void post(Shard& shard, F&& f) {
    if (!started_.load() || stopped_.load()) return;
    asio::post(io_of(shard), [&shard, f = std::forward<F>(f)]() mutable {
      std::lock_guard<std::mutex> lock(shard.mu);
      f();
    });
  }
  static void run_io(detail::Endpoint& ep);
  void schedule_idle_sweep();
  // Corking (server.cpp, WsppLink): links with frames queued this I/O loop
  // turn; the first one posts the turn's flush. Under mu_.
  void dirty(Shard& shard, WsppLink* link);
  void post_flush(Shard& shard);
  void undirty(Shard& shard, WsppLink* link);
  void flush_dirty(Shard& shard);

  // Admission (admission.hpp; server.cpp): our own accept loop, so a failed
  // accept (EMFILE, ENFILE) pauses it on a timer instead of spinning, and
  // each accepted socket is admitted or refused before a byte is read.
  struct ConnInfo {
    std::weak_ptr<detail::Endpoint::connection_type> con;  // to evict it
  };
  void accept_next();
  void on_accept(const detail::ConnPtr& con, const std::error_code& ec);
  void on_terminated(const detail::ConnPtr& con);
  // Closes a connection Admission evicted (from its own strand: interrupt()).
  void evict(const void* key);
  // 503 written straight to a socket that is then closed (nothing read).
  static void refuse(const detail::ConnPtr& con, const char* why);
  void authenticated(const void* key);  // WsppLink, under mu_
  // A keep-alive session waits for its next request (idle) or has one under
  // way (http.cpp; on the connection's strand, no lock held).
  void http_idle(const void* key, bool idle);
  bool reserve_only(const void* key) const;

  // websocketpp handlers (server.cpp; HTTP in http.cpp)
  static std::pair<std::string, std::string> split_resource(const std::string& resource);
  bool on_validate(detail::Hdl h);
  // A room connection of shard i > 0 gets handlers bound to that shard.
  void route(const detail::ConnPtr& con, Shard& shard);
  void on_open(Shard& shard, detail::Hdl h);
  void on_message(Shard& shard, detail::Hdl h, detail::MessagePtr msg);
  void on_closed(Shard& shard, detail::Hdl h);
  static bool on_ping(Shard& shard, detail::Hdl h, const std::string& payload);
  void on_http(detail::Hdl h);
  // HTTP/1.1 keep-alive (http.cpp): a connection whose next request is plain
  // HTTP is served by an HttpSession; anything else goes to websocketpp.
  friend class HttpSession;
  void serve(const detail::ConnPtr& con);
  void close_http_sessions();  // under mu_
  // on_http's routing for both paths: answered here (health, reserve, shut
  // down) or handed to the embedder with p as its pending answer. Under mu_.
  void http_request(const void* key, HttpRequest req, PendingHttp p);
  void answer(PendingHttp& p, int status, const std::vector<std::pair<std::string, std::string>>& h,
              const std::string& body);

  const Config cfg_;
  detail::Endpoint ep_;
  std::vector<std::thread> io_;
  std::unique_ptr<WorkerPool> pool_;
  // A second writer for big flushes (flush_dirty): one thread, started when
  // the machine has more than one CPU.
  std::unique_ptr<WorkerPool> flush_pool_;
  std::unique_ptr<asio::steady_timer> idle_timer_;
  std::atomic<bool> started_{false};
  std::atomic<bool> stopped_{false};
  uint16_t port_ = 0;
  int efd_ = -1;

  std::unique_ptr<asio::steady_timer> accept_timer_;
  uint64_t fd_limit_ = 0;  // RLIMIT_NOFILE after start() raised it

  // Leaf lock: admission state (taken under mu_ or alone, never the reverse).
  mutable std::mutex adm_mu_;
  std::unique_ptr<Admission> adm_;
  std::unordered_map<const void*, ConnInfo> conns_;
  uint64_t accept_paused_ = 0, http_too_large_ = 0;
  uint64_t moved_to_shards_ = 0;  // migrate(): sockets handed to a shard's thread

  std::vector<std::unique_ptr<Shard>> shards_;  // never empty; fixed once built
  std::mutex& mu_;  // shard 0's lock: its hub, and the HTTP requests below
  Hub& hub_;        // shard 0's hub: connector, bus, events, HTTP
  std::unordered_map<uint64_t, PendingHttp> http_;
  std::unordered_set<HttpSession*> sessions_;  // keep-alive sessions (under mu_)
  uint64_t next_http_id_ = 1;
  // Leaf lock: the relay's queues (Shard::relay_queue; taken alone or under
  // a shard's lock, never the reverse).
  mutable std::mutex relay_mu_;
  RelayStats relay_stats_;
  void enqueue_relay(Shard& shard, std::vector<RelayItem> items);  // under relay_mu_
  void drain_relay(Shard& shard);  // on shard's I/O thread, under its lock
  // The room directory (more than one shard only; key: the session's alias). A
  // leaf lock.
  ShardDirectory room_dir_;
  // The connector directory (connector_sharded() only; key: the hub's
  // Session::reg_id). Its lock is taken under a shard's (or alone: relay(),
  // the embedder's calls); under it only the event queue's (announce).
  ShardDirectory conn_dir_;
  std::atomic<size_t> next_connector_{0};
};

}  // namespace dclcomms::ws
