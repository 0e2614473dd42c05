// validate(): the minimums of DCLCOMMS_WS_CONFIG (server.hpp), plus the one
// rule between two settings. Every error names its setting first.

#include <cmath>
#include <string>
#include <type_traits>

#include "dclcomms/error.hpp"
#include "dclcomms/ws/server.hpp"

namespace dclcomms::ws {

namespace {

[[noreturn]] void invalid(const std::string& message) {
  throw Error(ErrorKind::Config, "invalid_parameter", message);
}

template <class T>
void check_minimum(const char*, const T&, NoMinimum) {}

template <class T>
void check_minimum(const char* name, const T& value, long long minimum) {
  static_assert(std::is_arithmetic_v<T>, "only numbers have a minimum");
  // Every minimum is >= 0, so unsigned values compare as they are.
  if (value < static_cast<T>(minimum)) {
    invalid(std::string(name) + ": must be >= " + std::to_string(minimum) + " (got " +
            std::to_string(value) + ")");
  }
}

}  // namespace

void validate(const Config& c) {
#define DCLCOMMS_WS_CONFIG_CHECK(type, name, default_value, minimum, doc) \
  check_minimum(#name, c.name, minimum);
  DCLCOMMS_WS_CONFIG(DCLCOMMS_WS_CONFIG_CHECK)
#undef DCLCOMMS_WS_CONFIG_CHECK
  if (!std::isfinite(c.world_bound_m)) {
    invalid("world_bound_m: must be a finite number (got " + std::to_string(c.world_bound_m) + ")");
  }
  if (c.rooms_soft_limit_bytes > c.rooms_hard_limit_bytes) {
    invalid("rooms_soft_limit_bytes: must be <= rooms_hard_limit_bytes (" +
            std::to_string(c.rooms_soft_limit_bytes) + " > " +
            std::to_string(c.rooms_hard_limit_bytes) + ")");
  }
}

}  // namespace dclcomms::ws
