// libFuzzer target for the protobuf decoders (style rule 10): the first byte
// picks a message type, the rest is decoded by the generic decoder and, for
// the hot types, by the matching fast path. Any outcome other than a value or
// a dclcomms::Error{Decode} (a crash, a sanitizer report, another exception)
// is a bug. Build and run: see docs/protocol.md, "Fuzzing".

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dclcomms/codec/codec.hpp"
#include "dclcomms/codec/fast.hpp"
#include "dclcomms/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::string> types = dclcomms::codec::message_types();
  if (size == 0) return 0;
  const std::string& type = types[data[0] % types.size()];
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const dclcomms::codec::Value v = dclcomms::codec::decode(type, bytes);
    // What decodes must re-encode, and decode again to the same value
    // (also with the defaults filled in, as the Python API may ask).
    const std::string again = dclcomms::codec::encode(type, v);
    if (!(dclcomms::codec::decode(type, again) == v)) __builtin_trap();
    const dclcomms::codec::Value full =
        dclcomms::codec::decode(type, bytes, dclcomms::codec::DecodeOptions{true});
    dclcomms::codec::encode(type, full);
  } catch (const dclcomms::Error& e) {
    if (e.kind() != dclcomms::ErrorKind::Decode) __builtin_trap();
  }
  try {
    switch (data[0] % 4) {
      case 0:
        dclcomms::codec::decode_client_packet(bytes);
        break;
      case 1:
        dclcomms::codec::decode_heartbeat(bytes);
        break;
      case 2: {
        // The fast encoder's output decodes back to what was decoded.
        const auto msg = dclcomms::codec::decode_island_changed_message(bytes);
        const auto back = dclcomms::codec::decode_island_changed_message(
            dclcomms::codec::encode_island_changed_message(msg));
        if (back.island_id != msg.island_id || back.conn_str != msg.conn_str) __builtin_trap();
        dclcomms::codec::decode_island_changed_header(bytes);
        break;
      }
      default:
        dclcomms::codec::decode_ws_packet(bytes);
    }
  } catch (const dclcomms::Error& e) {
    if (e.kind() != dclcomms::ErrorKind::Decode) __builtin_trap();
  }
  return 0;
}
