// /bus sessions (control-plane.md 4): after the connector's handshake
// (connector.cpp), text frames in as BusFrame events and out with send_bus;
// the JSON inside is the embedder's.

#include "hub.hpp"

namespace dclcomms::ws {

void Hub::send_bus(const std::string& address, std::string text) {
  auto it = bus_reg_.find(address);
  if (it == bus_reg_.end()) return;
  SessionPtr s = it->second;  // a copy: closing it erases the registry entry
  if (deliver(s, env_.frame(std::move(text), FrameType::Text))) ++bc_.frames_sent;
}

void Hub::close_bus(const std::string& address, int code, const std::string& reason) {
  auto it = bus_reg_.find(address);
  if (it == bus_reg_.end()) return;
  SessionPtr s = it->second;  // a copy: closing it erases the registry entry
  ++bc_.closed_by_server;
  close_session(s, code, reason);
}

void Hub::handle_bus(const SessionPtr& s, detail::Frame f) {
  if (f.type != FrameType::Text) {
    ++bc_.closed_protocol;
    close_session(s, 1003, "bus frames must be text (JSON)");
    return;
  }
  if (!s->bus_frames.accept(env_.steady_ms(), cfg_.bus_max_frames_per_s)) {
    ++bc_.closed_rate;
    close_session(
        s, 4009,
        "rate limit: more than " + std::to_string(cfg_.bus_max_frames_per_s) + " frames/s");
    return;
  }
  ++bc_.frames_received;
  push_event(BusFrame{s->address, std::move(f.data)});
}

}  // namespace dclcomms::ws
