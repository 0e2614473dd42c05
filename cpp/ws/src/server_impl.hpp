#pragma once
// Private to cpp/ws: the websocketpp endpoint (server.cpp, http.cpp) around
// the socket-free Hub (hub.hpp): it owns the listening socket, the I/O and
// auth threads and the eventfd, implements Environment and Link for the hub,
// answers plain HTTP, and serializes every hub entry with mu_.
//
// Locking: every socket handler, timer and posted task takes mu_ (the state
// lock) for its whole body; the hub's event queue lock is a leaf taken under
// or without mu_; websocketpp's per-connection locks are only taken inside
// con->send()/close(), i.e. after mu_. websocketpp never calls our handlers
// from inside send()/close() (their effects complete asynchronously), so the
// order mu_ -> event queue / websocketpp locks is the only one.

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <websocketpp/config/asio_no_tls.hpp>
#include <websocketpp/server.hpp>

#include "hub.hpp"
#include "link.hpp"
#include "worker_pool.hpp"

namespace dclcomms::ws {

namespace detail {
using Endpoint = websocketpp::server<websocketpp::config::asio>;
using ConnPtr = Endpoint::connection_ptr;
using Hdl = websocketpp::connection_hdl;
using MessagePtr = Endpoint::message_ptr;
}  // namespace detail

class WsppLink;

class Server::Impl final : public Environment {
 public:
  explicit Impl(Config cfg);  // validate(cfg) first
  ~Impl() override;

  uint16_t start();
  void stop();
  uint16_t port() const noexcept { return port_; }
  int event_fd() const noexcept { return efd_; }
  std::vector<Event> poll(size_t max_events) { return hub_.poll(max_events); }
  void respond(uint64_t id, int status, std::vector<std::pair<std::string, std::string>> headers,
               std::string body);
  Stats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return hub_.stats();
  }
  bool feed_wants_key() const {
    std::lock_guard<std::mutex> lock(mu_);
    return hub_.feed_wants_key();
  }
  // Runs f(hub) on an I/O thread under mu_ (nothing once stopped).
  template <class F>
  void post_to_hub(F&& f) {
    post([this, f = std::forward<F>(f)]() mutable { f(hub_); });
  }
  void set_deny_list(std::unordered_set<std::string> lowercase) {
    std::lock_guard<std::mutex> lock(mu_);
    hub_.set_deny_list(std::move(lowercase));
  }

  // Environment
  int64_t unix_ms() override;
  int64_t steady_ms() override;
  FramePtr frame(std::string payload, FrameType type) override;
  void verify(std::string chain_json, std::string challenge, VerifyDone done) override;
  void events_pending(bool pending) override;

 private:
  friend class WsppLink;
  struct PendingHttp {
    detail::ConnPtr con;
    std::unique_ptr<asio::steady_timer> timer;
  };

  // Runs f on an I/O thread under mu_ (nothing once stopped).
  template <class F>
  void post(F&& f) {
    if (!started_.load() || stopped_.load()) return;
    asio::post(ep_.get_io_service(), [this, f = std::forward<F>(f)]() mutable {
      std::lock_guard<std::mutex> lock(mu_);
      f();
    });
  }
  void run_io();
  void schedule_idle_sweep();
  // Corking (server.cpp, WsppLink): links with frames queued this I/O loop
  // turn; the first one posts the turn's flush. Under mu_.
  void dirty(WsppLink* link);
  void undirty(WsppLink* link);
  void flush_dirty();

  // websocketpp handlers (server.cpp; HTTP in http.cpp)
  static std::pair<std::string, std::string> split_resource(const std::string& resource);
  bool on_validate(detail::Hdl h);
  void on_open(detail::Hdl h);
  void on_message(detail::Hdl h, detail::MessagePtr msg);
  void on_closed(detail::Hdl h);
  void on_http(detail::Hdl h);
  void answer(PendingHttp& p, int status, const std::vector<std::pair<std::string, std::string>>& h,
              const std::string& body);

  const Config cfg_;
  detail::Endpoint ep_;
  std::vector<std::thread> io_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<asio::steady_timer> idle_timer_;
  std::atomic<bool> started_{false};
  std::atomic<bool> stopped_{false};
  uint16_t port_ = 0;
  int efd_ = -1;

  mutable std::mutex mu_;         // state: the dirty list, the hub and everything below
  std::vector<WsppLink*> dirty_;  // declared before hub_: its links unlist themselves
  Hub hub_;
  std::unordered_map<uint64_t, PendingHttp> http_;
  uint64_t next_http_id_ = 1;
};

}  // namespace dclcomms::ws
