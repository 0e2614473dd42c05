#pragma once
// The read path of room sessions: websocketpp's transport connection with
// its frame reads taken over for the plain case (server_impl.hpp's WsppConfig
// uses FastReadEndpoint as its transport).
//
// websocketpp reads a frame through a composed asio read, two strand
// dispatches, std::function and bind layers, a message allocation and a
// byte-wise unmasking: ~4,700 instructions per incoming frame, about half of
// the server's user-space work per relayed room update (docs/performance.md).
// Once a room session is open and a ReadSink is set, this connection reads
// the socket itself and hands every whole, final, masked binary frame (and
// every pong) straight to the sink: unmasked 8 bytes at a time into the
// payload string, no message object, no strand.
//
// Everything else goes to websocketpp as it was: a frame that is not that
// plain case (text, ping, close, a fragment, reserved bits, an unmasked or
// badly encoded header, a payload over the connection's message limit or
// bigger than the read buffer), or any frame once the connection is no
// longer open. The bytes from that frame on are handed to websocketpp's own
// frame reader, which then reads the connection to its end; the connection
// never comes back. websocketpp sees a suffix of the stream that starts at a
// frame boundary with no message open (everything before it was whole final
// frames), so its checks, close codes and close handshake are unchanged.
//
// The sink is only set (FastReadConnection::set_read_sink) on a connection
// whose handshake left no bytes behind it (the client waited for the 101, as
// RFC 6455 4.1 requires; websocketpp would otherwise have started a frame we
// do not see) and whose io_context one thread runs (no strand needed).
// Errors and the end of the stream go to websocketpp's read handler as its
// own read reports them. websocketpp's pause_reading() is not honoured while
// this connection reads (the server never pauses a connection's reads).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <websocketpp/transport/asio/endpoint.hpp>

