// Plain HTTP on the WebSocket port: upgrade validation (the hub says which
// path is which session kind, with its frame limit), /health/live answered
// here, every other request handed to the embedder as an HttpRequest and
// answered with respond() (or 503 after http_timeout_ms, or at stop()).
//
// Keep-alive (http_keep_alive_ms > 0): websocketpp closes the socket after
// every plain HTTP answer, so an accepted connection is first looked at by an
// HttpSession: it peeks (MSG_PEEK: nothing is consumed) at the next request's
// head. A plain HTTP/1.1 request (no Upgrade, not a WebSocket path, no
// Connection: close, no Transfer-Encoding or Expect) is read by the session
// with websocketpp's own request parser (same 400/413/431 answers), routed as
// on_http does, answered with Content-Length and the connection kept for the
// next request, idle at most http_keep_alive_ms. Anything else, at any request
// boundary, is handed to websocketpp untouched (con->start()): upgrades, and
// plain requests it answers and closes as before. With sharded rooms, a
// request to /rooms/<id> is handed to the endpoint of that room's shard
// instead (migrate(): the socket moves to the shard's thread). The session's handlers run
// on the connection's strand, so admission's eviction (interrupt/terminate on
// that strand) closes an idle session like any other connection; between two
// requests a session is idle for admission (http_idle), which evicts such
// connections first.

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <string_view>

#include "server_impl.hpp"

namespace dclcomms::ws {

using detail::ConnPtr;
using detail::Hdl;

std::pair<std::string, std::string> Server::Impl::split_resource(const std::string& resource) {
  auto q = resource.find('?');
  if (q == std::string::npos) return {resource, ""};
  return {resource.substr(0, q), resource.substr(q + 1)};
}

bool Server::Impl::on_validate(Hdl h) {
  ConnPtr con = ep_.get_con_from_hdl(h);
  auto [path, query] = split_resource(con->get_resource());
  // The processor exists here and reads no frame before the upgrade
  // completes, so each session gets its kind's frame limit from the start.
  if (reserve_only(con.get())) {  // past max_connections: no WebSocket sessions
    con->set_status(websocketpp::http::status_code::service_unavailable);
    con->replace_header("Access-Control-Allow-Origin", "*");
    con->replace_header("Content-Type", "application/json");
    con->replace_header("Retry-After", "1");
    con->set_body(R"({"error":"Service Unavailable: connection limit reached"})");
    return false;
  }
  if (auto kind = hub_.kind_of(path)) {
    con->set_max_message_size(hub_.frame_limit(*kind));
    // Island rooms are sharded; scene rooms (/scene-rooms/) all live in shard 0.
    if (*kind == Hub::Kind::Room && path.rfind("/rooms/", 0) == 0) {
      size_t shard = shard_of_room(path.substr(std::string("/rooms/").size()));
      if (shard != 0) route(con, *shards_[shard]);
    }
    return true;
  }
  con->set_status(websocketpp::http::status_code::not_found);
  con->replace_header("Access-Control-Allow-Origin", "*");
  con->replace_header("Content-Type", "application/json");
  con->set_body(R"({"error":"Not Found"})");
  return false;
}

void Server::Impl::on_http(Hdl h) {
  ConnPtr con = ep_.get_con_from_hdl(h);
  auto [path, query] = split_resource(con->get_resource());
  con->replace_header("Access-Control-Allow-Origin", "*");
  // websocketpp closes the socket after every HTTP response (no keep-alive):
  // say so, or clients reuse a dead connection.
  con->replace_header("Connection", "close");
  HttpRequest req;
  req.method = con->get_request().get_method();
  req.path = path;
  req.query = query;
  for (const auto& [k, v] : con->get_request().get_headers()) req.headers.emplace_back(k, v);
  req.body = con->get_request_body();
  std::lock_guard<std::mutex> lock(mu_);
  http_request(con.get(), std::move(req), PendingHttp{con, nullptr, nullptr});
}

void Server::Impl::http_request(const void* key, HttpRequest req, PendingHttp p) {
  if (req.path == "/health/live") {
    answer(p, 200, {{"Content-Type", "text/plain"}}, "alive");
    return;
  }
  // Connections past max_connections serve what an operator needs to see a
  // realm at its limit, nothing else.
  if (req.path != "/health/ready" && req.path != "/status" && req.path != "/metrics" &&
      reserve_only(key)) {
    answer(p, 503, {{"Content-Type", "application/json"}, {"Retry-After", "1"}},
           R"({"error":"Service Unavailable: connection limit reached"})");
    return;
  }
  if (hub_.is_shut_down()) {
    answer(p, 503, {{"Content-Type", "application/json"}}, R"({"error":"Service Unavailable"})");
    return;
  }
  if (p.con) p.con->defer_http_response();
  uint64_t id = next_http_id_++;
  req.request_id = id;
  p.timer = std::make_unique<asio::steady_timer>(ep_.get_io_service());
  p.timer->expires_after(std::chrono::milliseconds(cfg_.http_timeout_ms));
  p.timer->async_wait([this, id](const asio::error_code& ec) {
    if (ec) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = http_.find(id);
    if (it == http_.end()) return;
    answer(it->second, 503, {}, R"({"error":"Service Unavailable"})");
    http_.erase(it);
  });
  http_.emplace(id, std::move(p));
  hub_.push_event(std::move(req));
}

void Server::Impl::respond(uint64_t id, int status,
                           std::vector<std::pair<std::string, std::string>> headers,
                           std::string body) {
  post([this, id, status, headers = std::move(headers), body = std::move(body)]() mutable {
    auto it = http_.find(id);
    if (it == http_.end()) return;
    answer(it->second, status, headers, body);
    http_.erase(it);
  });
}

// ---- keep-alive sessions ----------------------------------------------------------

class HttpSession final : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(Server::Impl& server, ConnPtr con)
      : server_(server),
        con_(std::move(con)),
        strand_(con_->get_strand()),
        timer_(server.ep_.get_io_service()) {}

