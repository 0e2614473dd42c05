// libFuzzer target: what the WebSocket port reads from the network before
// and after the upgrade, through the very code the server runs: websocketpp's
// HTTP request parser (with the server's body limit, so an oversized
// Content-Length must be refused from the headers), then the path/query
// helpers the server routes with (room id, access_token), then the RFC 6455
// frame processor (hybi13: masking, fragmentation, UTF-8 of text frames,
// control frames, the message-size limit), each decoded message handed to
// the packet decoders the hub uses.
// Input: byte 0 splits the input into the HTTP request and the frame bytes.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <websocketpp/config/asio_no_tls.hpp>
#include <websocketpp/http/request.hpp>
#include <websocketpp/processors/hybi13.hpp>

#include "dclcomms/codec/fast.hpp"
#include "dclcomms/error.hpp"
#include "dclcomms/ws/limits.hpp"

namespace {

using Cfg = websocketpp::config::asio;
constexpr size_t kMaxBody = 64 * 1024;
constexpr size_t kMaxMessage = 16 * 1024;

void http(std::string_view bytes) {
  websocketpp::http::parser::request req;
  req.set_max_body_size(kMaxBody);
  try {
    size_t used = 0;
    while (used < bytes.size() && !req.ready()) {
      size_t n = req.consume(bytes.data() + used, bytes.size() - used);
      if (n == 0) break;
      used += n;
    }
    // The parser never buffers more than the limit of a body.
    if (req.get_body().size() > kMaxBody) std::abort();
    if (!req.ready()) return;
    const std::string& uri = req.get_uri();
    auto q = uri.find('?');
    std::string path = uri.substr(0, q);
    std::string query = q == std::string::npos ? "" : uri.substr(q + 1);
    if (path.rfind("/rooms/", 0) == 0) dclcomms::ws::is_valid_room_id(path.substr(7));
    bool found = false;
    dclcomms::ws::query_param(query, "access_token", &found);
    // What the endpoint does with an upgrade: detect it, pick the processor by
    // version, validate it and build the 101 answer (SHA-1 of the key).
    if (websocketpp::processor::is_websocket_handshake(req) &&
        websocketpp::processor::get_websocket_version(req) == 13) {
      auto manager = websocketpp::lib::make_shared<Cfg::con_msg_manager_type>();
      Cfg::rng_type rng;
      websocketpp::processor::hybi13<Cfg> proc(false, true, manager, rng);
      if (!proc.validate_handshake(req)) {
        Cfg::response_type res;
        std::vector<std::string> protocols;
        proc.extract_subprotocols(req, protocols);
        if (!proc.process_handshake(req, protocols.empty() ? "" : protocols[0], res)) {
          res.set_status(websocketpp::http::status_code::switching_protocols);
          if (proc.get_raw(res).empty()) std::abort();
        }
      }
    }
  } catch (const websocketpp::http::exception& e) {
    if (e.m_error_code < 400) std::abort();  // every refusal is a 4xx/5xx answer
  }
}

void frames(std::string_view input) {
  std::string bytes(input);  // the processor unmasks in place
  auto manager = websocketpp::lib::make_shared<Cfg::con_msg_manager_type>();
  Cfg::rng_type rng;
  websocketpp::processor::hybi13<Cfg> proc(false, true, manager, rng);
  proc.set_max_message_size(kMaxMessage);
  size_t used = 0;
  while (used < bytes.size()) {
    websocketpp::lib::error_code ec;
    size_t n =
        proc.consume(reinterpret_cast<uint8_t*>(bytes.data() + used), bytes.size() - used, ec);
    if (ec) return;  // the connection is failed with a close code
    if (n == 0) return;
    used += n;
    if (proc.ready()) {
      auto msg = proc.get_message();
      if (!msg) continue;
      const std::string& payload = msg->get_payload();
      if (payload.size() > kMaxMessage) std::abort();
      try {
        dclcomms::codec::decode_client_packet(payload);
      } catch (const dclcomms::Error&) {
      }
      dclcomms::ws::utf8_length(payload);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t split = std::min<size_t>(size - 1, static_cast<size_t>(data[0]) * 8);
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  http(rest.substr(0, split));
  frames(rest.substr(split));
  return 0;
}
