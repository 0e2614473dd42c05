#pragma once
// What the session state machines (hub.hpp) need from the network, as an
// interface: server.cpp implements it on websocketpp, testing/fake_endpoint.hpp
// in memory (GoogleTests, fuzz targets). No sockets, threads or websocketpp
// here.
//
// Threading: the hub calls these from its own thread (the server's I/O thread
// holding the state lock); an implementation never calls back into the hub
// from inside one of them: timers, auth results and the end of a connection
// are reported later, as separate hub entries serialized like every other.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dclcomms/auth/auth.hpp"

namespace dclcomms::ws {

// WebSocket data frame opcodes (RFC 6455 section 5.2).
enum class FrameType : uint8_t { Text = 1, Binary = 2 };

// A server -> client frame, immutable once built: one object may be queued on
// any number of connections (the websocketpp one is a prepared message whose
// header and payload are written as they are, so a room broadcast encodes and
// allocates once, not once per receiver).
class OutFrame {
 public:
  virtual ~OutFrame() = default;
  virtual size_t size() const noexcept = 0;  // payload bytes
};
using FramePtr = std::shared_ptr<const OutFrame>;

// One client connection, owned by its session.
class Link {
 public:
  virtual ~Link() = default;
  // Queues frame; ignored once the connection is closing.
  virtual void send(const FramePtr& frame) = 0;
  // Starts the closing handshake (reason at most 123 bytes); the endpoint
  // reports the end of the connection later (Hub::closed).
  virtual void close(int code, const std::string& reason) = 0;
  virtual void ping() = 0;
  // Payload bytes queued on this connection and not completely written to
  // the socket yet (the backpressure measure).
  virtual size_t buffered_amount() const = 0;
  // The session's one timer: arm() replaces any earlier setting; fire runs
  // as a hub entry after ms. A replaced or cancelled timer may still fire
  // once (it was already due): fire must check that it is current.
  virtual void arm_timer(int64_t ms, std::function<void()> fire) = 0;
  virtual void cancel_timer() = 0;
  // The session completed its handshake (welcome sent): the endpoint stops
  // counting the connection against its address's unauthenticated cap.
  virtual void authenticated() {}
};

// Everything else the hub needs: clocks, frames, auth-chain checks, the
// event queue's wakeups.
class Environment {
 public:
  virtual ~Environment() = default;
  virtual int64_t unix_ms() = 0;    // wall clock, ms since the Unix epoch
  virtual int64_t steady_ms() = 0;  // monotonic clock, ms
  virtual FramePtr frame(std::string payload, FrameType type) = 0;
  // A frame whose payload is head followed by *tail, the tail shared with
  // other frames (an island's member map in each recipient's island_changed).
  // Default: one payload (head + tail).
  virtual FramePtr split_frame(std::string head, std::shared_ptr<const std::string> tail,
                               FrameType type) {
    return frame(std::move(head) + *tail, type);
  }
  // Verifies chain_json against challenge off the hub's thread (it takes
  // ~0.1 ms of secp256k1 work); done(result, verify_us) runs later as a hub
  // entry. Jobs still queued when the server stops are dropped.
  using VerifyDone = std::function<void(auth::AuthResult, int64_t)>;
  virtual void verify(std::string chain_json, std::string challenge, VerifyDone done) = 0;
  // The event queue went from empty to non-empty (true), or poll() left it
  // empty (false): the eventfd's readability. Called with the queue's lock
  // held, so the two never race; must not block.
  virtual void events_pending(bool pending) = 0;
  // Rooms may be spread over several hubs of one server (shards, one lock
  // each); the duplicate rule (one room session per address) spans them all.
  // The hub reports every room join and leave of an address (alias: the
  // session); on a join the endpoint has any member of that address in
  // ANOTHER hub kicked (Hub::kick_room_member). Default: one hub, nothing to
  // do (the hub handles duplicates within itself).
  virtual void room_joined(const std::string& address, uint32_t alias) {
    (void)address;
    (void)alias;
  }
  virtual void room_left(const std::string& address, uint32_t alias) {
    (void)address;
    (void)alias;
  }
  // Whether another hub of this server holds a room session of address (the
  // challenge's already_connected).
  virtual bool room_member_elsewhere(const std::string& address) {
    (void)address;
    return false;
  }
  // Connector sessions may be spread over several hubs too; the duplicate
  // rule (one connector session per address, newest wins) spans them. The
  // hub reports each connector session it registers (id: unique within the
  // hub, never reused) and
  // each registered one that leaves; `announce` pushes its PeerConnected /
  // PeerDisconnected. The endpoint keeps a directory (address -> hub,
  // session) and runs announce under its lock, so the two events of an
  // address keep the directory's order across hubs: on a register an older
  // session of the address in ANOTHER hub is replaced there
  // (Hub::replace_connector: kicked, 4006, no disconnect), and a leave is
  // announced only while the directory still names that session. Default:
  // one hub, announce at once.
  virtual void connector_registered(const std::string& address, uint64_t id,
                                    const std::function<void()>& announce) {
    (void)address;
    (void)id;
    announce();
  }
  virtual void connector_left(const std::string& address, uint64_t id,
                              const std::function<void()>& announce) {
    (void)address;
    (void)id;
    announce();
  }
  // Whether another hub of this server holds a connector session of address
  // (the challenge's already_connected).
  virtual bool connector_elsewhere(const std::string& address) {
    (void)address;
    return false;
  }
};

}  // namespace dclcomms::ws
