// Python bindings for the ws area: dclcomms._core.WsServer, wrapped by
// dclcomms.ws.Server (the public API).

#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dclcomms/error.hpp"
#include "dclcomms/ws/server.hpp"
#include "registration.hpp"

namespace py = pybind11;

namespace dclcomms::bindings {

namespace {

using ws::Server;

// (kind, ...) tuples: the kind is the WsEventKind member (dclcomms.ws._event
// dispatches on it).
py::object event_to_python(ws::Event& ev) {
  py::object kind = py::cast(ws::kind_of(ev));
  switch (ws::kind_of(ev)) {
    case ws::EventKind::Http: {
      auto& r = std::get<ws::HttpRequest>(ev);
      py::dict headers;
      for (const auto& [k, v] : r.headers) headers[py::str(k)] = py::str(v);
      return py::make_tuple(kind, r.request_id, r.method, r.path, r.query, headers,
                            py::bytes(r.body));
    }
    case ws::EventKind::Connected:
      return py::make_tuple(kind, std::get<ws::PeerConnected>(ev).address);
    case ws::EventKind::Disconnected:
      return py::make_tuple(kind, std::get<ws::PeerDisconnected>(ev).address);
    case ws::EventKind::BusOpened:
      return py::make_tuple(kind, std::get<ws::BusOpened>(ev).address);
    case ws::EventKind::BusFrame: {
      // websocketpp only delivers text frames that are valid UTF-8.
      auto& f = std::get<ws::BusFrame>(ev);
      return py::make_tuple(kind, f.address, py::str(f.text));
    }
    case ws::EventKind::BusClosed:
      return py::make_tuple(kind, std::get<ws::BusClosed>(ev).address);
    case ws::EventKind::BridgeOpened: {
      auto& o = std::get<ws::BridgeOpened>(ev);
      return py::make_tuple(kind, o.id, o.query);
    }
    case ws::EventKind::BridgeFrame: {
      auto& f = std::get<ws::BridgeFrame>(ev);
      return py::make_tuple(kind, f.id, py::str(f.text));
    }
    case ws::EventKind::BridgeClosed:
      return py::make_tuple(kind, std::get<ws::BridgeClosed>(ev).id);
    case ws::EventKind::RoomMessage: {
      auto& r = std::get<ws::RoomMessage>(ev);
      return py::make_tuple(kind, r.room, r.from, py::bytes(r.body), r.unreliable, r.received_ms,
                            r.scene);
    }
    case ws::EventKind::Heartbeats:
      break;
  }
  auto& hb = std::get<ws::Heartbeats>(ev);
  const auto n = static_cast<py::ssize_t>(hb.addresses.size());
  py::array_t<float> positions({n, static_cast<py::ssize_t>(3)});
  std::copy(hb.positions.begin(), hb.positions.end(), positions.mutable_data());
  // The fields of dclcomms.heartbeats.HeartbeatBatch: an absent desired_room is UNSET.
  py::list addresses(n), desired(n);
  py::handle unset(unset_marker());
  for (py::ssize_t i = 0; i < n; ++i) {
    addresses[i] = py::str(hb.addresses[i]);
    const auto& d = hb.desired_rooms[i];
    desired[i] = d ? py::object(py::str(*d)) : py::reinterpret_borrow<py::object>(unset);
  }
  return py::make_tuple(kind, addresses, positions, desired);
}

// ---- ws::Config, bound field by field from DCLCOMMS_WS_CONFIG ----------------------

#define DCLCOMMS_WS_CONFIG_MEMBER(type, name, default_value, minimum, doc) &ws::Config::name,
#define DCLCOMMS_WS_CONFIG_NAME(type, name, default_value, minimum, doc) #name,
#define DCLCOMMS_WS_CONFIG_DOC(type, name, default_value, minimum, doc) doc,
constexpr auto kMembers = std::tuple{DCLCOMMS_WS_CONFIG(DCLCOMMS_WS_CONFIG_MEMBER)};
constexpr const char* kNames[] = {DCLCOMMS_WS_CONFIG(DCLCOMMS_WS_CONFIG_NAME)};
constexpr const char* kDocs[] = {DCLCOMMS_WS_CONFIG(DCLCOMMS_WS_CONFIG_DOC)};
#undef DCLCOMMS_WS_CONFIG_MEMBER
#undef DCLCOMMS_WS_CONFIG_NAME
#undef DCLCOMMS_WS_CONFIG_DOC
constexpr size_t kFields = std::tuple_size_v<decltype(kMembers)>;
static_assert(kFields == std::size(kNames) && kFields == std::size(kDocs));
using AllFields = std::make_index_sequence<kFields>;

// The C++ type of field I.
template <size_t I>
using Field = std::remove_cv_t<
    std::remove_reference_t<decltype(std::declval<ws::Config&>().*std::get<I>(kMembers))>>;

// What Python passes for a field of type T: integers arrive as int64 so a
// negative or too large value gets the field's ConfigError, not a pybind11
// TypeError.
template <class T>
using PyField = std::conditional_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int64_t, T>;

bool in_range(int64_t v, int64_t lo, int64_t hi) {
  return v >= lo && v <= hi;
}

template <class T>
T from_python(const char* name, PyField<T> v) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    using L = std::numeric_limits<T>;
    const int64_t lo = std::is_signed_v<T> ? static_cast<int64_t>(L::min()) : 0;
    const int64_t hi = static_cast<uint64_t>(L::max()) > static_cast<uint64_t>(INT64_MAX)
                           ? INT64_MAX
                           : static_cast<int64_t>(L::max());
    if (!in_range(v, lo, hi)) {
      throw Error(ErrorKind::Config, "invalid_parameter",
                  std::string(name) + ": must be an integer in " + std::to_string(lo) + ".." +
                      std::to_string(hi) + " (got " + std::to_string(v) + ")");
    }
    return static_cast<T>(v);
  } else {
    return v;
  }
}

