// Python bindings for the archipelago area.

#include "registration.hpp"

namespace py = pybind11;

namespace dclcomms::bindings {

void register_archipelago(py::module_& m) {
  (void)m;
}

}  // namespace dclcomms::bindings
