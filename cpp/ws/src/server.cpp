// The websocketpp endpoint around the Hub: configuration check, start/stop,
// the connection handlers, WsppLink/WsppFrame (link.hpp on websocketpp),
// the auth workers, the eventfd and the public Server API. The session state
// machines live in hub.cpp, connector.cpp, rooms.cpp and bus.cpp, plain HTTP
// in http.cpp.

#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>

#include "dclcomms/error.hpp"
#include "server_impl.hpp"
#include "wire_frame.hpp"

namespace dclcomms::ws {

namespace {

using detail::ConnPtr;
using detail::Hdl;
using detail::MessagePtr;
using Message = websocketpp::config::asio::message_type;

constexpr uint8_t kPing = 0x9, kPong = 0xA;

// Bytes handed to websocketpp's write queue and not yet written (shared with
// the messages that carry them, which may outlive the link).
struct Handed {
  std::atomic<size_t> messages{0};
  std::atomic<size_t> bytes{0};
};

// A message for websocketpp's queue that reports its own release (websocketpp
// drops its last reference once the bytes are written, or with the
// connection) to the link's Handed counters.
struct TrackedMessage {
  TrackedMessage(std::shared_ptr<Handed> h, std::string bytes)
      : msg(Message::con_msg_man_ptr{}, websocketpp::frame::opcode::binary, 0),
        handed(std::move(h)),
        n(bytes.size()) {
    msg.get_raw_payload() = std::move(bytes);
    msg.set_prepared(true);  // empty header: the payload is whole frames
    handed->bytes.fetch_add(n, std::memory_order_relaxed);
    handed->messages.fetch_add(1, std::memory_order_relaxed);
  }
  ~TrackedMessage() {
    handed->bytes.fetch_sub(n, std::memory_order_relaxed);
    handed->messages.fetch_sub(1, std::memory_order_release);
  }
  TrackedMessage(const TrackedMessage&) = delete;
  TrackedMessage& operator=(const TrackedMessage&) = delete;
  Message msg;
  std::shared_ptr<Handed> handed;
  size_t n;
};

}  // namespace

// One websocketpp connection as the hub's Link; its stage timer runs on the
// I/O threads and fires under the shard's lock.
//
// Corking: send() only appends the frame to this link's cork; the link joins
// the shard's dirty list and one flush per I/O loop turn (a task posted when
// the list becomes non-empty, so it runs after the socket handlers already
// due in this turn) writes each dirty link's frames with ONE sendmsg (a
// gather of the shared frames' bytes) straight to the socket. What the socket
// does not take (a full send buffer) goes to websocketpp's write queue as one
// message, and every later flush follows it there until websocketpp has
// written it all (Handed), so bytes leave in order; websocketpp then writes
// when the socket drains. close() flushes first (frames queued before a close
// go out before it).
//
// Writing beside websocketpp is safe because websocketpp writes nothing of
// its own to an open connection while we hold no bytes in its queue: pongs
// and pings go through the cork too (the ping handler answers through the
// link), and its close frames follow a state change to closing, after which
// nothing is written here. (With several I/O threads a close that websocketpp
// starts on another thread, a client's close or a protocol error, can race
// one flush of this connection: its close frame then lands between or after
// our frames, on a connection that is closing anyway.)
class WsppLink final : public Link {
 public:
  using Shard = Server::Impl::Shard;
  // Made in on_open, on the thread that reads the connection: its shard's,
  // or the listening thread's for a connection that was not moved (below).
  WsppLink(Server::Impl& server, Shard& shard, ConnPtr con)
      : server_(server),
        shard_(shard),
        con_(std::move(con)),
        fd_(con_->get_raw_socket().native_handle()),
        timer_(server.io_of(shard)),
        handed_(std::make_shared<Handed>()),
        reader_(server.io_of(shard).get_executor().running_in_this_thread()
                    ? server.io_of(shard)
                    : server.ep_.get_io_service()) {}
  ~WsppLink() override {
    if (!cork_.empty()) server_.undirty(shard_, this);
  }

  void send(const FramePtr& frame) override {
    if (cork_.empty()) server_.dirty(shard_, this);
    // The shard holds one reference per frame until its flush (a broadcast's
    // receivers share the frame: one reference, not one per receiver); the
    // cork keeps plain pointers.
    if (shard_.held.empty() || shard_.held.back().get() != frame.get()) {
      shard_.held.push_back(frame);
    }
    const auto* w = static_cast<const WireFrame*>(frame.get());  // every frame here is one
    cork_bytes_ += w->size();
    cork_.push_back(w);
  }
  void close(int code, const std::string& reason) override {
    if (!cork_.empty()) {
      server_.undirty(shard_, this);
      flush();
    }
    // websocketpp's frame reader reads the connection's state without a
    // lock, so close() runs on the thread that reads the connection. That is
    // this one, except for a connection that stayed on the listening thread
    // with its room's shard's handlers (on_validate; http_keep_alive_ms = 0
    // or a split upgrade head): its close goes there (ThreadSanitizer).
    const auto value = static_cast<websocketpp::close::status::value>(code);
    if (reader_.get_executor().running_in_this_thread()) {
      websocketpp::lib::error_code ec;
      con_->close(value, reason, ec);
    } else {
      asio::post(reader_, [con = con_, value, reason] {
        websocketpp::lib::error_code ec;
        con->close(value, reason, ec);
      });
    }
  }
  void ping() override {
    static const FramePtr ping = std::make_shared<const WireFrame>("", kPing);
    send(ping);
  }
  // Answers a client's ping (payload at most 125 bytes: websocketpp checks).
  void pong(const std::string& payload) { send(std::make_shared<const WireFrame>(payload, kPong)); }
  size_t buffered_amount() const override {
    return cork_bytes_ + handed_->bytes.load(std::memory_order_relaxed);
  }
  void arm_timer(int64_t ms, std::function<void()> fire) override {
    timer_.expires_after(std::chrono::milliseconds(ms));
    Shard* shard = &shard_;
    timer_.async_wait([shard, fire = std::move(fire)](const asio::error_code& ec) {
      if (ec) return;
      std::lock_guard<std::mutex> lock(shard->mu);
      fire();
    });
  }
  void cancel_timer() override { timer_.cancel(); }
  void authenticated() override { server_.authenticated(con_.get()); }

