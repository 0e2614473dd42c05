#pragma once
// The libprotobuf DescriptorPool behind the generic codec, built once from the
// embedded descriptor set. For tests and tools that want libprotobuf's view of
// the same schema (e.g. DynamicMessageFactory); the codec itself never uses
// libprotobuf's serializer or JSON printer. Thread-safe: built on first use,
// immutable afterwards, valid for the life of the process.

#include <google/protobuf/descriptor.h>

namespace dclcomms::codec {

const google::protobuf::DescriptorPool& descriptor_pool();

}  // namespace dclcomms::codec