template <size_t... I>
bool config_equal(const ws::Config& a, const ws::Config& b, std::index_sequence<I...>) {
  return ((a.*std::get<I>(kMembers) == b.*std::get<I>(kMembers)) && ...);
}

template <size_t... I>
py::tuple config_values(const ws::Config& c, std::index_sequence<I...>) {
  return py::make_tuple(c.*std::get<I>(kMembers)...);
}

// Keyword-only constructor with every field, its default shown in the
// signature; validated before it returns.
template <size_t... I>
void def_config_init(py::class_<ws::Config>& cls, std::index_sequence<I...>) {
  static const ws::Config defaults;
  cls.def(py::init([](PyField<Field<I>>... values) {
            ws::Config c;
            ((c.*std::get<I>(kMembers) = from_python<Field<I>>(kNames[I], values)), ...);
            ws::validate(c);
            return c;
          }),
          py::kw_only(), (py::arg(kNames[I]) = defaults.*std::get<I>(kMembers))...);
}

// One read-only property per field; its docstring carries the unit and default.
template <size_t... I>
void def_config_properties(py::class_<ws::Config>& cls, std::index_sequence<I...>) {
  static const ws::Config defaults;
  (cls.def_property_readonly(
       kNames[I], [](const ws::Config& c) { return c.*std::get<I>(kMembers); },
       (std::string(kDocs[I]) +
        " (default: " + std::string(py::repr(py::cast(defaults.*std::get<I>(kMembers)))) + ")")
           .c_str()),
   ...);
}

template <size_t... I>
py::list config_fields(std::index_sequence<I...>) {
  static const ws::Config defaults;
  py::list out;
  (out.append(py::make_tuple(kNames[I], defaults.*std::get<I>(kMembers), kDocs[I])), ...);
  return out;
}

void register_config(py::module_& m) {
  py::class_<ws::Config> cls(m, "WsConfig",
                             "Settings of one WebSocket server (C++ ws::Config): keyword-only, "
                             "read-only; an invalid value raises ConfigError naming the field");
  def_config_init(cls, AllFields{});
  def_config_properties(cls, AllFields{});
  cls.def_static(
         "fields", [] { return config_fields(AllFields{}); },
         "(name, default, doc) of every field, in declaration order")
      .def(
          "__eq__",
          [](const ws::Config& a, const ws::Config& b) { return config_equal(a, b, AllFields{}); },
          py::is_operator(), py::arg("other"))
      .def("__hash__", [](const ws::Config& c) { return py::hash(config_values(c, AllFields{})); })
      .def("__repr__", [](py::handle self) {
        const auto& c = self.cast<const ws::Config&>();
        py::tuple values = config_values(c, AllFields{});
        std::string out = std::string(py::str(py::type::handle_of(self).attr("__name__"))) + "(";
        for (size_t i = 0; i < kFields; ++i) {
          if (i) out += ", ";
          out += std::string(kNames[i]) + "=" + std::string(py::repr(values[i]));
        }
        return out + ")";
      });
}

}  // namespace