  // Writes the cork (the caller took this link off the dirty list). Once the
  // connection is closing the cork is dropped, as websocketpp's send would.
  void flush() {
    shard_.frames_flushed.fetch_add(cork_.size(), std::memory_order_relaxed);
    if (handed_->messages.load(std::memory_order_acquire) == 0) {
      if (con_->get_state() == websocketpp::session::state::open) write_direct();
    } else {
      hand_over(0, 0);
    }
    cork_.clear();
    cork_bytes_ = 0;
  }

 private:
  void write_direct() {
    WriteEnd e = write_frames(fd_, cork_.data(), cork_.size());
    shard_.socket_writes.fetch_add(e.syscalls, std::memory_order_relaxed);
    if (e.full) hand_over(e.frame, e.skip);
    // e.broken: the connection is broken; websocketpp's read reports it.
  }

  // Queues frames [from..] of the cork (the first without its first `skip`
  // bytes) on websocketpp as one message.
  void hand_over(size_t from, size_t skip) {
    std::string bytes;
    size_t total = 0;
    for (size_t j = from; j < cork_.size(); ++j) total += cork_[j]->wire_size();
    bytes.reserve(total - skip);
    for (size_t j = from; j < cork_.size(); ++j) cork_[j]->append_wire(bytes, j == from ? skip : 0);
    auto m = std::make_shared<TrackedMessage>(handed_, std::move(bytes));
    shard_.handed_over.fetch_add(1, std::memory_order_relaxed);
    websocketpp::lib::error_code ec = con_->send(MessagePtr(m, &m->msg));
    (void)ec;  // invalid_state: the socket is closing; the message is dropped
  }

