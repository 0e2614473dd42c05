#pragma once
// One registration function per area; each lives in register_<area>.cpp.

#include <pybind11/pybind11.h>

namespace dclcomms::bindings {

void register_codec(pybind11::module_& m);
void register_auth(pybind11::module_& m);
void register_archipelago(pybind11::module_& m);
void register_ws(pybind11::module_& m);
void register_nats(pybind11::module_& m);

// dclcomms.heartbeats.UNSET, the one "field absent: keep the stored preferred island"
// marker of the heartbeat path (a borrowed reference: the module keeps it alive).
// Imported on first use, with the GIL held.
inline PyObject* unset_marker() {
  static PyObject* const unset =
      pybind11::object(pybind11::module_::import("dclcomms.heartbeats").attr("UNSET"))
          .release()
          .ptr();
  return unset;
}

}  // namespace dclcomms::bindings
