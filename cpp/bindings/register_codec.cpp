// Python bindings for the codec area: Python values are converted to the C++
// Value tree (GIL held), the codec runs with the GIL released (for inputs big
// enough to be worth it, see kReleaseGilMinBytes), and results are converted
// back (GIL held again).

#include <Python.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dclcomms/codec/codec.hpp"
#include "dclcomms/codec/fast.hpp"
#include "dclcomms/codec/wire.hpp"
#include "dclcomms/error.hpp"
#include "registration.hpp"

namespace py = pybind11;

namespace dclcomms::bindings {

namespace {

using codec::Value;

// Value trees deeper than this are rejected before encoding (a message can
// nest at most 100 levels; maps and lists add one level each).
constexpr int kMaxValueDepth = 3 * codec::wire::kMaxDepth;

// Releasing the GIL costs ~0.1-0.2 us, and while other threads run the
// reacquire can wait a whole switch interval (5 ms): release it only for work
// on inputs of at least this many bytes (CPython's hashlib does the same, 2 KiB).
constexpr size_t kReleaseGilMinBytes = 2048;

class ReleaseGilIf {
 public:
  explicit ReleaseGilIf(bool release) {
    if (release) release_.emplace();
  }

 private:
  std::optional<py::gil_scoped_release> release_;
};

[[noreturn]] void encode_error(const char* code, const std::string& msg) {
  throw Error(ErrorKind::Encode, code, msg);
}

std::string utf8_of(PyObject* s) {
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(s, &n);
  if (p == nullptr) {  // lone surrogates
    PyErr_Clear();
    encode_error("bad_type", "string is not valid Unicode (lone surrogate)");
  }
  return std::string(p, static_cast<size_t>(n));
}

Value to_value(py::handle h, int depth, size_t& weight) {
  weight += 8;
  if (depth > kMaxValueDepth) {
    encode_error("too_deep", "value nested deeper than " + std::to_string(kMaxValueDepth));
  }
  PyObject* o = h.ptr();
  if (o == Py_None) return Value();
  if (PyBool_Check(o)) return Value(o == Py_True);
  if (PyLong_Check(o)) {
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
      if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
      return Value(static_cast<int64_t>(x));
    }
    if (overflow > 0) {
      const unsigned long long u = PyLong_AsUnsignedLongLong(o);
      if (!(u == static_cast<unsigned long long>(-1) && PyErr_Occurred())) {
        return Value(static_cast<uint64_t>(u));
      }
      PyErr_Clear();
    }
    encode_error("out_of_range",
                 "integer " + py::str(h).cast<std::string>() + " does not fit in 64 bits");
  }
  if (PyFloat_Check(o)) return Value(PyFloat_AS_DOUBLE(o));
  if (PyUnicode_Check(o)) {
    std::string text = utf8_of(o);
    weight += text.size();
    return Value(std::move(text));
  }
  if (PyBytes_Check(o)) {
    return Value(
        codec::Bytes{std::string(PyBytes_AS_STRING(o), static_cast<size_t>(PyBytes_GET_SIZE(o)))});
  }
  if (PyByteArray_Check(o) || PyMemoryView_Check(o)) {
    py::bytes copy(py::reinterpret_steal<py::object>(PyBytes_FromObject(o)));
    return to_value(copy, depth, weight);
  }
  if (PyDict_Check(o)) {
    codec::Object obj;
    obj.reserve(static_cast<size_t>(PyDict_Size(o)));
    PyObject* key = nullptr;
    PyObject* val = nullptr;
    Py_ssize_t pos = 0;
    while (PyDict_Next(o, &pos, &key, &val)) {
      std::string k;
      if (PyUnicode_Check(key)) {
        k = utf8_of(key);
      } else if (PyBool_Check(key)) {
        k = key == Py_True ? "true" : "false";
      } else if (PyLong_Check(key)) {
        k = py::str(key).cast<std::string>();  // integer map keys
      } else {
        encode_error("bad_type",
                     std::string("dict keys must be str or int, got ") + Py_TYPE(key)->tp_name);
      }
      obj.emplace_back(std::move(k), to_value(val, depth + 1, weight));
    }
    return Value(std::move(obj));
  }
  if (PyList_Check(o) || PyTuple_Check(o)) {
    codec::List list;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    list.reserve(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      list.push_back(to_value(PySequence_Fast_GET_ITEM(o, i), depth + 1, weight));
    }
    return Value(std::move(list));
  }
  // Other numbers (numpy scalars, Decimal, ...): integers via __index__,
  // the rest via __float__.
  if (PyIndex_Check(o)) {
    py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(o));
    if (!i) {
      PyErr_Clear();
      encode_error("bad_type", std::string("cannot convert ") + Py_TYPE(o)->tp_name + " to int");
    }
    return to_value(i, depth, weight);
  }
  if (Py_TYPE(o)->tp_as_number != nullptr && Py_TYPE(o)->tp_as_number->nb_float != nullptr) {
    const double d = PyFloat_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      encode_error("bad_type", std::string("cannot convert ") + Py_TYPE(o)->tp_name + " to float");
    }
    return Value(d);
  }
  encode_error("bad_type", std::string("unsupported Python type ") + Py_TYPE(o)->tp_name);
}