  Server::Impl& server_;
  Shard& shard_;
  ConnPtr con_;
  int fd_;
  asio::steady_timer timer_;
  std::shared_ptr<Handed> handed_;
  asio::io_context& reader_;            // the io_context whose thread reads con_
  std::vector<const WireFrame*> cork_;  // frames of this turn, in order (held by the shard)
  size_t cork_bytes_ = 0;               // their payload bytes (counted as buffered)
};

// ---- corking: each shard's dirty list (under its lock) -------------------------
//
// The flush waits while input keeps coming: when its task runs and this
// shard's sockets delivered frames since the task was posted (or since its
// last look), it posts itself again, behind the handlers the reactor queued
// meanwhile, so their frames join the same writes; at most kMaxDeferrals
// times and kMaxDeferUs after the first post. With no new input it flushes at
// once, so a quiet server adds no delay; under load each socket gets more
// frames per write (fewer syscalls per delivery) for a bounded wait.

namespace {
constexpr int kMaxDeferrals = 8;
constexpr int64_t kMaxDeferUs = 1000;
int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void Server::Impl::dirty(Shard& shard, WsppLink* link) {
  if (!shard.flush_posted) {
    shard.flush_posted = true;
    shard.deferrals = 0;
    shard.input_seen = shard.input;
    shard.flush_posted_us = now_us();
    post_flush(shard);
  }
  shard.dirty.push_back(link);
}

void Server::Impl::post_flush(Shard& shard) {
  Shard* sh = &shard;
  asio::post(io_of(*sh), [this, sh] {
    std::lock_guard<std::mutex> lock(sh->mu);
    if (sh->input != sh->input_seen && sh->deferrals < kMaxDeferrals &&
        now_us() - sh->flush_posted_us < kMaxDeferUs) {
      sh->input_seen = sh->input;
      ++sh->deferrals;
      ++sh->flushes_deferred;
      post_flush(*sh);
      return;
    }
    sh->flush_posted = false;
    flush_dirty(*sh);
  });
}

void Server::Impl::undirty(Shard& shard, WsppLink* link) {
  auto it = std::find(shard.dirty.begin(), shard.dirty.end(), link);
  if (it != shard.dirty.end()) shard.dirty.erase(it);
}

namespace {
// A flush of at least kSplitFlush links (a tick's island_changed to every
// connector session: 10,000 sockets, one sendmsg each, nearly all of it the
// kernel's loopback/TCP path) is written by two threads: the I/O thread and
// flush_pool_'s, taking kFlushChunk links at a time from a shared index. The
// I/O thread keeps the shard's lock and returns only when every link is
// written, so nothing else of the shard runs meanwhile; each link is written
// by one thread, its frames in order, so every connection's bytes are what
// one writer would send. If the helper never starts (stopping, or busy), the
// I/O thread writes everything itself; a helper that starts late finds the
// index past the end and touches nothing.
constexpr size_t kSplitFlush = 512;
constexpr size_t kFlushChunk = 32;
struct SplitFlush {
  explicit SplitFlush(std::vector<WsppLink*> l) : links(std::move(l)), count(links.size()) {}
  std::vector<WsppLink*> links;
  // links.size(), fixed: a helper that starts after the I/O thread took the
  // vector back (flush_dirty) reads only this and `next`, never the vector.
  const size_t count;
  std::atomic<size_t> next{0}, done{0};
  void work() {
    const size_t n = count;
    for (;;) {
      size_t i = next.fetch_add(kFlushChunk, std::memory_order_relaxed);
      if (i >= n) return;
      size_t end = std::min(n, i + kFlushChunk);
      for (size_t j = i; j < end; ++j) links[j]->flush();
      done.fetch_add(end - i, std::memory_order_release);
    }
  }
};
}  // namespace

void Server::Impl::flush_dirty(Shard& shard) {
  // A flush queues nothing new (websocketpp reports nothing back from inside
  // send()), so one pass empties the list.
  std::vector<WsppLink*> links;
  links.swap(shard.dirty);
  if (flush_pool_ && links.size() >= kSplitFlush) {
    ++shard.flushes_split;
    auto split = std::make_shared<SplitFlush>(std::move(links));
    flush_pool_->submit([split] { split->work(); });
    split->work();
    while (split->done.load(std::memory_order_acquire) < split->count) {
      std::this_thread::yield();  // the helper's last chunk
    }
    links.swap(split->links);  // no one reads it any more: keep the capacity
  } else {
    for (WsppLink* l : links) l->flush();
  }
  links.clear();
  shard.held.clear();                                // every cork is empty now
  if (shard.dirty.empty()) shard.dirty.swap(links);  // keep the capacity
}

// ---- shards ------------------------------------------------------------------

std::vector<std::unique_ptr<Server::Impl::Shard>> Server::Impl::make_shards() {
  // Island rooms and connector sessions are spread over the shards.
  size_t n = cfg_.rooms || cfg_.connector ? static_cast<size_t>(cfg_.io_threads) : 1;
  std::vector<std::unique_ptr<Shard>> out;
  for (size_t i = 0; i < n; ++i) out.push_back(std::make_unique<Shard>(*this, i));
  for (size_t i = 1; i < n; ++i) {
    out[i]->hub.forward_events_to(&out[0]->hub);
    out[i]->io = std::make_unique<asio::io_context>(1);  // one thread runs it
    out[i]->ep = std::make_unique<detail::Endpoint>();
  }
  return out;
}

size_t Server::Impl::shard_of_room(const std::string& room) const {
  if (shards_.size() == 1) return 0;
  return std::hash<std::string>{}(room) % shards_.size();
}

size_t Server::Impl::shard_of_path(const std::string& path) {
  static const std::string kRooms = "/rooms/";
  if (shards_.size() == 1) return 0;
  if (cfg_.rooms && path.rfind(kRooms, 0) == 0) return shard_of_room(path.substr(kRooms.size()));
  if (connector_sharded() && (path == "/ws" || path == "/archipelago/ws")) {
    return next_connector_shard();
  }
  return 0;
}

// ---- connector sessions over the shards ------------------------------------------

size_t Server::Impl::next_connector_shard() {
  return next_connector_.fetch_add(1, std::memory_order_relaxed) % shards_.size();
}

size_t Server::Impl::shard_of_connector(const std::string& address) const {
  if (!connector_sharded()) return 0;
  return conn_dir_.shard_of(address, 0);
}

void Server::Impl::connector_registered(Shard& shard, const std::string& address, uint64_t id,
                                        const std::function<void()>& announce) {
  if (!connector_sharded()) {
    announce();
    return;
  }
  // announce (PeerConnected) under the directory's lock: ordered with the
  // address's other events.
  if (auto old = conn_dir_.claim(address, {shard.index, id}, announce)) {
    post(*shards_[old->shard], [this, address, old = *old] {
      shards_[old.shard]->hub.replace_connector(address, old.key);
    });
  }
}

void Server::Impl::connector_left(Shard& shard, const std::string& address, uint64_t id,
                                  const std::function<void()>& announce) {
  if (!connector_sharded()) {
    announce();
    return;
  }
  // PeerDisconnected only while the directory still names this session (one
  // in another shard that replaced it is the address's now).
  conn_dir_.release(address, {shard.index, id}, announce);
}

bool Server::Impl::connector_elsewhere(Shard& shard, const std::string& address) {
  if (!connector_sharded()) return false;
  return conn_dir_.elsewhere(address, shard.index);
}

// The socket leaves ep_'s reactor and joins the shard's: nothing of the
// request was read (the HttpSession only peeked), so websocketpp on the
// shard's endpoint reads the upgrade from its first byte.
void Server::Impl::migrate(const ConnPtr& con, size_t shard) {
  Shard& sh = *shards_[shard];
  auto& sock = con->get_raw_socket();
  asio::error_code ec;
  auto protocol = sock.local_endpoint(ec).protocol();
  ConnPtr moved;
  if (!ec) moved = sh.ep->get_connection();
  if (!moved) {
    con->start();  // served from ep_'s thread (on_validate routes it)
    return;
  }
  int fd = sock.release(ec);
  if (ec) {
    con->start();
    return;
  }
  moved->get_raw_socket().assign(protocol, fd, ec);
  if (ec) {
    ::close(fd);
    on_terminated(con);  // its admission slot
    return;
  }
  {
    std::lock_guard<std::mutex> lock(adm_mu_);
    adm_->rekey(con.get(), moved.get());
    ++moved_to_shards_;
    conns_.erase(con.get());
    conns_[moved.get()] = ConnInfo{moved};
  }
  moved->set_termination_handler([this](ConnPtr c) { on_terminated(c); });
  asio::post(io_of(sh), [moved] { moved->start(); });
}

void Server::Impl::route(const ConnPtr& con, Shard& shard) {
  Shard* sh = &shard;
  con->set_open_handler([this, sh](Hdl h) { on_open(*sh, h); });
  con->set_message_handler([this, sh](Hdl h, MessagePtr m) { on_message(*sh, h, m); });
  con->set_close_handler([this, sh](Hdl h) { on_closed(*sh, h); });
  con->set_fail_handler([this, sh](Hdl h) { on_closed(*sh, h); });
  con->set_pong_handler([sh](Hdl h, std::string) {
    std::lock_guard<std::mutex> lock(sh->mu);
    sh->hub.pong(h.lock().get());
  });
  con->set_ping_handler([sh](Hdl h, std::string payload) { return on_ping(*sh, h, payload); });
}

// A client's ping: the pong goes through the session's link (in order with
// its frames, see WsppLink); a connection without a session is answered by
// websocketpp (true).
bool Server::Impl::on_ping(Shard& shard, Hdl h, const std::string& payload) {
  auto key = h.lock();
  std::lock_guard<std::mutex> lock(shard.mu);
  Link* link = shard.hub.link_of(key.get());
  if (!link) return true;
  static_cast<WsppLink*>(link)->pong(payload);
  return false;
}

void Server::Impl::room_joined(Shard& shard, const std::string& address, uint32_t alias) {
  if (shards_.size() == 1) return;
  if (auto old = room_dir_.claim(address, {shard.index, alias})) {
    post(*shards_[old->shard], [this, address, old = *old] {
      shards_[old.shard]->hub.kick_room_member(address, static_cast<uint32_t>(old.key));
    });
  }
}

void Server::Impl::room_left(Shard& shard, const std::string& address, uint32_t alias) {
  if (shards_.size() == 1) return;
  room_dir_.release(address, {shard.index, alias});
}

bool Server::Impl::room_member_elsewhere(Shard& shard, const std::string& address) {
  if (shards_.size() == 1) return false;
  return room_dir_.elsewhere(address, shard.index);
}

Stats Server::Impl::stats() const {
  Stats st;
  uint64_t writes = 0, handed = 0, frames = 0, deferred = 0, split = 0, direct = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    st = hub_.stats();
  }
  for (const auto& sh : shards_) {
    std::lock_guard<std::mutex> lock(sh->mu);
    writes += sh->socket_writes;
    handed += sh->handed_over;
    frames += sh->frames_flushed;
    deferred += sh->flushes_deferred;
    split += sh->flushes_split;
    direct += sh->frames_read_direct;
  }
  auto add = [](auto& into, const auto& from) {
    for (size_t i = 0; i < into.size() && i < from.size(); ++i) into[i].second += from[i].second;
  };
  for (size_t i = 1; i < shards_.size(); ++i) {
    Stats s;
    {
      std::lock_guard<std::mutex> lock(shards_[i]->mu);
      s = shards_[i]->hub.stats();
    }
    add(st.connector, s.connector);
    add(st.rooms, s.rooms);
    add(st.bus, s.bus);
    add(st.bridge, s.bridge);
    add(st.feed, s.feed);
    st.room_details.insert(st.room_details.end(), s.room_details.begin(), s.room_details.end());
  }
  std::lock_guard<std::mutex> lock(adm_mu_);
  if (adm_) st.server = adm_->stats();
  st.server.emplace_back("fd_limit", fd_limit_);
  st.server.emplace_back("accept_paused", accept_paused_);
  st.server.emplace_back("http_too_large", http_too_large_);
  st.server.emplace_back("sockets_moved_to_shards", moved_to_shards_);
  st.server.emplace_back("socket_writes", writes);
  st.server.emplace_back("writes_handed_over", handed);
  st.server.emplace_back("frames_flushed", frames);
  st.server.emplace_back("flushes_deferred", deferred);
  st.server.emplace_back("flushes_split", split);
  st.server.emplace_back("frames_read_direct", direct);
  return st;
}

namespace {
Config validated(Config cfg) {
  validate(cfg);
  return cfg;
}
}  // namespace

Server::Impl::Impl(Config cfg)
    : cfg_(validated(std::move(cfg))),
      shards_(make_shards()),
      mu_(shards_[0]->mu),
      hub_(shards_[0]->hub) {
  efd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd_ < 0) throw Error(ErrorKind::Config, "eventfd_failed", "eventfd() failed");
}

