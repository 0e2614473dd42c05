// Plain HTTP on the WebSocket port: upgrade validation (the hub says which
// path is which session kind, with its frame limit), /health/live answered
// here, every other request handed to the embedder as an HttpRequest and
// answered with respond() (or 503 after http_timeout_ms, or at stop()).

#include <chrono>

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
  if (path == "/health/live") {
    con->set_status(websocketpp::http::status_code::ok);
    con->replace_header("Content-Type", "text/plain");
    con->set_body("alive");
    return;
  }
  // Connections past max_connections serve what an operator needs to see a
  // realm at its limit, nothing else.
  if (path != "/health/ready" && path != "/status" && path != "/metrics" &&
      reserve_only(con.get())) {
    con->set_status(websocketpp::http::status_code::service_unavailable);
    con->replace_header("Content-Type", "application/json");
    con->replace_header("Retry-After", "1");
    con->set_body(R"({"error":"Service Unavailable: connection limit reached"})");
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (hub_.is_shut_down()) {
    con->set_status(websocketpp::http::status_code::service_unavailable);
    con->set_body(R"({"error":"Service Unavailable"})");
    return;
  }
  con->defer_http_response();
  uint64_t id = next_http_id_++;
  HttpRequest req;
  req.request_id = id;
  req.method = con->get_request().get_method();
  req.path = path;
  req.query = query;
  for (const auto& [k, v] : con->get_request().get_headers()) req.headers.emplace_back(k, v);
  req.body = con->get_request_body();
  PendingHttp p{con, std::make_unique<asio::steady_timer>(ep_.get_io_service())};
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

void Server::Impl::answer(PendingHttp& p, int status,
                          const std::vector<std::pair<std::string, std::string>>& h,
                          const std::string& body) {
  if (p.timer) p.timer->cancel();
  p.con->set_status(static_cast<websocketpp::http::status_code::value>(status));
  for (const auto& [k, v] : h) p.con->replace_header(k, v);
  p.con->set_body(body);
  websocketpp::lib::error_code ec;
  p.con->send_http_response(ec);
}

}  // namespace dclcomms::ws
