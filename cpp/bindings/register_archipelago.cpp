// Python bindings for the archipelago area: _core.ArchipelagoEngine and
// _core.PreferenceOp, wrapped by dclcomms.archipelago.Engine (which owns argument
// defaults and result types).

#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "dclcomms/archipelago/engine.hpp"
#include "dclcomms/error.hpp"
#include "registration.hpp"

namespace py = pybind11;
namespace arch = dclcomms::archipelago;

namespace dclcomms::bindings {

namespace {

// double -> float32 without undefined behaviour: out-of-range finite values
// become infinities, which the engine then rejects as invalid_position.
float to_f32(double v) {
  if (std::isfinite(v) && std::fabs(v) > static_cast<double>(FLT_MAX)) {
    return v > 0 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
  }
  return static_cast<float>(v);
}

// The three-state preferred island of one heartbeat, converted once, here:
// dclcomms.heartbeats.UNSET keeps the stored preference, None or "" clears it, any
// other str sets it. Anything else: ConfigError invalid_parameter.
arch::PreferenceOp to_op(PyObject* value, PyObject* unset, std::string& preferred) {
  if (value == unset) return arch::PreferenceOp::Keep;
  if (value == Py_None) return arch::PreferenceOp::Clear;
  if (PyUnicode_Check(value)) {
    py::ssize_t len = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(value, &len);
    if (utf8 == nullptr) throw py::error_already_set();
    if (len == 0) return arch::PreferenceOp::Clear;
    preferred.assign(utf8, static_cast<size_t>(len));
    return arch::PreferenceOp::Set;
  }
  throw Error(ErrorKind::Config, "invalid_parameter",
              std::string("preferred island must be a str, None or UNSET, got ") +
                  std::string(py::str(py::repr(py::handle(value)))));
}

}  // namespace

void register_archipelago(py::module_& m) {
  py::native_enum<arch::PreferenceOp>(m, "PreferenceOp", "enum.IntEnum",
                                      "What an update does to the peer's stored preferred island")
      .value("KEEP", arch::PreferenceOp::Keep)
      .value("SET", arch::PreferenceOp::Set)
      .value("CLEAR", arch::PreferenceOp::Clear)
      .finalize();

  py::class_<arch::Engine>(m, "ArchipelagoEngine",
                           "Converge-mode island clustering (use dclcomms.archipelago.Engine).")
      .def(py::init([](double join_distance, double leave_distance, uint32_t max_island_size,
                       std::string id_prefix, std::string id_epoch) {
             arch::Config c;
             c.join_distance = join_distance;
             c.leave_distance = leave_distance;
             c.max_island_size = max_island_size;
             c.id_prefix = std::move(id_prefix);
             c.id_epoch = std::move(id_epoch);
             return new arch::Engine(std::move(c));
           }),
           py::arg("join_distance"), py::arg("leave_distance"), py::arg("max_island_size"),
           py::arg("id_prefix"), py::arg("id_epoch") = "")
      .def(
          "update",
          [](arch::Engine& e, const std::string& peer_id, double x, double y, double z,
             arch::PreferenceOp op, const std::string& preferred, int64_t now_ms) {
            // Arguments are C++ copies now; the engine takes its own lock.
            py::gil_scoped_release nogil;
            e.update(peer_id, to_f32(x), to_f32(y), to_f32(z), op, preferred, now_ms);
          },
          py::arg("peer_id"), py::arg("x"), py::arg("y"), py::arg("z"), py::arg("op"),
          py::arg("preferred"), py::arg("now_ms"))
      .def(
          "update_many",
          [](arch::Engine& e, const py::list& peer_ids,
             const py::array_t<float, py::array::c_style | py::array::forcecast>& positions,
             const std::optional<py::list>& preferred, int64_t now_ms) {
            const size_t n = peer_ids.size();
            if (positions.ndim() != 2 || positions.shape(1) != 3 ||
                static_cast<size_t>(positions.shape(0)) != n) {
              throw Error(ErrorKind::Config, "invalid_parameter",
                          "positions must have shape (len(peer_ids), 3)");
            }
            if (preferred && preferred->size() != n) {
              throw Error(ErrorKind::Config, "invalid_parameter",
                          "preferred must have " + std::to_string(n) + " entries, got " +
                              std::to_string(preferred->size()));
            }
            // Ids are copied into one buffer (no allocation per id): heartbeat
            // batches are large and this conversion is their main cost.
            std::string buf;
            std::vector<size_t> ends;
            ends.reserve(n);
            for (size_t i = 0; i < n; ++i) {
              PyObject* item = PyList_GET_ITEM(peer_ids.ptr(), static_cast<py::ssize_t>(i));
              if (!PyUnicode_Check(item)) {
                throw Error(ErrorKind::Config, "invalid_peer_id",
                            "peer ids must be str (row " + std::to_string(i) + ")");
              }
              py::ssize_t len = 0;
              const char* utf8 = PyUnicode_AsUTF8AndSize(item, &len);
              if (utf8 == nullptr) throw py::error_already_set();
              buf.append(utf8, static_cast<size_t>(len));
              ends.push_back(buf.size());
            }
            std::vector<std::string_view> views(n);
            for (size_t i = 0, begin = 0; i < n; begin = ends[i], ++i) {
              views[i] = std::string_view(buf).substr(begin, ends[i] - begin);
            }
            std::vector<float> xyz(positions.data(), positions.data() + 3 * n);
            // The preferred islands: all kept (the usual heartbeat) costs one
            // pointer test per row and no op array.
            std::vector<arch::PreferenceOp> ops;
            std::vector<std::string> rooms;
            if (preferred) {
              PyObject* const unset = unset_marker();
              size_t first = n;
              for (size_t i = 0; i < n && first == n; ++i) {
                if (PyList_GET_ITEM(preferred->ptr(), static_cast<py::ssize_t>(i)) != unset) {
                  first = i;
                }
              }
              if (first < n) {
                ops.assign(n, arch::PreferenceOp::Keep);
                rooms.resize(n);
                for (size_t i = first; i < n; ++i) {
                  PyObject* v = PyList_GET_ITEM(preferred->ptr(), static_cast<py::ssize_t>(i));
                  ops[i] = to_op(v, unset, rooms[i]);
                }
              }
            }
            // Every input is copied into C++ containers above: no Python object
            // is touched after this point.
            py::gil_scoped_release nogil;
            e.update_many(views.data(), n, xyz.data(), ops.empty() ? nullptr : ops.data(),
                          ops.empty() ? nullptr : rooms.data(), now_ms);
          },
          py::arg("peer_ids"), py::arg("positions"), py::arg("preferred"), py::arg("now_ms"))
      .def(
          "disconnect",
          [](arch::Engine& e, const std::string& peer_id) {
            py::gil_scoped_release nogil;  // peer_id is a C++ copy
            return e.disconnect(peer_id);
          },
          py::arg("peer_id"))
      .def(
          "disconnect_many",
          [](arch::Engine& e, const std::vector<std::string>& peer_ids) {
            py::gil_scoped_release nogil;  // peer_ids is a C++ copy
            return e.disconnect_many(peer_ids);
          },
          py::arg("peer_ids"))
      .def(
          "expire",
          [](arch::Engine& e, int64_t now_ms, int64_t timeout_ms) {
            py::gil_scoped_release nogil;  // plain integers only
            return e.expire(now_ms, timeout_ms);
          },
          py::arg("now_ms"), py::arg("timeout_ms"))
      .def("flush",
           [](arch::Engine& e) {
             std::vector<arch::IslandChange> changes;
             {
               py::gil_scoped_release nogil;  // pure C++ until the results are converted
               changes = e.flush();
             }
             // Columns (peer ids, kinds, island ids, from ids); island id
             // strings are shared between the entries naming the same island.
             const auto n = static_cast<py::ssize_t>(changes.size());
             py::list peers(n), kinds(n), islands(n), froms(n);
             py::str changed("changed"), left("left");
             std::unordered_map<std::string, py::str> cache;
             auto island_ref = [&cache](const std::string& id) -> PyObject* {
               auto it = cache.find(id);
               if (it == cache.end()) it = cache.emplace(id, py::str(id)).first;
               return it->second.inc_ref().ptr();
             };
             // PyList_SET_ITEM steals the new references taken here.
             for (py::ssize_t i = 0; i < n; ++i) {
               const auto& c = changes[static_cast<size_t>(i)];
               PyObject* peer = PyUnicode_DecodeUTF8(
                   c.peer_id.data(), static_cast<py::ssize_t>(c.peer_id.size()), "surrogateescape");
               if (peer == nullptr) throw py::error_already_set();
               PyList_SET_ITEM(peers.ptr(), i, peer);
               PyList_SET_ITEM(kinds.ptr(), i,
                               (c.kind == arch::ChangeKind::Left ? left : changed).inc_ref().ptr());
               PyList_SET_ITEM(islands.ptr(), i, island_ref(c.island_id));
               PyList_SET_ITEM(
                   froms.ptr(), i,
                   c.from_island_id ? island_ref(*c.from_island_id) : py::none().inc_ref().ptr());
             }
             return py::make_tuple(peers, kinds, islands, froms);
           })
      .def("islands",
           [](const arch::Engine& e) {
             std::vector<arch::IslandInfo> infos;
             {
               py::gil_scoped_release nogil;  // pure C++ until the results are converted
               infos = e.islands();
             }
             py::list out;
             for (auto& i : infos) {
               const auto k = static_cast<py::ssize_t>(i.peers.size());
               py::array_t<float> positions({k, py::ssize_t{3}});
               std::copy(i.positions.begin(), i.positions.end(), positions.mutable_data());
               out.append(py::make_tuple(i.id, py::cast(i.peers),
                                         py::make_tuple(i.center[0], i.center[1], i.center[2]),
                                         i.radius, i.max_peers, positions));
             }
             return out;
           })
      .def(
          "island_of",
          [](const arch::Engine& e, const std::string& peer_id) {
            py::gil_scoped_release nogil;  // peer_id is a C++ copy
            return e.island_of(peer_id);
          },
          py::arg("peer_id"))
      .def_property_readonly("peer_count",
                             [](const arch::Engine& e) {
                               py::gil_scoped_release nogil;  // no Python state involved
                               return e.peer_count();
                             })
      .def_property_readonly("island_count",
                             [](const arch::Engine& e) {
                               py::gil_scoped_release nogil;  // no Python state involved
                               return e.island_count();
                             })
      .def("snapshot",
           [](const arch::Engine& e) {
             arch::Snapshot s;
             {
               py::gil_scoped_release nogil;  // pure C++ until the results are converted
               s = e.snapshot();
             }
             const auto n = static_cast<py::ssize_t>(s.peer_ids.size());
             const auto k = static_cast<py::ssize_t>(s.island_ids.size());
             py::array_t<float> positions({n, py::ssize_t{3}});
             std::copy(s.positions.begin(), s.positions.end(), positions.mutable_data());
             py::array_t<double> centers({k, py::ssize_t{3}});
             std::copy(s.centers.begin(), s.centers.end(), centers.mutable_data());
             py::dict d;
             d["peer_ids"] = py::cast(s.peer_ids);
             d["positions"] = positions;
             d["island_index"] = py::array_t<int32_t>(n, s.island_index.data());
             d["island_ids"] = py::cast(s.island_ids);
             d["centers"] = centers;
             d["radii"] = py::array_t<double>(k, s.radii.data());
             d["sizes"] = py::array_t<uint32_t>(k, s.sizes.data());
             d["max_peers"] = py::array_t<uint32_t>(k, s.max_peers.data());
             return d;
           })
      .def("last_flush_stats", [](const arch::Engine& e) {
        arch::FlushStats st;
        {
          py::gil_scoped_release nogil;  // no Python state involved
          st = e.last_flush_stats();
        }
        py::dict d;
        d["split_checks"] = st.split_checks;
        d["splits"] = st.splits;
        d["admitted"] = st.admitted;
        d["merge_checks"] = st.merge_checks;
        d["merges"] = st.merges;
        d["pair_tests"] = st.pair_tests;
        d["elapsed_us"] = st.elapsed_us;
        d["cpu_us"] = st.cpu_us;
        return d;
      });
}

}  // namespace dclcomms::bindings