Server::Impl::~Impl() {
  stop();
  if (efd_ >= 0) ::close(efd_);
}

uint16_t Server::Impl::start() {
  if (started_.exchange(true)) {
    throw Error(ErrorKind::Config, "already_started", "the server was already started");
  }
  ep_.init_asio();
  ep_.set_reuse_addr(true);
  ep_.set_listen_backlog(4096);
  configure(ep_, *shards_[0]);
  for (size_t i = 1; i < shards_.size(); ++i) {
    Shard& sh = *shards_[i];
    sh.ep->init_asio(sh.io.get());
    configure(*sh.ep, sh);
    sh.ep->start_perpetual();  // runs with no connection until stop()
  }

  asio::error_code aec;
  auto addr = asio::ip::make_address(cfg_.host, aec);
  if (aec) throw Error(ErrorKind::Config, "invalid_host", "invalid host: " + cfg_.host);
  // Descriptors: the soft limit raised to the hard one; the connection cap
  // (max_connections = 0) leaves fd_reserve of them free.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      rlimit raised = rl;
      raised.rlim_cur =
          rl.rlim_max == RLIM_INFINITY ? std::max<rlim_t>(rl.rlim_cur, 1 << 20) : rl.rlim_max;
      if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
    }
    fd_limit_ = rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : static_cast<uint64_t>(rl.rlim_cur);
  }
  size_t max_conns = cfg_.max_connections;
  if (max_conns == 0) {
    max_conns =
        fd_limit_ > cfg_.fd_reserve + 1 ? static_cast<size_t>(fd_limit_) - cfg_.fd_reserve : 1;
  }
  size_t per_ip = cfg_.max_unauthenticated_per_ip;
  if (per_ip == 0) per_ip = std::max<size_t>(64, max_conns / 8);
  adm_ = std::make_unique<Admission>(max_conns, cfg_.fd_reserve / 2, per_ip,
                                     cfg_.unauthenticated_evict_min_age_ms);
  accept_timer_ = std::make_unique<asio::steady_timer>(ep_.get_io_service());

  websocketpp::lib::error_code ec;
  ep_.listen(asio::ip::tcp::endpoint(addr, cfg_.port), ec);
  if (ec) {
    throw Error(
        ErrorKind::Config, "bind_failed",
        "cannot listen on " + cfg_.host + ":" + std::to_string(cfg_.port) + ": " + ec.message());
  }
  port_ = ep_.get_local_endpoint(aec).port();
  accept_next();
  pool_ = std::make_unique<WorkerPool>(cfg_.auth_threads);
  if (std::thread::hardware_concurrency() > 1) flush_pool_ = std::make_unique<WorkerPool>(1);
  if (cfg_.idle_timeout_ms > 0) {
    idle_timer_ = std::make_unique<asio::steady_timer>(ep_.get_io_service());
    schedule_idle_sweep();
  }
  if (shards_.size() > 1) {  // a thread per shard
    for (auto& sh : shards_) io_.emplace_back([e = &ep_of(*sh)] { run_io(*e); });
  } else {
    for (int i = 0; i < cfg_.io_threads; ++i) io_.emplace_back([this] { run_io(ep_); });
  }
  return port_;
}

