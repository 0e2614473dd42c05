// Python bindings for the codec area.

#include "registration.hpp"

namespace py = pybind11;

namespace dclcomms::bindings {

void register_codec(py::module_& m) {
  (void)m;
}

}  // namespace dclcomms::bindings
