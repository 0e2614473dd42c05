#pragma once
// A server frame ready to write, and the non-blocking write of one
// connection's frames (server.cpp's WsppLink, the GoogleTests).

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "dclcomms/ws/limits.hpp"
#include "link.hpp"

namespace dclcomms::ws {

// A ready-to-write frame: the WebSocket header (at most 10 bytes, kept
// inline), the payload moved in as it was encoded (no copy of it into a
// header + payload buffer; a write gathers the parts), and optionally a tail
// shared with other frames (a connector relay's island member entries). Server
// frames are never masked, so every receiver's write points at the same bytes
// (a room broadcast encodes and allocates once).
class WireFrame final : public OutFrame {
 public:
  static constexpr size_t kParts = 3;  // header, payload, tail
  WireFrame(std::string payload, uint8_t opcode, std::shared_ptr<const std::string> tail = nullptr)
      : header_(frame_header(opcode, payload.size() + (tail ? tail->size() : 0))),
        payload_(std::move(payload)),
        tail_(std::move(tail)) {}
  size_t size() const noexcept override { return payload_.size() + tail().size(); }
  std::string_view header() const noexcept { return header_; }
  std::string_view payload() const noexcept { return payload_; }
  std::string_view tail() const noexcept { return tail_ ? std::string_view(*tail_) : ""; }
  size_t wire_size() const noexcept { return header_.size() + size(); }
  // The bytes on the wire, in order (the tail empty when there is none).
  std::array<std::string_view, kParts> parts() const noexcept {
    return {header(), payload(), tail()};
  }
  // Appends the frame's bytes from offset skip (< wire_size()) to out.
  void append_wire(std::string& out, size_t skip) const {
    for (std::string_view part : parts()) {
      if (skip >= part.size()) {
        skip -= part.size();
        continue;
      }
      out.append(part.substr(skip));
      skip = 0;
    }
  }

 private:
  std::string header_;  // short: in the string object itself, no allocation
  std::string payload_;
  std::shared_ptr<const std::string> tail_;
};

// Where a write of frames stopped.
struct WriteEnd {
  size_t frame = 0;     // the first frame not completely written (n: all were)
  size_t skip = 0;      // bytes of it the socket took
  bool full = false;    // the socket's send buffer is full (EAGAIN or a short write)
  bool broken = false;  // the write failed otherwise (the connection's read reports it)
  size_t syscalls = 0;  // send/sendmsg calls made
};

// Frames of one connection up to this many bytes in all are copied into one
// buffer and written with one send(): for small frames (a room's ~100-byte
// updates, ~19 of them per write) the kernel's work per iovec (two or three
// per frame) costs more than the copy. Bigger writes (a connector's ~5 KB
// island_changed to each session) gather the frames' parts with sendmsg.
constexpr size_t kCopyWriteMax = 16384;

// Writes frames[0..n) to the non-blocking socket fd, in order, as far as it
// takes them (MSG_NOSIGNAL | MSG_DONTWAIT). The copy buffer is per thread.
WriteEnd write_frames(int fd, const WireFrame* const* frames, size_t n);

}  // namespace dclcomms::ws