void Server::Impl::configure(detail::Endpoint& ep, Shard& shard) {
  Shard* sh = &shard;
  ep.clear_access_channels(websocketpp::log::alevel::all);
  ep.clear_error_channels(websocketpp::log::elevel::all);
  // The endpoint value is only the default of new connections: on_validate
  // sets each one's own limit before any frame of it is read.
  ep.set_max_message_size(cfg_.bus ? std::max(cfg_.max_frame_bytes, cfg_.bus_max_frame_bytes)
                                   : cfg_.max_frame_bytes);
  // Checked against Content-Length when the headers are parsed: 413 before
  // any of the body is read (websocketpp's default would buffer 32 MB).
  ep.set_max_http_body_size(cfg_.http_max_body_bytes);
  ep.set_close_handshake_timeout(2000);
  // Small frames must not wait for Nagle + delayed ACK (~40 ms per hop).
  ep.set_tcp_post_init_handler([this](Hdl h) {
    asio::error_code ignored;  // best effort: latency, not correctness
    ep_.get_con_from_hdl(h)->get_socket().set_option(asio::ip::tcp::no_delay(true), ignored);
  });
  ep.set_validate_handler([this](Hdl h) { return on_validate(h); });
  ep.set_open_handler([this, sh](Hdl h) { on_open(*sh, h); });
  ep.set_message_handler([this, sh](Hdl h, MessagePtr m) { on_message(*sh, h, m); });
  ep.set_close_handler([this, sh](Hdl h) { on_closed(*sh, h); });
  ep.set_fail_handler([this, sh](Hdl h) { on_closed(*sh, h); });
  ep.set_http_handler([this](Hdl h) { on_http(h); });
  // Admission evicted it (evict()): on its strand, like websocketpp's timeouts.
  ep.set_interrupt_handler([this](Hdl h) {
    websocketpp::lib::error_code ec;
    ConnPtr con = ep_.get_con_from_hdl(h, ec);
    if (!ec && con) con->terminate(websocketpp::lib::error_code());
  });
  ep.set_pong_handler([sh](Hdl h, std::string) {
    std::lock_guard<std::mutex> lock(sh->mu);
    sh->hub.pong(h.lock().get());
  });
  ep.set_ping_handler([sh](Hdl h, std::string payload) { return on_ping(*sh, h, payload); });
}

void Server::Impl::stop() {
  if (!started_.load() || stopped_.exchange(true)) return;
  asio::post(ep_.get_io_service(), [this] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      websocketpp::lib::error_code ec;
      ep_.stop_listening(ec);
      hub_.shutdown();
      for (auto& [_, p] : http_) answer(p, 503, {}, R"({"error":"Service Unavailable"})");
      http_.clear();
      close_http_sessions();
      if (idle_timer_) idle_timer_->cancel();
      if (accept_timer_) accept_timer_->cancel();
    }
  });
  // Every other shard closes its sessions on its own thread: a websocketpp
  // connection is only touched from the thread that runs its reads (closing
  // it from shard 0's thread raced its reads: ThreadSanitizer,
  // cpp/ws/tests/ws_shards_stress.cpp). A connection moved to a shard after
  // its shutdown is refused there (Hub::open).
  for (size_t i = 1; i < shards_.size(); ++i) {
    Shard* sh = shards_[i].get();
    asio::post(io_of(*sh), [sh] {
      std::lock_guard<std::mutex> lock(sh->mu);
      sh->hub.shutdown();
    });
  }
  if (pool_) pool_->stop();
  // Give clients a moment to complete the close handshake.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(2000);
  while (std::chrono::steady_clock::now() < deadline) {
    bool done = true;
    for (auto& shard : shards_) {
      std::lock_guard<std::mutex> lock(shard->mu);
      done = done && shard->hub.is_shut_down() && shard->hub.session_count() == 0;
    }
    {
      // Keep-alive HTTP sessions end on their strands (close_http_sessions):
      // stopping the I/O threads first would leave their sockets open.
      std::lock_guard<std::mutex> lock(mu_);
      done = done && sessions_.empty();
    }
    if (done) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ep_.stop();
  for (size_t i = 1; i < shards_.size(); ++i) {
    shards_[i]->ep->stop_perpetual();
    shards_[i]->ep->stop();
  }
  for (auto& t : io_) {
    if (t.joinable()) t.join();
  }
  io_.clear();
  if (flush_pool_) flush_pool_->stop();
}

void Server::Impl::run_io(detail::Endpoint& ep) {
  for (;;) {
    try {
      ep.run();
      return;
    } catch (const std::exception&) {
      // A handler threw (a bug, or allocation failure): keep serving the
      // other sockets rather than losing the I/O thread.
      if (ep.stopped()) return;
    }
  }
}

void Server::Impl::schedule_idle_sweep() {
  idle_timer_->expires_after(
      std::chrono::milliseconds(std::max<int64_t>(cfg_.idle_timeout_ms / 6, 10)));
  idle_timer_->async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    // Each shard sweeps on its own thread: closing an idle session touches
    // its websocketpp connection, which only that shard's thread may (the
    // timer runs on shard 0's).
    for (size_t i = 1; i < shards_.size(); ++i) {
      Shard* sh = shards_[i].get();
      post(*sh, [sh] { sh->hub.idle_sweep(); });
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (hub_.is_shut_down()) return;
      hub_.idle_sweep();
    }
    schedule_idle_sweep();
  });
}

// ---- admission ------------------------------------------------------------------