py::object from_value(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Null:
      return py::none();
    case Value::Kind::Bool:
      return py::bool_(v.as_bool());
    case Value::Kind::Int:
      return py::int_(v.as_int());
    case Value::Kind::UInt:
      return py::int_(v.as_uint());
    case Value::Kind::Double:
      return py::float_(v.as_double());
    case Value::Kind::String:
      return py::str(v.as_string());
    case Value::Kind::Bytes:
      return py::bytes(v.as_bytes().data);
    case Value::Kind::List: {
      py::list out(v.as_list().size());
      size_t i = 0;
      for (const auto& item : v.as_list()) out[i++] = from_value(item);
      return std::move(out);
    }
    case Value::Kind::Object: {
      py::dict out;
      for (const auto& [k, item] : v.as_object()) out[py::str(k)] = from_value(item);
      return std::move(out);
    }
  }
  return py::none();
}

std::string_view bytes_view(const py::bytes& data) {
  char* p = nullptr;
  Py_ssize_t n = 0;
  if (PyBytes_AsStringAndSize(data.ptr(), &p, &n) != 0) throw py::error_already_set();
  return std::string_view(p, static_cast<size_t>(n));
}

// Same mapping as the generic decoder: defaults omitted, floats as their
// shortest float32 decimal, NaN/Infinity as strings.
py::object float_field(float f) {
  if (std::isnan(f)) return py::str("NaN");
  if (std::isinf(f)) return py::str(f > 0 ? "Infinity" : "-Infinity");
  return py::float_(codec::float_to_json_double(f));
}

constexpr const char* kIslandChangedType = "decentraland.kernel.comms.v3.IslandChangedMessage";

std::string peer_where(Py_ssize_t i) {
  return "peers[" + std::to_string(i) + "]";
}

float to_float32(PyObject* o, Py_ssize_t i) {
  if (PyFloat_CheckExact(o)) {
    const double d = PyFloat_AS_DOUBLE(o);
    if (!(std::isfinite(d) && std::fabs(d) > static_cast<double>(FLT_MAX) &&
          !std::isfinite(static_cast<float>(d)))) {
      return static_cast<float>(d);
    }
    encode_error("out_of_range", peer_where(i) + ": value is out of range for a float32");
  }
  // Any real number (int, numpy scalars, ...) but not bool or str.
  const bool numeric = PyFloat_Check(o) || PyLong_Check(o) ||
                       (Py_TYPE(o)->tp_as_number != nullptr &&
                        Py_TYPE(o)->tp_as_number->nb_float != nullptr && !PyUnicode_Check(o));
  if (PyBool_Check(o) || !numeric) {
    encode_error("bad_type", peer_where(i) + ": expected a number, got " + Py_TYPE(o)->tp_name);
  }
  const double d = PyFloat_AsDouble(o);
  if (d == -1.0 && PyErr_Occurred()) {
    const bool overflow = PyErr_ExceptionMatches(PyExc_OverflowError);
    PyErr_Clear();
    encode_error(overflow ? "out_of_range" : "bad_type",
                 peer_where(i) + ": cannot convert " + Py_TYPE(o)->tp_name + " to float");
  }
  if (std::isfinite(d) && std::fabs(d) > static_cast<double>(FLT_MAX) &&
      !std::isfinite(static_cast<float>(d))) {
    encode_error("out_of_range", peer_where(i) + ": value is out of range for a float32");
  }
  return static_cast<float>(d);
}

