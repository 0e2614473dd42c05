// Python bindings for the ws area: dclcomms._core.WsServer, wrapped by
// dclcomms.ws.Server (the public API).

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dclcomms/error.hpp"
#include "dclcomms/ws/server.hpp"
#include "registration.hpp"

namespace py = pybind11;

namespace dclcomms::bindings {

namespace {

using ws::Server;

py::object event_to_python(ws::Event& ev) {
  if (auto* r = std::get_if<ws::HttpRequest>(&ev)) {
    py::dict headers;
    for (const auto& [k, v] : r->headers) headers[py::str(k)] = py::str(v);
    return py::make_tuple("http", r->request_id, r->method, r->path, r->query, headers,
                          py::bytes(r->body));
  }
  if (auto* c = std::get_if<ws::PeerConnected>(&ev)) return py::make_tuple("connected", c->address);
  if (auto* d = std::get_if<ws::PeerDisconnected>(&ev)) {
    return py::make_tuple("disconnected", d->address);
  }
  if (auto* f = std::get_if<ws::BusFrame>(&ev)) {
    // websocketpp only delivers text frames that are valid UTF-8.
    return py::make_tuple("bus_frame", f->address, py::str(f->text));
  }
  if (auto* o = std::get_if<ws::BusOpened>(&ev)) return py::make_tuple("bus_opened", o->address);
  if (auto* c = std::get_if<ws::BusClosed>(&ev)) return py::make_tuple("bus_closed", c->address);
  auto& hb = std::get<ws::Heartbeats>(ev);
  const auto n = static_cast<py::ssize_t>(hb.addresses.size());
  py::array_t<float> positions({n, static_cast<py::ssize_t>(3)});
  std::copy(hb.positions.begin(), hb.positions.end(), positions.mutable_data());
  py::array_t<int64_t> received(n);
  std::copy(hb.received_ms.begin(), hb.received_ms.end(), received.mutable_data());
  py::list addresses(n), desired(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    addresses[i] = py::str(hb.addresses[i]);
    const auto& d = hb.desired_rooms[i];
    desired[i] = d ? py::object(py::str(*d)) : py::object(py::none());
  }
  return py::make_tuple("heartbeats", addresses, positions, desired, received);
}

}  // namespace

void register_ws(py::module_& m) {
  py::class_<Server>(
      m, "WsServer",
      "WebSocket server core: connector (/ws), RFC-5 rooms (/rooms/<id>), bus (/bus)")
      .def(py::init([](std::string host, int port, int io_threads, int auth_threads,
                       size_t max_frame_bytes, bool connector,
                       int64_t connector_handshake_timeout_ms, int heartbeat_max_per_s,
                       size_t connector_max_queued_bytes, bool rooms,
                       int64_t rooms_handshake_timeout_ms, size_t rooms_max_users,
                       size_t rooms_soft_limit_bytes, size_t rooms_hard_limit_bytes,
                       std::optional<std::string> ws_room_secret, bool ws_room_require_token,
                       int64_t http_timeout_ms, size_t max_pending_frames, int64_t idle_timeout_ms,
                       bool bus, int bus_max_frames_per_s, size_t bus_max_frame_bytes,
                       int rooms_sender_max_msgs_per_s, size_t rooms_sender_max_bytes_per_s) {
             if (port < 0 || port > 65535) {
               throw Error(ErrorKind::Config, "invalid_parameter", "port must be in 0..65535");
             }
             ws::Config c;
             c.host = std::move(host);
             c.port = static_cast<uint16_t>(port);
             c.io_threads = io_threads;
             c.auth_threads = auth_threads;
             c.max_frame_bytes = max_frame_bytes;
             c.connector = connector;
             c.connector_handshake_timeout_ms = connector_handshake_timeout_ms;
             c.heartbeat_max_per_s = heartbeat_max_per_s;
             c.connector_max_queued_bytes = connector_max_queued_bytes;
             c.rooms = rooms;
             c.rooms_handshake_timeout_ms = rooms_handshake_timeout_ms;
             c.rooms_max_users = rooms_max_users;
             c.rooms_soft_limit_bytes = rooms_soft_limit_bytes;
             c.rooms_hard_limit_bytes = rooms_hard_limit_bytes;
             c.ws_room_secret = std::move(ws_room_secret);
             c.ws_room_require_token = ws_room_require_token;
             c.http_timeout_ms = http_timeout_ms;
             c.max_pending_frames = max_pending_frames;
             c.idle_timeout_ms = idle_timeout_ms;
             c.bus = bus;
             c.bus_max_frames_per_s = bus_max_frames_per_s;
             c.bus_max_frame_bytes = bus_max_frame_bytes;
             c.rooms_sender_max_msgs_per_s = rooms_sender_max_msgs_per_s;
             c.rooms_sender_max_bytes_per_s = rooms_sender_max_bytes_per_s;
             return std::make_unique<Server>(std::move(c));
           }),
           py::kw_only(), py::arg("host"), py::arg("port"), py::arg("io_threads"),
           py::arg("auth_threads"), py::arg("max_frame_bytes"), py::arg("connector"),
           py::arg("connector_handshake_timeout_ms"), py::arg("heartbeat_max_per_s"),
           py::arg("connector_max_queued_bytes"), py::arg("rooms"),
           py::arg("rooms_handshake_timeout_ms"), py::arg("rooms_max_users"),
           py::arg("rooms_soft_limit_bytes"), py::arg("rooms_hard_limit_bytes"),
           py::arg("ws_room_secret"), py::arg("ws_room_require_token"), py::arg("http_timeout_ms"),
           py::arg("max_pending_frames"), py::arg("idle_timeout_ms"), py::arg("bus"),
           py::arg("bus_max_frames_per_s"), py::arg("bus_max_frame_bytes"),
           py::arg("rooms_sender_max_msgs_per_s"), py::arg("rooms_sender_max_bytes_per_s"))
      // start/stop touch no Python object; stop joins threads that never take
      // the GIL, so releasing it cannot deadlock.
      .def("start", &Server::start, py::call_guard<py::gil_scoped_release>())
      .def("stop", &Server::stop, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("port", &Server::port)
      .def("fileno", &Server::event_fd)
      .def(
          "poll",
          [](Server& s, size_t max_events) {
            std::vector<ws::Event> events;
            {
              // Only C++ state is touched while draining the queue.
              py::gil_scoped_release release;
              events = s.poll(max_events);
            }
            py::list out;
            for (auto& ev : events) out.append(event_to_python(ev));
            return out;
          },
          py::arg("max_events"))
      .def(
          "respond",
          [](Server& s, uint64_t request_id, int status,
             std::vector<std::pair<std::string, std::string>> headers, std::string body) {
            // Inputs are already C++ values; respond only posts to the I/O thread.
            py::gil_scoped_release release;
            s.respond(request_id, status, std::move(headers), std::move(body));
          },
          py::arg("request_id"), py::arg("status"), py::arg("headers"), py::arg("body"))
      .def(
          "send_island_changed",
          [](Server& s, const std::string& address, std::string island_id, std::string conn_str,
             std::optional<std::string> from_island_id,
             const std::vector<std::pair<std::string, std::tuple<float, float, float>>>& peers) {
            codec::IslandChanged msg;
            msg.island_id = std::move(island_id);
            msg.conn_str = std::move(conn_str);
            msg.from_island_id = std::move(from_island_id);
            msg.peers.reserve(peers.size());
            for (const auto& [id, p] : peers) {
              msg.peers.emplace_back(
                  id, codec::Position{std::get<0>(p), std::get<1>(p), std::get<2>(p)});
            }
            // msg is a C++ copy of the inputs: encoding needs no Python object.
            py::gil_scoped_release release;
            s.send_island_changed(address, msg);
          },
          py::arg("address"), py::arg("island_id"), py::arg("conn_str"), py::arg("from_island_id"),
          py::arg("peers"))
      .def(
          "send_island_changed_message",
          [](Server& s, const std::string& address, const py::bytes& message) {
            std::string data = message;  // copied under the GIL
            py::gil_scoped_release release;
            s.send_island_changed_message(address, std::move(data));
          },
          py::arg("address"), py::arg("message"))
      .def("send_join_island", &Server::send_join_island, py::arg("address"), py::arg("island_id"),
           py::arg("peer_id"), py::call_guard<py::gil_scoped_release>())
      .def("send_left_island", &Server::send_left_island, py::arg("address"), py::arg("island_id"),
           py::arg("peer_id"), py::call_guard<py::gil_scoped_release>())
      .def("kick", &Server::kick, py::arg("address"), py::arg("code"), py::arg("reason"),
           py::call_guard<py::gil_scoped_release>())
      .def("send_bus", &Server::send_bus, py::arg("address"), py::arg("text"),
           py::call_guard<py::gil_scoped_release>())
      .def("close_bus", &Server::close_bus, py::arg("address"), py::arg("code"), py::arg("reason"),
           py::call_guard<py::gil_scoped_release>())
      .def("set_deny_list", &Server::set_deny_list, py::arg("addresses"),
           py::call_guard<py::gil_scoped_release>())
      .def("stats", [](const Server& s) {
        ws::Stats st;
        {
          // Reads C++ counters under the server's lock only.
          py::gil_scoped_release release;
          st = s.stats();
        }
        py::dict connector, rooms, bus;
        for (const auto& [k, v] : st.connector) connector[py::str(k)] = v;
        for (const auto& [k, v] : st.rooms) rooms[py::str(k)] = v;
        for (const auto& [k, v] : st.bus) bus[py::str(k)] = v;
        py::list details;
        for (const auto& [name, count] : st.room_details) {
          py::dict d;
          d["roomName"] = name;
          d["count"] = count;
          details.append(d);
        }
        rooms["details"] = details;
        py::dict out;
        out["connector"] = connector;
        out["rooms"] = rooms;
        out["bus"] = bus;
        return out;
      });
}

}  // namespace dclcomms::bindings