  // Waits (on the strand) for the next request's head.
  void next() {
    auto self = shared_from_this();
    // After an answer the connection is idle: admission closes it first when
    // room is needed (a new connection does not count as idle).
    if (requests_ > 0) server_.http_idle(con_.get(), true);
    // The first request gets websocketpp's own open-handshake time, later
    // ones the keep-alive time.
    timer_.expires_after(std::chrono::milliseconds(requests_ == 0 ? 5000 : ka_ms()));
    timer_.async_wait(strand_->wrap([self](const asio::error_code& ec) {
      if (!ec) self->end();  // idle: the pending wait fails, nothing else runs
    }));
    socket().async_wait(asio::ip::tcp::socket::wait_read,
                        strand_->wrap([self](const asio::error_code& ec) { self->readable(ec); }));
  }

  // The embedder's answer (from answer(), under the server's lock): written on
  // the strand; the connection then waits for the next request unless the
  // answer closes it.
  void respond(int status, const std::vector<std::pair<std::string, std::string>>& headers,
               const std::string& body) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " +
                      websocketpp::http::status_code::get_string(
                          static_cast<websocketpp::http::status_code::value>(status)) +
                      "\r\n";
    bool close = false, cors = false;
    for (const auto& [k, v] : headers) {
      if (iequals(k, "Content-Length")) continue;
      if (iequals(k, "Connection")) close = close || iequals(v, "close");
      cors = cors || iequals(k, "Access-Control-Allow-Origin");
      out += k + ": " + v + "\r\n";
    }
    if (!cors) out += "Access-Control-Allow-Origin: *\r\n";
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    out += body;
    auto self = shared_from_this();
    asio::post(*strand_, [self, out = std::move(out), close]() mutable {
      self->write(std::move(out), close);
    });
  }

  // Closes the connection (server stop). Any thread.
  void shutdown() {
    auto self = shared_from_this();
    asio::post(*strand_, [self] { self->end(); });
  }

 private:
  static bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) ==
                    std::tolower(static_cast<unsigned char>(y));
           });
  }
  int64_t ka_ms() const { return server_.cfg_.http_keep_alive_ms; }
  asio::ip::tcp::socket& socket() { return con_->get_raw_socket(); }

  // The head is readable: peek at it and decide who reads it.
  void readable(const asio::error_code& ec) {
    if (done_) return;
    if (ec) {
      end();
      return;
    }
    char buf[16384];
    ssize_t n = ::recv(socket().native_handle(), buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      socket().async_wait(asio::ip::tcp::socket::wait_read,
                          strand_->wrap([self = shared_from_this()](const asio::error_code& e) {
                            self->readable(e);
                          }));
      return;
    }
    if (n <= 0) {  // closed by the client (or reset) between requests
      end();
      return;
    }
    if (requests_ > 0) server_.http_idle(con_.get(), false);  // a request under way
    if (size_t head_len = keep(std::string_view(buf, static_cast<size_t>(n)))) {
      // The timer keeps running until the request is whole (a slow body ends
      // the connection like an idle one). Exactly the head, then exactly the
      // body are read, so the socket stays at the next request's first byte.
      parser_ = std::make_unique<websocketpp::http::parser::request>();
      parser_->set_max_body_size(server_.cfg_.http_max_body_bytes);
      read(head_len);
    } else {
      hand_over();
    }
  }

  // The length of the head when this session serves the request whose first
  // bytes are head (0: websocketpp does): a whole head (else websocketpp reads
  // it, however slowly it arrives) of a plain HTTP/1.1 request it can answer
  // and keep the connection after. Sets body_left_ (its Content-Length).
  size_t keep(std::string_view head) {
    size_t end = head.find("\r\n\r\n");
    if (end == std::string_view::npos) return 0;
    size_t head_len = end + 4;
    head = head.substr(0, end + 2);
    body_left_ = 0;
    bool has_length = false;
    size_t eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    size_t sp1 = line.find(' ');
    size_t sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 <= sp1 || line.substr(sp2 + 1) != "HTTP/1.1") {
      return 0;
    }
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string path(target.substr(0, target.find('?')));
    if (server_.hub_.kind_of(path)) {  // a WebSocket path: websocketpp's, on its shard's thread
      shard_ = server_.shard_of_path(path);
      return 0;
    }
    for (size_t pos = eol + 2; pos < head.size();) {
      size_t next = head.find("\r\n", pos);
      std::string_view h = head.substr(pos, next - pos);
      pos = next + 2;
      size_t colon = h.find(':');
      if (colon == std::string_view::npos) return 0;  // websocketpp answers 400
      std::string_view name = h.substr(0, colon);
      std::string_view value = h.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
        value.remove_prefix(1);
      }
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
        value.remove_suffix(1);
      }
      if (iequals(name, "Upgrade") || iequals(name, "Transfer-Encoding") ||
          iequals(name, "Expect")) {
        return 0;
      }
      if (iequals(name, "Connection") && !iequals(value, "keep-alive")) return 0;
      if (iequals(name, "Content-Length")) {
        if (has_length || value.empty() || value.size() > 15 ||
            !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          return 0;  // websocketpp answers it as before
        }
        has_length = true;
        body_left_ = std::stoull(std::string(value));
      }
    }
    return head_len;
  }

  // websocketpp takes the connection from here (this request is still unread).
  void hand_over() {
    timer_.cancel();
    done_ = true;
    forget();
    if (shard_ != 0) {
      server_.migrate(con_, shard_);
    } else {
      con_->start();
    }
  }

  void read(size_t n) {
    auto self = shared_from_this();
    asio::async_read(
        socket(), asio::buffer(in_.data(), std::min(n, in_.size())),
        strand_->wrap([self](const asio::error_code& ec, size_t got) { self->on_read(ec, got); }));
  }

  void on_read(const asio::error_code& ec, size_t n) {
    if (done_) return;
    if (ec) {
      end();
      return;
    }
    bool head = !parsed_head_;
    try {
      parser_->consume(in_.data(), n);
    } catch (const websocketpp::http::exception& e) {
      // The answers websocketpp gives (400, 413, 431), then close.
      if (e.m_error_code == websocketpp::http::status_code::request_entity_too_large) {
        std::lock_guard<std::mutex> lock(server_.adm_mu_);
        ++server_.http_too_large_;
      }
      int code = static_cast<int>(e.m_error_code);
      std::string reason = websocketpp::http::status_code::get_string(e.m_error_code);
      respond(code, {{"Content-Type", "application/json"}, {"Connection", "close"}},
              R"({"error":")" + reason + "\"}");
      return;
    }
    parsed_head_ = true;
    if (!head) body_left_ -= std::min<uint64_t>(body_left_, n);
    if (!parser_->ready()) {
      if (body_left_ == 0) {  // the parser wants more than Content-Length said
        respond(400, {{"Content-Type", "application/json"}, {"Connection", "close"}},
                R"({"error":"Bad Request"})");
        return;
      }
      read(static_cast<size_t>(body_left_));
      return;
    }
    parsed_head_ = false;
    timer_.cancel();
    ++requests_;
    auto [path, query] = Server::Impl::split_resource(parser_->get_uri());
    HttpRequest req;
    req.method = parser_->get_method();
    req.path = path;
    req.query = query;
    for (const auto& [k, v] : parser_->get_headers()) req.headers.emplace_back(k, v);
    req.body = parser_->get_body();
    parser_.reset();
    std::lock_guard<std::mutex> lock(server_.mu_);
    server_.http_request(con_.get(), std::move(req),
                         Server::Impl::PendingHttp{nullptr, nullptr, shared_from_this()});
  }

  void write(std::string out, bool close) {
    if (done_) return;
    out_ = std::move(out);
    auto self = shared_from_this();
    asio::async_write(socket(), asio::buffer(out_),
                      strand_->wrap([self, close](const asio::error_code& ec, size_t) {
                        if (self->done_) return;
                        if (ec || close || self->server_.stopped_.load()) {
                          self->end();
                        } else {
                          self->next();
                        }
                      }));
  }

  // Closes the connection and releases its admission slot (once).
  void end() {
    if (done_) return;
    done_ = true;
    timer_.cancel();
    asio::error_code ignored;
    socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket().close(ignored);
    forget();
    server_.on_terminated(con_);
  }

  void forget() {
    std::lock_guard<std::mutex> lock(server_.mu_);
    server_.sessions_.erase(this);
  }

  Server::Impl& server_;
  ConnPtr con_;
  detail::Endpoint::connection_type::strand_ptr strand_;
  asio::steady_timer timer_;
  std::unique_ptr<websocketpp::http::parser::request> parser_;
  std::array<char, 16384> in_{};
  std::string out_;
  uint64_t requests_ = 0;
  uint64_t body_left_ = 0;  // body bytes of this request not read yet
  size_t shard_ = 0;        // the shard whose endpoint serves the upgrade
  bool parsed_head_ = false;
  bool done_ = false;
};

void Server::Impl::http_idle(const void* key, bool idle) {
  std::lock_guard<std::mutex> lock(adm_mu_);
  adm_->idle(key, idle);
}

void Server::Impl::serve(const ConnPtr& con) {
  if (cfg_.http_keep_alive_ms <= 0) {
    con->start();
    return;
  }
  auto s = std::make_shared<HttpSession>(*this, con);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (hub_.is_shut_down()) {
      con->start();  // websocketpp answers it as before
      return;
    }
    sessions_.insert(s.get());
  }
  s->next();
}

void Server::Impl::close_http_sessions() {
  for (HttpSession* s : sessions_) s->shutdown();
}

void Server::Impl::answer(PendingHttp& p, int status,
                          const std::vector<std::pair<std::string, std::string>>& h,
                          const std::string& body) {
  if (p.timer) p.timer->cancel();
  if (p.session) {
    p.session->respond(status, h, body);
    return;
  }
  p.con->set_status(static_cast<websocketpp::http::status_code::value>(status));
  for (const auto& [k, v] : h) p.con->replace_header(k, v);
  p.con->set_body(body);
  websocketpp::lib::error_code ec;
  p.con->send_http_response(ec);
}

}  // namespace dclcomms::ws