// peers: a sequence of (peer_id, (x, y, z)). Converted with the C API: the
// pybind11 STL casters cost ~0.4 us per peer, more than the encoding itself.
void convert_peers(const py::object& peers,
                   std::vector<std::pair<std::string, codec::Position>>& out) {
  py::object seq =
      py::reinterpret_steal<py::object>(PySequence_Fast(peers.ptr(), "peers must be a sequence"));
  if (!seq) {
    PyErr_Clear();
    encode_error("bad_type", "peers: expected a sequence of (peer_id, (x, y, z))");
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  out.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PySequence_Fast_GET_ITEM(seq.ptr(), i);
    if (!(PyTuple_Check(item) || PyList_Check(item)) || PySequence_Fast_GET_SIZE(item) != 2) {
      encode_error("bad_type", peer_where(i) + ": expected a (peer_id, (x, y, z)) pair");
    }
    PyObject* id = PySequence_Fast_GET_ITEM(item, 0);
    PyObject* xyz = PySequence_Fast_GET_ITEM(item, 1);
    if (!PyUnicode_Check(id)) encode_error("bad_type", peer_where(i) + ": peer_id must be a str");
    py::object xyz_seq;  // tuples and lists as they are; other sequences (numpy rows) copied
    if (!(PyTuple_Check(xyz) || PyList_Check(xyz))) {
      xyz_seq = py::reinterpret_steal<py::object>(PySequence_Fast(xyz, "position"));
      if (!xyz_seq) {
        PyErr_Clear();
        encode_error("bad_type", peer_where(i) + ": position must be an (x, y, z) sequence");
      }
      xyz = xyz_seq.ptr();
    }
    if (PySequence_Fast_GET_SIZE(xyz) != 3) {
      encode_error("bad_type", peer_where(i) + ": position must be an (x, y, z) sequence");
    }
    out.emplace_back(utf8_of(id), codec::Position{to_float32(PySequence_Fast_GET_ITEM(xyz, 0), i),
                                                  to_float32(PySequence_Fast_GET_ITEM(xyz, 1), i),
                                                  to_float32(PySequence_Fast_GET_ITEM(xyz, 2), i)});
  }
}

// A decoded position coordinate as the generic decoder + float() gives it:
// the shortest float32 decimal, 0.0 for both zeros (defaults are omitted).
PyObject* coordinate(float f) {
  return PyFloat_FromDouble(f == 0.0f ? 0.0 : codec::float_to_json_double(f));
}

py::object optional_str(const std::optional<std::string>& s) {
  if (!s) return py::none();
  return py::str(*s);
}

// peers as a dict peer_id -> (x, y, z), in member order (duplicates merged by
// the decoder), built with the C API: one tuple and three floats per member.
py::dict peers_dict(const std::vector<std::pair<std::string, codec::Position>>& peers) {
  py::dict out;
  for (const auto& [id, p] : peers) {
    py::str key(id);
    py::object xyz = py::reinterpret_steal<py::object>(PyTuple_New(3));
    if (!xyz) throw py::error_already_set();
    const float c[3] = {p.x, p.y, p.z};
    for (Py_ssize_t k = 0; k < 3; ++k) {
      PyObject* f = coordinate(c[k]);
      if (f == nullptr) throw py::error_already_set();
      PyTuple_SET_ITEM(xyz.ptr(), k, f);  // steals f
    }
    if (PyDict_SetItem(out.ptr(), key.ptr(), xyz.ptr()) != 0) throw py::error_already_set();
  }
  return out;
}

// Float32 coordinate as the generic decoder + np.float32(float(...)) gives
// it: zeros are +0, NaNs the canonical quiet NaN.
float canonical_float(float f) {
  if (f == 0.0f) return 0.0f;
  if (std::isnan(f)) return std::numeric_limits<float>::quiet_NaN();
  return f;
}

}  // namespace

