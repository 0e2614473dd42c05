// Python bindings for the auth area.

#include "registration.hpp"

namespace py = pybind11;

namespace dclcomms::bindings {

void register_auth(py::module_& m) {
  (void)m;
}

}  // namespace dclcomms::bindings