namespace dclcomms::ws {

// Where a connection's plain frames go (server.cpp: the session's shard).
class ReadSink {
 public:
  virtual ~ReadSink() = default;
  // Whether the connection is still open (else websocketpp reads the rest).
  virtual bool open() = 0;
  // The connection's limit on a message's payload bytes.
  virtual size_t max_payload() = 0;
  // A whole binary message.
  virtual void message(std::string payload) = 0;
  // A pong (its payload is not used).
  virtual void pong() = 0;
};

// One frame at the start of [p, p + n).
struct PlainFrame {
  enum Kind { Binary, Pong, Incomplete, Other } kind = Other;
  size_t header = 0;   // bytes before the payload (mask key included)
  size_t payload = 0;  // payload bytes
};

// Parses the frame header at p (n bytes available; the read buffer holds at
// most cap bytes): Binary/Pong when the whole frame is there, Incomplete when
// it is a plain frame not yet whole that fits in the buffer, Other for
// everything websocketpp must handle.
inline PlainFrame parse_plain_frame(const uint8_t* p, size_t n, size_t max_payload, size_t cap) {
  PlainFrame f;
  if (n < 2) {
    f.kind = PlainFrame::Incomplete;
    return f;
  }
  const uint8_t b0 = p[0], b1 = p[1];
  const bool fin = (b0 & 0x80) != 0, masked = (b1 & 0x80) != 0;
  const uint8_t rsv = b0 & 0x70, opcode = b0 & 0x0f, len7 = b1 & 0x7f;
  if (!fin || rsv != 0 || !masked || (opcode != 0x2 && opcode != 0xA)) return f;
  if (opcode == 0xA && len7 > 125) return f;
  const size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
  const size_t header = 2 + ext + 4;
  if (n < 2 + ext) {
    f.kind = PlainFrame::Incomplete;
    return f;
  }
  uint64_t len = len7;
  if (ext == 2) {
    len = (uint64_t{p[2]} << 8) | p[3];
    if (len < 126) return f;  // not minimally encoded: websocketpp's error
  } else if (ext == 8) {
    len = 0;
    for (size_t i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
    if (len <= 0xFFFF) return f;  // not minimally encoded (or the top bit set)
  }
  if (opcode == 0x2 && len > max_payload) return f;  // websocketpp closes 1009
  if (len > cap - header) return f;                  // never whole in the buffer
  f.header = header;
  f.payload = static_cast<size_t>(len);
  if (n < header || n - header < f.payload) {
    f.kind = PlainFrame::Incomplete;
    return f;
  }
  f.kind = opcode == 0x2 ? PlainFrame::Binary : PlainFrame::Pong;
  return f;
}

// The payload of a whole frame parsed at p, unmasked.
inline std::string unmask_payload(const uint8_t* p, const PlainFrame& f) {
  const uint8_t* key = p + f.header - 4;
  std::string out(reinterpret_cast<const char*>(p + f.header), f.payload);  // still masked
  char* d = out.data();
  uint32_t k4;
  std::memcpy(&k4, key, 4);
  const uint64_t k8 = (uint64_t{k4} << 32) | k4;
  size_t i = 0;
  for (; i + 8 <= f.payload; i += 8) {
    uint64_t w;
    std::memcpy(&w, d + i, 8);
    w ^= k8;
    std::memcpy(d + i, &w, 8);
  }
  for (; i < f.payload; ++i) d[i] = static_cast<char>(d[i] ^ key[i & 3]);
  return out;
}

template <typename config>
class FastReadConnection : public websocketpp::transport::asio::connection<config> {
  using base = websocketpp::transport::asio::connection<config>;

 public:
  using read_handler = websocketpp::transport::read_handler;
  using base::base;

  // Bytes the handshake's reads returned past the end of the request's
  // header block (websocketpp keeps them as frame data): 0 when the client
  // waited for the 101; unset when that end was not seen.
  std::optional<size_t> handshake_leftover() const { return leftover_; }

  // From now on, plain frames go to sink (see above). Set on the thread
  // that reads the connection, before its first frame read (on open).
  void set_read_sink(std::unique_ptr<ReadSink> sink) { sink_ = std::move(sink); }

 protected:
  // Called by websocketpp's connection for every read (handshake and frames).
  void async_read_at_least(size_t num_bytes, char* buf, size_t len, read_handler handler) {
    if (sink_ && num_bytes == 1) {
      pending_ = 0;
      read_plain(buf, len, std::move(handler));
      return;
    }
    if (!leftover_ && !head_lost_ && num_bytes == 1) {
      // A handshake read: see where the request's header block ends.
      base::async_read_at_least(
          num_bytes, buf, len,
          [this, buf, h = std::move(handler)](const std::error_code& ec, size_t n) {
            if (!ec) note_head(buf, n);
            h(ec, n);
          });
      return;
    }
    head_lost_ = head_lost_ || !leftover_;
    base::async_read_at_least(num_bytes, buf, len, std::move(handler));
  }

 private:
  void note_head(const char* buf, size_t n) {
    // The header block ends at the first CRLF CRLF; the 3 bytes before this
    // read are kept in tail_ for one split across reads.
    for (size_t i = 0; i < n; ++i) {
      tail_ = (tail_ << 8) | static_cast<uint8_t>(buf[i]);
      if (tail_ == 0x0d0a0d0a) {
        leftover_ = n - i - 1;
        return;
      }
    }
  }

  // Reads into buf after the pending_ bytes (a plain frame not yet whole).
  void read_plain(char* buf, size_t len, read_handler handler) {
    auto self = std::static_pointer_cast<FastReadConnection>(this->get_shared());
    this->get_raw_socket().async_read_some(
        asio::buffer(buf + pending_, len - pending_),
        [self, buf, len, h = std::move(handler)](const std::error_code& ec, size_t n) mutable {
          self->on_plain_read(buf, len, std::move(h), ec, n);
        });
  }

  void on_plain_read(char* buf, size_t len, read_handler handler, const std::error_code& ec,
                     size_t n) {
    if (ec) {  // the end, an error, or the socket closed by websocketpp
      sink_.reset();
      this->handle_async_read(std::move(handler), ec, n);
      return;
    }
    const size_t total = pending_ + n;
    const auto* data = reinterpret_cast<const uint8_t*>(buf);
    size_t p = 0;
    while (p < total) {
      if (!sink_->open()) break;
      PlainFrame f = parse_plain_frame(data + p, total - p, sink_->max_payload(), len);
      if (f.kind == PlainFrame::Other) break;
      if (f.kind == PlainFrame::Incomplete) {
        std::memmove(buf, buf + p, total - p);
        pending_ = total - p;
        read_plain(buf, len, std::move(handler));
        return;
      }
      if (f.kind == PlainFrame::Binary) {
        sink_->message(unmask_payload(data + p, f));
      } else {
        sink_->pong();
      }
      p += f.header + f.payload;
    }
    if (p == total) {
      pending_ = 0;
      read_plain(buf, len, std::move(handler));
      return;
    }
    // websocketpp reads from this frame on, to the connection's end.
    std::memmove(buf, buf + p, total - p);
    pending_ = 0;
    sink_.reset();
    this->handle_async_read(std::move(handler), std::error_code(), total - p);
  }

  std::unique_ptr<ReadSink> sink_;
  size_t pending_ = 0;  // bytes of a plain frame not yet whole, at the buffer's start
  std::optional<size_t> leftover_;
  bool head_lost_ = false;  // a read not seen by note_head before the head's end
  uint32_t tail_ = 0;
};

// websocketpp's asio transport with FastReadConnection as its connection.
template <typename config>
class FastReadEndpoint : public websocketpp::transport::asio::endpoint<config> {
 public:
  typedef FastReadConnection<config> transport_con_type;
};

}  // namespace dclcomms::ws