void register_ws(py::module_& m) {
  register_config(m);
  py::native_enum<ws::EventKind>(m, "WsEventKind", "enum.IntEnum",
                                 "The kind of a polled event (the first item of its tuple)")
      .value("HTTP", ws::EventKind::Http)
      .value("CONNECTED", ws::EventKind::Connected)
      .value("DISCONNECTED", ws::EventKind::Disconnected)
      .value("HEARTBEATS", ws::EventKind::Heartbeats)
      .value("BUS_OPENED", ws::EventKind::BusOpened)
      .value("BUS_FRAME", ws::EventKind::BusFrame)
      .value("BUS_CLOSED", ws::EventKind::BusClosed)
      .value("BRIDGE_OPENED", ws::EventKind::BridgeOpened)
      .value("BRIDGE_FRAME", ws::EventKind::BridgeFrame)
      .value("BRIDGE_CLOSED", ws::EventKind::BridgeClosed)
      .value("ROOM_MESSAGE", ws::EventKind::RoomMessage)
      .finalize();
  py::class_<Server>(
      m, "WsServer",
      "WebSocket server core: connector (/ws), RFC-5 rooms (/rooms/<id>), bus (/bus)")
      .def(py::init([](const ws::Config& config) { return std::make_unique<Server>(config); }),
           py::arg("config"))
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
          [](Server& s, const std::string& address, const std::string& island_id,
             const std::string& conn_str, const std::optional<std::string>& from_island_id,
             const py::bytes& peers) {
            // peers: the encoded peers entries (e.g. shared by every member of one
            // island). The bytes object is immutable and referenced by this call, so
            // its buffer stays valid while the GIL is released.
            char* data = nullptr;
            py::ssize_t size = 0;
            if (PyBytes_AsStringAndSize(peers.ptr(), &data, &size) != 0) {
              throw py::error_already_set();
            }
            const std::string_view entries(data, static_cast<size_t>(size));
            py::gil_scoped_release release;
            s.send_island_changed(address, island_id, conn_str, from_island_id, entries);
          },
          py::arg("address"), py::arg("island_id"), py::arg("conn_str"), py::arg("from_island_id"),
          py::arg("peers"))
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
      .def(
          "relay_stats",
          [](const Server& s) {
            dclcomms::ws::RelayStats r;
            {
              py::gil_scoped_release nogil;
              r = s.relay_stats();
            }
            py::dict d;
            d["items"] = r.items;
            d["dropped_stopped"] = r.dropped_stopped;
            d["drains"] = r.drains;
            d["last_drain_ns"] = r.last_drain_ns;
            return d;
          },
          "The connector relay's totals (items, dropped_stopped, drains) and last_drain_ns "
          "(CLOCK_MONOTONIC ns at the end of the last hand-over to the sessions)")
      .def("connector_island_of", &Server::connector_island_of, py::arg("address"),
           py::call_guard<py::gil_scoped_release>())
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
      .def(
          "publish_feed",
          [](Server& s, std::string delta, std::string key) {
            py::gil_scoped_release release;
            s.publish_feed(std::move(delta), std::move(key));
          },
          py::arg("delta"), py::arg("key"))
      .def("feed_wants_key", &Server::feed_wants_key, py::call_guard<py::gil_scoped_release>())
      .def("set_deny_list", &Server::set_deny_list, py::arg("addresses"),
           py::call_guard<py::gil_scoped_release>())
      .def("accept_bridge", &Server::accept_bridge, py::arg("id"),
           py::call_guard<py::gil_scoped_release>())
      .def("send_bridge", &Server::send_bridge, py::arg("id"), py::arg("text"),
           py::call_guard<py::gil_scoped_release>())
      .def("close_bridge", &Server::close_bridge, py::arg("id"), py::arg("code"), py::arg("reason"),
           py::call_guard<py::gil_scoped_release>())
      .def("set_room_tap", &Server::set_room_tap, py::arg("room"), py::arg("on"),
           py::arg("scene") = false, py::call_guard<py::gil_scoped_release>())
      .def(
          "inject_room",
          [](Server& s, const std::string& room, const std::string& identity, const py::bytes& body,
             bool unreliable, bool scene) {
            std::string data = body;  // copied under the GIL
            py::gil_scoped_release release;
            s.inject_room(room, identity, std::move(data), unreliable, scene);
          },
          py::arg("room"), py::arg("identity"), py::arg("body"), py::arg("unreliable"),
          py::arg("scene") = false)
      .def("release_room_identity", &Server::release_room_identity, py::arg("room"),
           py::arg("identity"), py::arg("scene") = false, py::call_guard<py::gil_scoped_release>())
      .def("kick_room_member", &Server::kick_room_member, py::arg("scene"), py::arg("room"),
           py::arg("address"), py::arg("reason"), py::arg("bar_ms"),
           py::call_guard<py::gil_scoped_release>())
      .def("unbar_room_member", &Server::unbar_room_member, py::arg("scene"), py::arg("room"),
           py::arg("address"), py::call_guard<py::gil_scoped_release>())
      .def("scene_room_of", &Server::scene_room_of, py::arg("address"),
           py::call_guard<py::gil_scoped_release>())
      .def("room_members", &Server::room_members, py::arg("scene"), py::arg("room"),
           py::call_guard<py::gil_scoped_release>())
      .def("stats", [](const Server& s) {
        ws::Stats st;
        {
          // Reads C++ counters under the server's lock only.
          py::gil_scoped_release release;
          st = s.stats();
        }
        py::dict connector, rooms, bus, bridge, feed, server;
        for (const auto& [k, v] : st.server) server[py::str(k)] = v;
        for (const auto& [k, v] : st.connector) connector[py::str(k)] = v;
        for (const auto& [k, v] : st.rooms) rooms[py::str(k)] = v;
        for (const auto& [k, v] : st.bus) bus[py::str(k)] = v;
        for (const auto& [k, v] : st.bridge) bridge[py::str(k)] = v;
        for (const auto& [k, v] : st.feed) feed[py::str(k)] = v;
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
        out["bridge"] = bridge;
        out["feed"] = feed;
        out["server"] = server;
        return out;
      });
}

}  // namespace dclcomms::bindings