void register_codec(py::module_& m) {
  m.def(
      "codec_encode",
      [](const std::string& type_name, const py::object& message) {
        Value v;
        size_t weight = 0;  // approximate encoded size
        try {
          v = to_value(message, 0, weight);
        } catch (const Error& e) {
          codec::wire::rethrow_with_type_name(e, type_name);
        }
        std::string out;
        {
          // Safe: only the C++ copies (type_name, v, out) are used here.
          ReleaseGilIf release(weight >= kReleaseGilMinBytes);
          out = codec::encode(type_name, v);
        }
        return py::bytes(out);
      },
      py::arg("type_name"), py::arg("message"),
      "Encode a dict (protobuf JSON mapping) as the fully qualified message type.");

  m.def(
      "codec_decode",
      [](const std::string& type_name, const py::bytes& data, bool including_defaults) {
        const std::string_view bytes = bytes_view(data);
        Value v;
        {
          // Safe: `data` is an immutable bytes object kept alive by the caller's
          // reference for the whole call; no Python object is touched.
          ReleaseGilIf release(bytes.size() >= kReleaseGilMinBytes);
          v = codec::decode(type_name, bytes, codec::DecodeOptions{including_defaults});
        }
        return from_value(v);
      },
      py::arg("type_name"), py::arg("data"), py::arg("including_defaults") = false,
      "Decode bytes as the fully qualified message type into a dict.");

  m.def("codec_message_types", &codec::message_types,
        "Fully qualified names of every message type the codec knows.");

  m.def(
      "codec_descriptor_set",
      [] {
        const std::string_view s = codec::descriptor_set();
        return py::bytes(s.data(), s.size());
      },
      "The serialized FileDescriptorSet the codec is built from.");

  m.def(
      "codec_encode_island_changed",
      [](const std::string& island_id, const std::string& conn_str,
         const std::optional<std::string>& from_island_id, const py::object& peers,
         bool server_packet) {
        codec::IslandChanged msg;
        msg.island_id = island_id;
        msg.conn_str = conn_str;
        msg.from_island_id = from_island_id;
        try {
          convert_peers(peers, msg.peers);
        } catch (const Error& e) {
          codec::wire::rethrow_with_type_name(e, kIslandChangedType);
        }
        size_t weight = msg.conn_str.size();
        for (const auto& peer : msg.peers) weight += peer.first.size() + 20;
        std::string out;
        {
          // Safe: msg and out are C++ values converted above.
          ReleaseGilIf release(weight >= kReleaseGilMinBytes);
          out = server_packet ? codec::encode_server_island_changed(msg)
                              : codec::encode_island_changed_message(msg);
        }
        return py::bytes(out);
      },
      py::arg("island_id"), py::arg("conn_str"), py::arg("from_island_id"), py::arg("peers"),
      py::arg("server_packet") = false,
      "Fast path: IslandChangedMessage (or a ServerPacket frame) from typed values.");

  m.def(
      "codec_decode_island_changed",
      [](const py::bytes& data) {
        const std::string_view bytes = bytes_view(data);
        codec::IslandChanged msg;
        {
          // Safe: immutable bytes kept alive by the caller; C++ values only.
          ReleaseGilIf release(bytes.size() >= kReleaseGilMinBytes);
          msg = codec::decode_island_changed_message(bytes);
        }
        return py::make_tuple(py::str(msg.island_id), py::str(msg.conn_str),
                              optional_str(msg.from_island_id), peers_dict(msg.peers));
      },
      py::arg("data"),
      "Fast path: decode an IslandChangedMessage into (island_id, conn_str, from_island_id, "
      "peers), peers a dict peer_id -> (x, y, z) in member order.");

  m.def(
      "codec_decode_island_changed_header",
      [](const py::bytes& data) {
        const std::string_view bytes = bytes_view(data);
        codec::IslandChangedHeader h;
        {
          // Safe: immutable bytes kept alive by the caller; C++ values only.
          ReleaseGilIf release(bytes.size() >= kReleaseGilMinBytes);
          h = codec::decode_island_changed_header(bytes);
        }
        const py::ssize_t at =
            h.peers_offset == codec::kNoPeersTail ? -1 : static_cast<py::ssize_t>(h.peers_offset);
        return py::make_tuple(py::str(h.island_id), py::str(h.conn_str),
                              optional_str(h.from_island_id), py::int_(at));
      },
      py::arg("data"),
      "The header fields of an IslandChangedMessage and the offset where its trailing peers "
      "entries start (len(data) if none, -1 if another field follows a peers entry).");

  m.def(
      "codec_encode_heartbeats",
      [](const py::array_t<float, py::array::c_style | py::array::forcecast>& positions,
         const py::sequence& desired_rooms) {
        const auto n = static_cast<size_t>(py::len(desired_rooms));
        if (positions.ndim() != 2 || positions.shape(1) != 3 ||
            static_cast<size_t>(positions.shape(0)) != n) {
          encode_error("bad_type", "positions must have shape (len(desired_rooms), 3)");
        }
        std::vector<codec::Heartbeat> hbs(n);
        const float* xyz = positions.data();
        PyObject* const unset = unset_marker();
        for (size_t i = 0; i < n; ++i) {
          hbs[i].position = codec::Position{xyz[3 * i], xyz[3 * i + 1], xyz[3 * i + 2]};
          py::object room = desired_rooms[i];
          if (room.ptr() == unset) continue;  // field absent
          if (!PyUnicode_Check(room.ptr())) {
            encode_error("bad_type", "desired_rooms[" + std::to_string(i) +
                                         "]: expected str or "
                                         "UNSET, got " +
                                         Py_TYPE(room.ptr())->tp_name);
          }
          hbs[i].desired_room = utf8_of(room.ptr());
        }
        std::vector<std::string> out(n);
        {
          // Safe: hbs and out are C++ values converted above.
          ReleaseGilIf release(n * 20 >= kReleaseGilMinBytes);
          for (size_t i = 0; i < n; ++i) out[i] = codec::encode_heartbeat(hbs[i]);
        }
        py::list result(n);
        for (size_t i = 0; i < n; ++i) {
          PyObject* b =
              PyBytes_FromStringAndSize(out[i].data(), static_cast<Py_ssize_t>(out[i].size()));
          if (b == nullptr) throw py::error_already_set();
          PyList_SET_ITEM(result.ptr(), static_cast<Py_ssize_t>(i), b);  // steals b
        }
        return result;
      },
      py::arg("positions"), py::arg("desired_rooms"),
      "Fast path: one bare Heartbeat per row of positions (n, 3) (float32) with its desired "
      "room (dclcomms.heartbeats.UNSET = absent).");

  m.def(
      "codec_decode_heartbeats",
      [](const py::sequence& data) {
        const auto n = static_cast<size_t>(py::len(data));
        std::vector<py::bytes> keep;  // references: the views stay valid without the GIL
        std::vector<std::string_view> views;
        keep.reserve(n);
        views.reserve(n);
        size_t total = 0;
        for (size_t i = 0; i < n; ++i) {
          py::object item = data[i];
          if (!PyBytes_Check(item.ptr())) {
            throw py::type_error("data[" + std::to_string(i) + "]: expected bytes, got " +
                                 Py_TYPE(item.ptr())->tp_name);
          }
          keep.emplace_back(py::reinterpret_borrow<py::bytes>(item));
          views.push_back(bytes_view(keep.back()));
          total += views.back().size();
        }
        std::vector<codec::Heartbeat> hbs(n);
        std::vector<std::pair<size_t, std::string>> errors;
        {
          // Safe: views into bytes objects referenced by `keep`; C++ values only.
          ReleaseGilIf release(total >= kReleaseGilMinBytes);
          for (size_t i = 0; i < n; ++i) {
            try {
              hbs[i] = codec::decode_heartbeat(views[i]);
            } catch (const Error& e) {
              errors.emplace_back(i, e.what());
            }
          }
        }
        py::array_t<float> positions({static_cast<py::ssize_t>(n), py::ssize_t{3}});
        py::array_t<bool> has_position(static_cast<py::ssize_t>(n));
        float* xyz = positions.mutable_data();
        bool* has = has_position.mutable_data();
        py::list rooms(n);
        py::handle unset(unset_marker());
        for (size_t i = 0; i < n; ++i) {
          const auto& pos = hbs[i].position;
          has[i] = pos.has_value();
          xyz[3 * i] = pos ? canonical_float(pos->x) : 0.0f;
          xyz[3 * i + 1] = pos ? canonical_float(pos->y) : 0.0f;
          xyz[3 * i + 2] = pos ? canonical_float(pos->z) : 0.0f;
          const auto& room = hbs[i].desired_room;
          rooms[i] = room ? py::object(py::str(*room)) : py::reinterpret_borrow<py::object>(unset);
        }
        py::list errs;
        for (const auto& [i, msg] : errors) errs.append(py::make_tuple(i, msg));
        return py::make_tuple(positions, has_position, rooms, errs);
      },
      py::arg("data"),
      "Fast path: decode bare Heartbeats into (positions (n, 3) float32, has_position (n,) "
      "bool, desired_rooms (UNSET = absent), errors [(index, message)]); undecodable ones have no "
      "position.");

  m.def(
      "codec_decode_heartbeat",
      [](const py::bytes& data) {
        const std::string_view bytes = bytes_view(data);
        codec::Heartbeat hb;
        {
          // Safe: immutable bytes kept alive by the caller; C++ values only.
          ReleaseGilIf release(bytes.size() >= kReleaseGilMinBytes);
          hb = codec::decode_heartbeat(bytes);
        }
        py::dict out;
        if (hb.position) {
          py::dict pos;
          if (hb.position->x != 0.0f) pos["x"] = float_field(hb.position->x);
          if (hb.position->y != 0.0f) pos["y"] = float_field(hb.position->y);
          if (hb.position->z != 0.0f) pos["z"] = float_field(hb.position->z);
          out["position"] = pos;
        }
        if (hb.desired_room) out["desiredRoom"] = py::str(*hb.desired_room);
        return out;
      },
      py::arg("data"), "Fast path: decode a bare Heartbeat (NATS payload) into a dict.");
}

}  // namespace dclcomms::bindings
