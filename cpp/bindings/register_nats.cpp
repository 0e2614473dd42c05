// Python bindings for the NATS area: _core.NatsClient, used by
// dclcomms.nats.pubsub.NatsPubSub for the hot subjects (heartbeats out of a
// connector, heartbeats and session resets into the engine, the core's island
// messages into a connector's sessions), and _core.ArchipelagoTick, the core's
// tick grouped and published per island in C++ (dclcomms.archipelago.core).
// Inputs are converted to C++ first, then the GIL is released.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dclcomms/archipelago/engine.hpp"
#include "dclcomms/error.hpp"
#include "dclcomms/nats/client.hpp"
#include "dclcomms/nats/tick.hpp"
#include "dclcomms/ws/server.hpp"
#include "registration.hpp"

namespace py = pybind11;
namespace arch = dclcomms::archipelago;
namespace dn = dclcomms::nats;

namespace dclcomms::bindings {

namespace {

py::str utf8(std::string_view v) {
  PyObject* o = PyUnicode_DecodeUTF8(v.data(), static_cast<py::ssize_t>(v.size()), "strict");
  if (o == nullptr) throw py::error_already_set();  // UnicodeDecodeError (a ValueError)
  return py::reinterpret_steal<py::str>(o);
}

// Peer ids as the engine's flush gives them to Python (surrogateescape).
template <typename Strings>
py::list peer_list(const Strings& ids) {
  py::list out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    PyObject* o = PyUnicode_DecodeUTF8(ids[i].data(), static_cast<py::ssize_t>(ids[i].size()),
                                       "surrogateescape");
    if (o == nullptr) throw py::error_already_set();
    PyList_SET_ITEM(out.ptr(), static_cast<py::ssize_t>(i), o);  // steals o
  }
  return out;
}

dn::Issuer::Kind issuer_kind(const std::string& kind) {
  if (kind == "fixed") return dn::Issuer::Kind::Fixed;
  if (kind == "p2p") return dn::Issuer::Kind::P2P;
  if (kind == "ws-room") return dn::Issuer::Kind::WsRoom;
  if (kind == "livekit") return dn::Issuer::Kind::LiveKit;
  throw Error(ErrorKind::Config, "invalid_parameter",
              "issuer kind must be fixed, p2p, ws-room or livekit, got '" + kind + "'");
}

// A built-in transport's issuer from the arguments Transport.native_issuer() gives.
dn::Issuer make_issuer(const std::string& kind, std::string text, std::string api_key,
                       std::string secret, int64_t ttl_s, int64_t now_s) {
  dn::Issuer issuer;
  issuer.kind = issuer_kind(kind);
  issuer.text = std::move(text);
  issuer.api_key = std::move(api_key);
  issuer.secret = std::move(secret);
  issuer.ttl_s = ttl_s;
  issuer.now_s = now_s;
  return issuer;
}

}  // namespace

