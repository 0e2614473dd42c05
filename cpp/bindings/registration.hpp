#pragma once
// One registration function per area; each lives in register_<area>.cpp.

#include <pybind11/pybind11.h>

namespace dclcomms::bindings {

void register_codec(pybind11::module_& m);
void register_auth(pybind11::module_& m);
void register_archipelago(pybind11::module_& m);
void register_ws(pybind11::module_& m);

}  // namespace dclcomms::bindings
