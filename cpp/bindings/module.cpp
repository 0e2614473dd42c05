// dclcomms._core: private. Users import dclcomms.*, which wraps this module.

#include <pybind11/pybind11.h>

#include "dclcomms/error.hpp"
#include "registration.hpp"

namespace py = pybind11;

namespace {

const char* python_class_for(dclcomms::ErrorKind kind) {
  switch (kind) {
    case dclcomms::ErrorKind::Decode:
      return "DecodeError";
    case dclcomms::ErrorKind::Encode:
      return "EncodeError";
    case dclcomms::ErrorKind::UnknownType:
      return "UnknownTypeError";
    case dclcomms::ErrorKind::Auth:
      return "AuthError";
    case dclcomms::ErrorKind::Token:
      return "TokenError";
    case dclcomms::ErrorKind::Config:
      return "ConfigError";
    case dclcomms::ErrorKind::PubSub:
      return "PubSubError";
  }
  return "Error";
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "dclcomms compiled core (private: use the dclcomms package)";
  m.attr("__version__") = DCLCOMMS_VERSION;

  // C++ errors become the typed Python exceptions of dclcomms.errors, keeping
  // their stable code.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const dclcomms::Error& e) {
      py::object errors = py::module_::import("dclcomms.errors");
      py::object cls = errors.attr(python_class_for(e.kind()));
      py::object exc = cls(e.what(), py::arg("code") = e.code());
      PyErr_SetObject(cls.ptr(), exc.ptr());
    }
  });

  dclcomms::bindings::register_codec(m);
  dclcomms::bindings::register_auth(m);
  dclcomms::bindings::register_archipelago(m);
  dclcomms::bindings::register_ws(m);
  dclcomms::bindings::register_nats(m);
}