void Server::Impl::accept_next() {
  if (stopped_.load()) return;
  ConnPtr con = ep_.get_connection();
  if (!con) return;
  websocketpp::lib::error_code ec;
  ep_.async_accept(
      std::static_pointer_cast<detail::Endpoint::transport_con_type>(con),
      [this, con](const std::error_code& ec) { on_accept(con, ec); }, ec);
  if (ec) con->terminate(websocketpp::lib::error_code());  // no longer listening
}

void Server::Impl::on_accept(const ConnPtr& con, const std::error_code& ec) {
  if (ec) {
    con->terminate(websocketpp::lib::error_code());
    if (stopped_.load() || ec == websocketpp::error::operation_canceled) return;
    // EMFILE, ENFILE, ENOBUFS...: the pending connection stays in the
    // backlog, so accepting again at once would spin. Retry in 100 ms.
    {
      std::lock_guard<std::mutex> lock(adm_mu_);
      ++accept_paused_;
    }
    accept_timer_->expires_after(std::chrono::milliseconds(100));
    accept_timer_->async_wait([this](const asio::error_code& e) {
      if (!e) accept_next();
    });
    return;
  }
  asio::error_code aec;
  std::string ip = con->get_raw_socket().remote_endpoint(aec).address().to_string();
  Admission::Decision d;
  {
    std::lock_guard<std::mutex> lock(adm_mu_);
    d = adm_->admit(con.get(), ip, steady_ms());
    if (d.verdict == Admission::Verdict::Admit || d.verdict == Admission::Verdict::ReserveOnly) {
      conns_[con.get()] = ConnInfo{con};
    }
    if (d.evict != nullptr) evict(d.evict);
  }
  switch (d.verdict) {
    case Admission::Verdict::RefusePerIp:
      refuse(con, "too many connections from this address");
      break;
    case Admission::Verdict::RefuseFull:
      refuse(con, "connection limit reached");
      break;
    default:
      con->set_termination_handler([this](ConnPtr c) { on_terminated(c); });
      serve(con);  // http.cpp: keep-alive HTTP, or websocketpp
      break;
  }
  accept_next();
}

void Server::Impl::refuse(const ConnPtr& con, const char* why) {
  std::string body = std::string(R"({"error":"Service Unavailable: )") + why + "\"}";
  std::string resp =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Access-Control-Allow-Origin: *\r\nRetry-After: 1\r\nConnection: close\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  auto& sock = con->get_raw_socket();
  asio::error_code ec;
  sock.non_blocking(true, ec);
  sock.write_some(asio::buffer(resp), ec);  // fits an empty socket buffer
  sock.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  sock.close(ec);
}

void Server::Impl::on_terminated(const ConnPtr& con) {
  bool too_large =
      con->get_response_code() == websocketpp::http::status_code::request_entity_too_large;
  std::lock_guard<std::mutex> lock(adm_mu_);
  if (too_large) ++http_too_large_;
  adm_->closed(con.get());  // a no-op for an evicted one (already forgotten)
  conns_.erase(con.get());
}

void Server::Impl::evict(const void* key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  ConnPtr victim = it->second.con.lock();
  // interrupt() runs the interrupt handler (terminate, no close handshake:
  // the descriptor is needed now) on the victim's own strand, as websocketpp's
  // own timeouts terminate a connection; its handlers then run as for any close.
  if (victim) victim->interrupt();
}

void Server::Impl::authenticated(const void* key) {
  std::lock_guard<std::mutex> lock(adm_mu_);
  adm_->authenticated(key);
}

bool Server::Impl::reserve_only(const void* key) const {
  std::lock_guard<std::mutex> lock(adm_mu_);
  return adm_->reserve_only(key);
}

// ---- websocketpp connection handlers -------------------------------------------

// A room session's plain frames, read by its connection (fast_read.hpp): the
// same entries as on_message and the pong handler, under the shard's lock.
class RoomReadSink final : public ReadSink {
 public:
  RoomReadSink(Server::Impl::Shard& shard, detail::Endpoint::connection_type* con)
      : shard_(shard), con_(con) {}
  bool open() override { return con_->get_state() == websocketpp::session::state::open; }
  size_t max_payload() override { return con_->get_max_message_size(); }
  void message(std::string payload) override {
    std::lock_guard<std::mutex> lock(shard_.mu);
    ++shard_.input;
    ++shard_.frames_read_direct;
    shard_.hub.message(con_, FrameType::Binary, std::move(payload));
  }
  void pong() override {
    std::lock_guard<std::mutex> lock(shard_.mu);
    shard_.hub.pong(con_);
  }

 private:
  Server::Impl::Shard& shard_;
  detail::Endpoint::connection_type* con_;  // owns this sink
};

void Server::Impl::on_open(Shard& shard, Hdl h) {
  ConnPtr con = ep_.get_con_from_hdl(h);
  auto [path, query] = split_resource(con->get_resource());
  // Room sessions' frames are read by the connection itself when nothing of
  // them was read with the handshake and one thread runs its io_context
  // (every shard's, when rooms are served with io_threads > 1).
  if (hub_.kind_of(path) == Hub::Kind::Room && con->handshake_leftover() == size_t{0} &&
      (shards_.size() > 1 || cfg_.io_threads == 1) &&
      con->get_request_header("Content-Length").empty() &&
      con->get_request_header("Transfer-Encoding").empty()) {
    con->set_read_sink(std::make_unique<RoomReadSink>(shard, con.get()));
  }
  std::lock_guard<std::mutex> lock(shard.mu);
  shard.hub.open(con.get(), std::make_unique<WsppLink>(*this, shard, con), path, query);
}

void Server::Impl::on_message(Shard& shard, Hdl h, MessagePtr msg) {
  auto type =
      msg->get_opcode() == websocketpp::frame::opcode::text ? FrameType::Text : FrameType::Binary;
  std::lock_guard<std::mutex> lock(shard.mu);
  ++shard.input;
  shard.hub.message(h.lock().get(), type, std::move(msg->get_raw_payload()));
}

