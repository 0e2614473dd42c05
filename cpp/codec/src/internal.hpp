#pragma once
// Hooks between the fast paths and the generic codec (not installed).

#include <string_view>

namespace dclcomms::codec::detail {

// Decodes `data` as `type_name` at nesting depth `depth`, discarding the
// result: the fast paths use it to validate oneof members they do not read,
// so they accept exactly the inputs the generic decoder accepts. Offsets in
// error messages are relative to `origin`. Throws Error{Decode} without the
// type-name prefix (the caller adds its own).
void validate_nested(std::string_view type_name, std::string_view data, const char* origin,
                     int depth);

}  // namespace dclcomms::codec::detail