void register_nats(py::module_& m) {
  m.def(
      "nats_decode_island_changes",
      [](py::bytes data) {
        const std::string_view view = data;  // `data` stays alive during the call
        const dn::IslandChangesView v = dn::decode_island_changes(view);
        py::list conn(v.conn_strs.size()), froms(v.from_island_ids.size());
        for (size_t i = 0; i < v.conn_strs.size(); ++i) conn[i] = utf8(v.conn_strs[i]);
        for (size_t i = 0; i < v.from_island_ids.size(); ++i) froms[i] = utf8(v.from_island_ids[i]);
        return py::make_tuple(utf8(v.island_id), py::bytes(v.peers.data(), v.peers.size()),
                              py::bytes(v.addresses.data(), v.addresses.size()), conn, froms);
      },
      py::arg("data"),
      "(island_id, peers, addresses, conn_strs, from_island_ids) of an IslandChanges message");
  m.def(
      "nats_split_island_status",
      [](py::bytes data, size_t max_payload, uint64_t snapshot) {
        const std::string_view view = data;
        std::vector<std::string> parts;
        {
          py::gil_scoped_release nogil;
          parts = dn::split_island_status(view, max_payload, snapshot);
        }
        py::list out(parts.size());
        for (size_t i = 0; i < parts.size(); ++i) out[i] = py::bytes(parts[i]);
        return out;
      },
      py::arg("data"), py::arg("max_payload"), py::arg("snapshot"),
      "engine.islands as parts of at most max_payload bytes (docs/nats.md)");

  m.def(
      "mint_connection_strings",
      [](const std::string& kind, std::string text, std::string api_key, std::string secret,
         int64_t ttl_s, int64_t now_s, const std::string& island_id,
         const std::vector<std::string>& peers) {
        const dn::Issuer issuer =
            make_issuer(kind, std::move(text), std::move(api_key), std::move(secret), ttl_s, now_s);
        std::vector<std::string> out;
        {
          py::gil_scoped_release nogil;  // C++ copies only
          const std::vector<std::string_view> views(peers.begin(), peers.end());
          out = dn::mint(issuer, island_id, views);
        }
        return out;
      },
      py::arg("kind"), py::arg("text"), py::arg("api_key"), py::arg("secret"), py::arg("ttl_s"),
      py::arg("now_s"), py::arg("island_id"), py::arg("peers"),
      "one connection string per peer of a built-in transport (Transport.native_issuer)");

  py::class_<dn::Tick>(m, "ArchipelagoTick",
                       "One tick's island changes grouped per island in C++ "
                       "(use dclcomms.archipelago.core)")
      .def(py::init([](arch::Engine& engine, int64_t now_ms, int64_t timeout_ms,
                       const std::vector<std::string>& recheck) {
             py::gil_scoped_release nogil;  // expire + flush + islands: pure C++
             return std::make_unique<dn::Tick>(engine, now_ms, timeout_ms, recheck);
           }),
           py::arg("engine"), py::arg("now_ms"), py::arg("timeout_ms"),
           py::arg("recheck") = std::vector<std::string>{})
      .def_property_readonly("counts",
                             [](const dn::Tick& t) {
                               const auto& c = t.counts();
                               return py::make_tuple(c.changes, c.left, c.changed);
                             })
      .def("touched", [](const dn::Tick& t) { return py::cast(t.touched()); })
      .def("island_ids",
           [](const dn::Tick& t) {
             py::list out;
             for (const auto& id : t.island_ids()) out.append(py::str(id));
             return out;
           })
      .def("sizes",
           [](const dn::Tick& t) {
             py::list out;
             for (const auto n : t.sizes()) out.append(n);
             return out;
           })
      .def(
          "view",
          [](const dn::Tick& t, const std::string& island_id) -> py::object {
            const arch::IslandInfo* i = t.island(island_id);
            if (i == nullptr) return py::none();
            return py::make_tuple(py::tuple(peer_list(i->peers)),
                                  py::make_tuple(i->center[0], i->center[1], i->center[2]),
                                  i->radius, i->max_peers);
          },
          py::arg("island_id"), "(peers, center, radius, max_peers) or None")
      .def(
          "targets",
          [](const dn::Tick& t, const std::string& island_id, bool switched) {
            return peer_list(t.targets(island_id, switched));
          },
          py::arg("island_id"), py::arg("switched"))
      .def(
          "set_issued",
          [](dn::Tick& t, const std::string& island_id, bool switched, const py::dict& issued) {
            // What a Python transport returned: targets() looked up in its dict.
            const py::list peers = peer_list(t.targets(island_id, switched));
            std::vector<std::optional<std::string>> strs(peers.size());  // nullopt: rejected
            for (size_t i = 0; i < peers.size(); ++i) {
              PyObject* v = PyDict_GetItemWithError(issued.ptr(), peers[i].ptr());
              if (v == nullptr) {
                if (PyErr_Occurred()) throw py::error_already_set();
                continue;  // omitted: rejected
              }
              strs[i] = py::cast<std::string>(py::handle(v));
            }
            return peer_list(t.set_issued(island_id, switched, std::move(strs)));
          },
          py::arg("island_id"), py::arg("switched"), py::arg("issued"),
          "records a transport's strings for targets(); returns the rejected peers")
      .def(
          "issue",
          [](dn::Tick& t, const std::string& island_id, bool switched, const std::string& kind,
             std::string text, std::string api_key, std::string secret, int64_t ttl_s,
             int64_t now_s) {
            const dn::Issuer issuer = make_issuer(kind, std::move(text), std::move(api_key),
                                                  std::move(secret), ttl_s, now_s);
            py::gil_scoped_release nogil;  // minting: pure C++
            return t.issue(island_id, switched, issuer);
          },
          py::arg("island_id"), py::arg("switched"), py::arg("kind"), py::arg("text"),
          py::arg("api_key"), py::arg("secret"), py::arg("ttl_s"), py::arg("now_s"),
          "connection strings of a built-in transport minted in C++; returns how many")
      .def(
          "publish_native",
          [](const dn::Tick& t, dn::Client& client) {
            if (client.scheme() != dn::Scheme::Native) {
              throw Error(ErrorKind::Config, "invalid_parameter",
                          "publish_native needs a client of the native scheme");
            }
            dn::NativeOutput out;
            size_t status_messages = 0;
            {
              py::gil_scoped_release nogil;  // encoding and queueing: pure C++
              out = t.native_messages();
              for (auto& [subject, data] : out.messages) {
                if (subject == "engine.islands") {  // in parts beyond max_payload
                  status_messages =
                      client.publish_island_status(std::move(subject), std::move(data));
                } else {
                  client.publish(std::move(subject), std::move(data));
                }
              }
            }
            py::dict d;
            d["island_changed"] = out.island_changed;
            d["messages"] = out.messages.size();
            d["bad_island_id"] = out.bad_island_id;
            d["bad_subject"] = out.bad_subject;
            d["bad_address"] = out.bad_address;
            d["status_bytes"] = out.status_bytes;
            d["status_messages"] = status_messages;  // 0: dropped (counted by the client)
            return d;
          },
          py::arg("client"),
          "the tick's messages (native scheme) queued on the C++ client, in order");

  py::class_<dn::Client>(m, "NatsClient",
                         "The hot NATS subjects in C++ (libnats); use dclcomms.nats.pubsub.")
      .def(py::init([](const std::vector<std::string>& servers, const std::string& subjects,
                       const std::string& name, int64_t reconnect_wait_ms,
                       int64_t connect_timeout_ms, int reconnect_buf_bytes,
                       size_t max_outbox_bytes) {
             dn::ClientOptions o;
             o.servers = servers;
             o.name = name;
             o.reconnect_wait_ms = reconnect_wait_ms;
             o.connect_timeout_ms = connect_timeout_ms;
             o.reconnect_buf_bytes = reconnect_buf_bytes;
             o.max_outbox_bytes = max_outbox_bytes;
             const dn::Scheme scheme = dn::parse_scheme(subjects);
             py::gil_scoped_release nogil;  // connecting may take connect_timeout_ms
             return std::make_unique<dn::Client>(std::move(o), scheme);
           }),
           py::arg("servers"), py::arg("subjects"), py::arg("name"), py::arg("reconnect_wait_ms"),
           py::arg("connect_timeout_ms"), py::arg("reconnect_buf_bytes"),
           py::arg("max_outbox_bytes"))
      .def(
          "publish_heartbeats",
          [](dn::Client& c, const py::list& addresses,
             const py::array_t<float, py::array::c_style | py::array::forcecast>& positions,
             const std::optional<py::list>& preferred) {
            const size_t n = addresses.size();
            if (positions.ndim() != 2 || positions.shape(1) != 3 ||
                static_cast<size_t>(positions.shape(0)) != n) {
              throw Error(ErrorKind::Config, "invalid_parameter",
                          "positions must have shape (len(addresses), 3)");
            }
            if (preferred && preferred->size() != n) {
              throw Error(ErrorKind::Config, "invalid_parameter",
                          "desired_rooms must have " + std::to_string(n) + " entries");
            }
            std::string buf;
            std::vector<size_t> ends;
            ends.reserve(n);
            for (size_t i = 0; i < n; ++i) {
              PyObject* item = PyList_GET_ITEM(addresses.ptr(), static_cast<py::ssize_t>(i));
              if (PyUnicode_Check(item)) {
                py::ssize_t len = 0;
                const char* utf8 = PyUnicode_AsUTF8AndSize(item, &len);
                if (utf8 == nullptr) throw py::error_already_set();
                buf.append(utf8, static_cast<size_t>(len));
              }  // a non-str address stays empty: refused as bad_address
              ends.push_back(buf.size());
            }
            std::vector<std::string_view> views(n);
            for (size_t i = 0, begin = 0; i < n; begin = ends[i], ++i) {
              views[i] = std::string_view(buf).substr(begin, ends[i] - begin);
            }
            std::vector<arch::PreferenceOp> ops;
            std::vector<std::string> rooms;
            if (preferred) {
              PyObject* const unset = unset_marker();
              for (size_t i = 0; i < n; ++i) {
                PyObject* v = PyList_GET_ITEM(preferred->ptr(), static_cast<py::ssize_t>(i));
                if (v == unset) continue;
                if (ops.empty()) {
                  ops.assign(n, arch::PreferenceOp::Keep);
                  rooms.resize(n);
                }
                if (v == Py_None) {
                  ops[i] = arch::PreferenceOp::Clear;
                } else if (PyUnicode_Check(v)) {
                  py::ssize_t len = 0;
                  const char* utf8 = PyUnicode_AsUTF8AndSize(v, &len);
                  if (utf8 == nullptr) throw py::error_already_set();
                  ops[i] = len ? arch::PreferenceOp::Set : arch::PreferenceOp::Clear;
                  rooms[i].assign(utf8, static_cast<size_t>(len));
                } else {
                  throw Error(ErrorKind::Config, "invalid_parameter",
                              "desired room must be a str, None or UNSET");
                }
              }
            }
            std::vector<float> xyz(positions.data(), positions.data() + 3 * n);
            py::gil_scoped_release nogil;
            return c.publish_heartbeats(views.data(), n, xyz.data(),
                                        ops.empty() ? nullptr : ops.data(),
                                        ops.empty() ? nullptr : rooms.data());
          },
          py::arg("addresses"), py::arg("positions"), py::arg("desired_rooms"))
      .def(
          "publish",
          [](dn::Client& c, std::string subject, std::string data) {
            py::gil_scoped_release nogil;  // both are C++ copies
            return c.publish(std::move(subject), std::move(data));
          },
          py::arg("subject"), py::arg("data"))
      .def("flush", &dn::Client::flush, py::arg("timeout_ms"),
           py::call_guard<py::gil_scoped_release>())
      .def("feed_engine", &dn::Client::feed_engine, py::arg("engine"),
           py::arg("world_bound_m") = 0.0,
           py::keep_alive<1, 2>(),  // the engine lives as long as this client
           py::call_guard<py::gil_scoped_release>())
      .def(
          "relay_islands",
          [](dn::Client& c, dclcomms::ws::Server& server) {
            dclcomms::ws::Server* to = &server;
            py::gil_scoped_release nogil;
            c.relay_islands(
                [to](std::vector<dclcomms::ws::RelayItem> items) { to->relay(std::move(items)); });
          },
          py::arg("server"), py::keep_alive<1, 2>(),  // the server lives as long as this client
          "Relays this scheme's island messages to the server's connector sessions in C++")
      .def("stop_relay", &dn::Client::stop_relay, py::call_guard<py::gil_scoped_release>())
      .def("stop_feed", &dn::Client::stop_feed, py::call_guard<py::gil_scoped_release>())
      .def("settle", &dn::Client::settle, py::call_guard<py::gil_scoped_release>())
      .def("set_backoff", &dn::Client::set_backoff, py::arg("until_ms"),
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("connected",
                             [](const dn::Client& c) {
                               py::gil_scoped_release nogil;
                               return c.connected();
                             })
      .def("stats",
           [](const dn::Client& c) {
             dn::ClientStats s;
             {
               py::gil_scoped_release nogil;
               s = c.stats();
             }
             py::dict d;
             d["published"] = s.published;
             d["published_bytes"] = s.published_bytes;
             d["received"] = s.received;
             d["dropped_outbox_full"] = s.dropped_outbox_full;
             d["dropped_nats_buffer"] = s.dropped_nats_buffer;
             d["dropped_closed"] = s.dropped_closed;
             d["dropped_max_payload"] = s.dropped_max_payload;
             d["dropped_decode"] = s.dropped_decode;
             d["dropped_slow_consumer"] = s.dropped_slow_consumer;
             d["dropped_inbox_full"] = s.dropped_inbox_full;
             d["bad_address_publish"] = s.bad_address_publish;
             d["bad_address_receive"] = s.bad_address_receive;
             d["reconnects"] = s.reconnects;
             d["connected"] = s.connected;
             d["outbox_bytes"] = s.outbox_bytes;
             d["heartbeats"] = s.heartbeats;
             d["no_position"] = s.no_position;
             d["resets"] = s.resets;
             d["backoff_dropped"] = s.backoff_dropped;
             d["invalid_position"] = s.invalid_position;
             d["out_of_bounds"] = s.out_of_bounds;
             d["engine_errors"] = s.engine_errors;
             d["relayed"] = s.relayed;
             d["bad_island_receive"] = s.bad_island_receive;
             d["bad_subject_receive"] = s.bad_subject_receive;
             d["relay_last_ns"] = s.relay_last_ns;
             d["relay_tick_first_ns"] = s.relay_tick_first_ns;
             return d;
           })
      .def("close", &dn::Client::close, py::call_guard<py::gil_scoped_release>());
}

}  // namespace dclcomms::bindings
