// Python bindings for the ws area.

#include "registration.hpp"

namespace py = pybind11;

namespace dclcomms::bindings {

void register_ws(py::module_& m) {
  (void)m;
}

}  // namespace dclcomms::bindings