void Server::Impl::on_closed(Shard& shard, Hdl h) {
  ConnPtr con = ep_.get_con_from_hdl(h);
  int local = 0;
  switch (con->get_local_close_code()) {
    case websocketpp::close::status::message_too_big:
      local = 1009;
      break;
    case websocketpp::close::status::invalid_payload:
      local = 1007;
      break;
    default:
      break;
  }
  std::lock_guard<std::mutex> lock(shard.mu);
  shard.hub.closed(con.get(), local);
}

// ---- Environment -----------------------------------------------------------------

int64_t Server::Impl::unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t Server::Impl::steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

FramePtr Server::Impl::frame(std::string payload, FrameType type) {
  return std::make_shared<const WireFrame>(std::move(payload), static_cast<uint8_t>(type));
}

FramePtr Server::Impl::split_frame(std::string head, std::shared_ptr<const std::string> tail,
                                   FrameType type) {
  return std::make_shared<const WireFrame>(std::move(head), static_cast<uint8_t>(type),
                                           std::move(tail));
}

void Server::Impl::verify(Shard& shard, std::string chain_json, std::string challenge,
                          Environment::VerifyDone done) {
  Shard* sh = &shard;
  pool_->submit([this, sh, chain = std::move(chain_json), challenge = std::move(challenge),
                 done = std::move(done)]() mutable {
    auto t0 = std::chrono::steady_clock::now();
    auth::AuthResult res = auth::verify_auth_chain(chain, challenge, unix_ms());
    auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    post(*sh, [res = std::move(res), us, done = std::move(done)]() mutable {
      done(std::move(res), static_cast<int64_t>(us));
    });
  });
}

void Server::Impl::events_pending(bool pending) {
  if (pending) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(efd_, &one, sizeof one);
  } else {
    uint64_t v;
    [[maybe_unused]] auto n = ::read(efd_, &v, sizeof v);
  }
}

// ---- the public API ---------------------------------------------------------

