#pragma once
// The serialized google.protobuf.FileDescriptorSet of proto/ (with imports),
// produced by protoc during the build and embedded in the binary.

#include <string_view>

namespace dclcomms::proto {

// Static storage; valid for the life of the process.
std::string_view descriptor_set() noexcept;

}  // namespace dclcomms::proto
