#pragma once
// WebSocket clients over real sockets for tests (header-only: websocketpp's
// client on one asio thread per SocketClients). Each Peer records the frames
// it received, in order, and how it closed. Sends are posted to the client's
// own thread, so a test may send from any thread. No GoogleTest.

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

#include <websocketpp/client.hpp>
#include <websocketpp/config/asio_no_tls_client.hpp>

#include "clients.hpp"
#include "dclcomms/codec/value.hpp"

namespace dclcomms::ws::testing {

// One client connection: frames received, open/closed state, close code.
struct Peer {
  std::mutex m;
  std::condition_variable cv;
  std::deque<std::string> frames;
  websocketpp::connection_hdl hdl;
  bool open = false, done = false;
  int close_code = 0;
};

class SocketClients {
 public:
  using Client = websocketpp::client<websocketpp::config::asio_client>;
  static constexpr std::chrono::milliseconds kWait{20'000};

  SocketClients() {
    client_.clear_access_channels(websocketpp::log::alevel::all);
    client_.clear_error_channels(websocketpp::log::elevel::all);
    client_.init_asio();
    client_.start_perpetual();
    thread_ = std::thread([this] { client_.run(); });
  }
  ~SocketClients() {
    client_.stop_perpetual();
    std::vector<std::shared_ptr<Peer>> peers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      peers = peers_;
    }
    for (auto& p : peers) {
      asio::post(client_.get_io_service(), [this, p] {
        std::lock_guard<std::mutex> lock(p->m);
        if (p->open && !p->done) {
          websocketpp::lib::error_code ec;
          client_.close(p->hdl, websocketpp::close::status::going_away, "", ec);
        }
      });
    }
    // Closed sockets end their connections; the thread returns once none is left.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    for (auto& p : peers) {
      std::unique_lock<std::mutex> lock(p->m);
      p->cv.wait_until(lock, deadline, [&] { return p->done || !p->open; });
    }
    client_.stop();
    thread_.join();
  }
  SocketClients(const SocketClients&) = delete;
  SocketClients& operator=(const SocketClients&) = delete;

  // Opens url; throws when it cannot within kWait.
  std::shared_ptr<Peer> connect(const std::string& url) {
    auto peer = std::make_shared<Peer>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      peers_.push_back(peer);
    }
    websocketpp::lib::error_code ec;
    Client::connection_ptr con;
    {
      std::lock_guard<std::mutex> lock(connect_mu_);
      con = client_.get_connection(url, ec);
    }
    if (ec) throw std::runtime_error("bad url " + url + ": " + ec.message());
    {
      std::lock_guard<std::mutex> lock(peer->m);
      peer->hdl = con->get_handle();
    }
    con->set_open_handler([peer](websocketpp::connection_hdl) {
      std::lock_guard<std::mutex> lock(peer->m);
      peer->open = true;
      peer->cv.notify_all();
    });
    con->set_message_handler([peer](websocketpp::connection_hdl, Client::message_ptr msg) {
      std::lock_guard<std::mutex> lock(peer->m);
      peer->frames.push_back(msg->get_payload());
      peer->cv.notify_all();
    });
    auto finished = [this, peer](websocketpp::connection_hdl h) {
      auto c = client_.get_con_from_hdl(h);
      std::lock_guard<std::mutex> lock(peer->m);
      peer->done = true;
      peer->close_code = c->get_remote_close_code();
      peer->cv.notify_all();
    };
    con->set_close_handler(finished);
    con->set_fail_handler(finished);
    asio::post(client_.get_io_service(), [this, con] { client_.connect(con); });
    std::unique_lock<std::mutex> lock(peer->m);
    if (!peer->cv.wait_for(lock, kWait, [&] { return peer->open || peer->done; }) || !peer->open) {
      throw std::runtime_error("could not open " + url);
    }
    return peer;
  }

  // Queues a binary frame (on the client thread; a closed peer drops it).
  void send(const std::shared_ptr<Peer>& p, std::string frame) {
    asio::post(client_.get_io_service(), [this, p, frame = std::move(frame)] {
      websocketpp::connection_hdl hdl;
      {
        std::lock_guard<std::mutex> lock(p->m);
        hdl = p->hdl;
      }
      websocketpp::lib::error_code ec;
      client_.send(hdl, frame, websocketpp::frame::opcode::binary, ec);
    });
  }
  // Starts the client's close handshake with code.
  void close(const std::shared_ptr<Peer>& p, int code) {
    asio::post(client_.get_io_service(), [this, p, code] {
      websocketpp::connection_hdl hdl;
      {
        std::lock_guard<std::mutex> lock(p->m);
        hdl = p->hdl;
      }
      websocketpp::lib::error_code ec;
      client_.close(hdl, static_cast<websocketpp::close::status::value>(code), "", ec);
    });
  }

  // The next frame decoded with decode whose oneof member is `want`, skipping
  // others (kept in `skipped` when given); nullopt after wait, throws when the
  // connection closed first.
  template <typename Decode>
  static std::optional<codec::Value> next(Peer& p, Decode decode, const std::string& want,
                                          std::chrono::milliseconds wait = kWait,
                                          std::vector<codec::Value>* skipped = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    std::unique_lock<std::mutex> lock(p.m);
    for (;;) {
      if (!p.cv.wait_until(lock, deadline, [&] { return !p.frames.empty() || p.done; })) {
        return std::nullopt;
      }
      if (p.frames.empty()) {
        throw std::runtime_error("closed " + std::to_string(p.close_code) + " waiting for " + want);
      }
      codec::Value v = decode(p.frames.front());
      p.frames.pop_front();
      if (member(v) == want) return v;
      if (skipped) skipped->push_back(std::move(v));
    }
  }
  // The close code once closed (-1: still open after wait).
  static int closed(Peer& p, std::chrono::milliseconds wait = kWait) {
    std::unique_lock<std::mutex> lock(p.m);
    if (!p.cv.wait_for(lock, wait, [&] { return p.done; })) return -1;
    return p.close_code;
  }
  // Every frame received so far (taken out of the peer).
  static std::deque<std::string> take(Peer& p) {
    std::lock_guard<std::mutex> lock(p.m);
    std::deque<std::string> out;
    out.swap(p.frames);
    return out;
  }

 private:
  Client client_;
  std::thread thread_;
  std::mutex mu_, connect_mu_;
  std::vector<std::shared_ptr<Peer>> peers_;
};

}  // namespace dclcomms::ws::testing