Server::Server(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Server::~Server() = default;
uint16_t Server::start() {
  return impl_->start();
}
void Server::stop() {
  impl_->stop();
}
uint16_t Server::port() const noexcept {
  return impl_->port();
}
int Server::event_fd() const noexcept {
  return impl_->event_fd();
}
std::vector<Event> Server::poll(size_t max_events) {
  return impl_->poll(max_events);
}
void Server::respond(uint64_t request_id, int status,
                     std::vector<std::pair<std::string, std::string>> headers, std::string body) {
  impl_->respond(request_id, status, std::move(headers), std::move(body));
}
// Encoded on the caller's thread; the I/O thread only queues the bytes.
void Server::send_connector(const std::string& address, std::string payload) {
  impl_->post_to_connector(address, [address, payload = std::move(payload)](Hub& hub) mutable {
    hub.send_connector(address, std::move(payload));
  });
}
void Server::send_island_changed(const std::string& address, const codec::IslandChanged& msg) {
  send_connector(address, codec::encode_server_island_changed(msg));
}
void Server::send_island_changed(const std::string& address, std::string_view island_id,
                                 std::string_view conn_str,
                                 const std::optional<std::string>& from_island_id,
                                 std::string_view peers_entries) {
  send_connector(address, codec::encode_server_island_changed(island_id, conn_str, from_island_id,
                                                              peers_entries));
}
void Server::send_island_changed_message(const std::string& address, std::string message) {
  send_connector(address, codec::wrap_server_island_changed(message));
}
void Server::relay(std::vector<RelayItem> items) {
  impl_->relay(std::move(items));
}
RelayStats Server::relay_stats() const {
  return impl_->relay_stats();
}
std::string Server::connector_island_of(const std::string& address) const {
  return impl_->connector_island_of(address);
}
void Server::Impl::relay(std::vector<RelayItem> items) {
  if (items.empty()) return;
  if (!started_.load() || stopped_.load()) {
    std::lock_guard<std::mutex> lock(relay_mu_);
    relay_stats_.dropped_stopped += items.size();
    return;
  }
  const size_t given = items.size();
  if (!connector_sharded()) {
    std::lock_guard<std::mutex> lock(relay_mu_);
    relay_stats_.items += given;
    enqueue_relay(*shards_[0], std::move(items));
    return;
  }
  // Each island_changed recipient to the shard of its session (looked up
  // once here, off the I/O threads), everything else to every shard.
  const size_t n = shards_.size();
  std::vector<std::vector<RelayItem>> per(n);
  // A recipient not connected goes to shard 0, which counts it.
  conn_dir_.with_shards(0, [&](const auto& shard_of) {
    for (auto& item : items) {
      auto* changes = std::get_if<IslandChangesItem>(&item);
      if (changes == nullptr) {
        for (size_t i = 0; i + 1 < n; ++i) per[i].push_back(item);
        per[n - 1].push_back(std::move(item));
        continue;
      }
      std::vector<IslandChangesItem*> part(n, nullptr);
      for (auto& r : changes->recipients) {
        const size_t i = shard_of(r.address);
        if (part[i] == nullptr) {
          IslandChangesItem p;
          p.island_id = changes->island_id;
          p.peers_entries = changes->peers_entries;
          p.frame_heads = changes->frame_heads;
          part[i] = &std::get<IslandChangesItem>(per[i].emplace_back(std::move(p)));
        }
        part[i]->recipients.push_back(std::move(r));
      }
    }
  });
  std::lock_guard<std::mutex> lock(relay_mu_);
  relay_stats_.items += given;
  for (size_t i = 0; i < n; ++i) {
    if (!per[i].empty()) enqueue_relay(*shards_[i], std::move(per[i]));
  }
}
void Server::Impl::enqueue_relay(Shard& shard, std::vector<RelayItem> items) {
  if (shard.relay_queue.empty()) {
    shard.relay_queue = std::move(items);
  } else {
    for (auto& item : items) shard.relay_queue.push_back(std::move(item));
  }
  if (!shard.relay_posted) {
    shard.relay_posted = true;
    Shard* sh = &shard;
    post(shard, [this, sh] { drain_relay(*sh); });
  }
}
void Server::Impl::drain_relay(Shard& shard) {
  std::vector<RelayItem> items;
  {
    std::lock_guard<std::mutex> lock(relay_mu_);
    items.swap(shard.relay_queue);
    shard.relay_posted = false;
  }
  for (auto& item : items) shard.hub.relay(item);
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  std::lock_guard<std::mutex> lock(relay_mu_);
  ++relay_stats_.drains;
  relay_stats_.last_drain_ns = std::max(relay_stats_.last_drain_ns, now);
}
RelayStats Server::Impl::relay_stats() const {
  std::lock_guard<std::mutex> lock(relay_mu_);
  return relay_stats_;
}
void Server::send_join_island(const std::string& address, const std::string& island_id,
                              const std::string& peer_id) {
  send_connector(address, codec::encode_server_join_island(island_id, peer_id));
}
void Server::send_left_island(const std::string& address, const std::string& island_id,
                              const std::string& peer_id) {
  send_connector(address, codec::encode_server_left_island(island_id, peer_id));
}
namespace {
// Codes a server may send (RFC 6455 7.4): ours are 4000-4999; reserved ones
// (1005, 1006, 1015, ...) would leave the socket open.
void check_close_code(const char* method, int code) {
  bool ok = (code >= 4000 && code <= 4999) || code == 1000 || code == 1001 || code == 1008 ||
            code == 1011 || code == 1013;
  if (!ok) {
    throw Error(
        ErrorKind::Config, "invalid_parameter",
        std::string(method) + ": close code must be 4000-4999, 1000, 1001, 1008, 1011 or 1013");
  }
}
}  // namespace

void Server::kick(const std::string& address, int code, const std::string& reason) {
  check_close_code("kick", code);
  impl_->post_to_connector(address,
                           [address, code, reason](Hub& hub) { hub.kick(address, code, reason); });
}
void Server::send_bus(const std::string& address, std::string text) {
  impl_->post_to_hub([address, text = std::move(text)](Hub& hub) mutable {
    hub.send_bus(address, std::move(text));
  });
}
void Server::close_bus(const std::string& address, int code, const std::string& reason) {
  check_close_code("close_bus", code);
  impl_->post_to_hub([address, code, reason](Hub& hub) { hub.close_bus(address, code, reason); });
}
void Server::publish_feed(std::string delta, std::string key) {
  impl_->post_to_hub([delta = std::move(delta), key = std::move(key)](Hub& hub) mutable {
    hub.publish_feed(std::move(delta), std::move(key));
  });
}
bool Server::feed_wants_key() const {
  return impl_->feed_wants_key();
}
void Server::set_deny_list(const std::vector<std::string>& addresses) {
  std::unordered_set<std::string> lowercase;
  for (const auto& a : addresses) lowercase.insert(to_lower_ascii(a));
  impl_->set_deny_list(std::move(lowercase));
}
void Server::accept_bridge(uint64_t id) {
  impl_->post_to_hub([id](Hub& hub) { hub.accept_bridge(id); });
}
void Server::send_bridge(uint64_t id, std::string text) {
  impl_->post_to_hub(
      [id, text = std::move(text)](Hub& hub) mutable { hub.send_bridge(id, std::move(text)); });
}
void Server::close_bridge(uint64_t id, int code, const std::string& reason) {
  check_close_code("close_bridge", code);
  impl_->post_to_hub([id, code, reason](Hub& hub) { hub.close_bridge(id, code, reason); });
}
// Scene rooms live in shard 0; a room of /rooms/ in the shard its id hashes to.
void Server::set_room_tap(const std::string& room, bool on, bool scene) {
  auto f = [room, on, scene](Hub& hub) { hub.set_room_tap(room, on, scene); };
  if (scene) {
    impl_->post_to_hub(f);
  } else {
    impl_->post_to_room(room, f);
  }
}
void Server::inject_room(const std::string& room, const std::string& identity, std::string body,
                         bool unreliable, bool scene) {
  auto f = [room, identity, body = std::move(body), unreliable, scene](Hub& hub) mutable {
    hub.inject_room(room, identity, std::move(body), unreliable, scene);
  };
  if (scene) {
    impl_->post_to_hub(std::move(f));
  } else {
    impl_->post_to_room(room, std::move(f));
  }
}
void Server::release_room_identity(const std::string& room, const std::string& identity,
                                   bool scene) {
  auto f = [room, identity, scene](Hub& hub) { hub.release_room_identity(room, identity, scene); };
  if (scene) {
    impl_->post_to_hub(f);
  } else {
    impl_->post_to_room(room, f);
  }
}
void Server::kick_room_member(bool scene, const std::string& room, const std::string& address,
                              const std::string& reason, int64_t bar_ms) {
  auto kick = [scene, room, address, reason, bar_ms](Hub& hub) {
    hub.kick_room_member(scene, room, address, reason, bar_ms);
  };
  if (scene) {
    impl_->post_to_hub(kick);  // scene rooms live in shard 0
  } else if (!room.empty()) {
    impl_->post_to_room(room, kick);
  } else {
    impl_->post_to_every_shard(kick);
  }
}
void Server::unbar_room_member(bool scene, const std::string& room, const std::string& address) {
  auto unbar = [scene, room, address](Hub& hub) { hub.unbar_room_member(scene, room, address); };
  if (scene) {
    impl_->post_to_hub(unbar);  // scene rooms live in shard 0
  } else if (!room.empty()) {
    impl_->post_to_room(room, unbar);
  } else {
    impl_->post_to_every_shard(unbar);
  }
}

std::string Server::scene_room_of(const std::string& address) const {
  return impl_->scene_room_of(to_lower_ascii(address));
}

std::vector<std::string> Server::room_members(bool scene, const std::string& room) const {
  return impl_->room_members(scene, room);
}

Stats Server::stats() const {
  return impl_->stats();
}

}  // namespace dclcomms::ws
