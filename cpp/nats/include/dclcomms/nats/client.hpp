#pragma once
// The hot NATS subjects in C++ (libnats, the NATS C client): heartbeats out of a
// connector, heartbeats and session resets into the clustering engine, without
// Python per message. Python (dclcomms.nats.pubsub) still wires everything:
// which scheme, which servers, which engine, which peers are backed off.
//
// Subjects (docs/nats.md): per scheme, a heartbeat travels as
//   native : one HeartbeatBatch per connector batch on dclcomms.v1.heartbeats
//            (several when it exceeds the server's max_payload, from its INFO)
//   workers: one Heartbeat per peer on peer.<addr>.heartbeat
//   v3     : one Heartbeat per peer on client-proto.peer.<addr>.heartbeat
// and a session start / end as an empty peer.<addr>.connect / .disconnect (all
// schemes). Addresses are "0x" + 40 lowercase hex digits, validated both ways.
//
// Threads. libnats runs its own (socket reader, flusher, message delivery). A
// Client adds two: the publisher, which drains a bounded outbox into libnats
// (so publishing never blocks the caller: beyond max_outbox_bytes messages are
// dropped and counted, as the Python pub/sub does), and, once feed_engine() is
// called, the applier, which hands everything the subscriptions received to
// the engine in arrival order (heartbeats in batches: one update_many per run
// of heartbeats between two resets). The engine has its own lock; the applier
// is the only thread of this client that touches it. Every public member is
// thread-safe.
//
// Reconnection is libnats': every URL tried (randomised), forever, waiting
// reconnect_wait_ms between rounds; subscriptions are restored by libnats. While
// disconnected, libnats buffers up to reconnect_buf_bytes of publications and
// refuses beyond that (counted as dropped_nats_buffer).

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dclcomms/archipelago/engine.hpp"
#include "dclcomms/ws/server.hpp"

namespace dclcomms::nats {

enum class Scheme : uint8_t { Native, Workers, V3 };

// "native", "workers" or "v3"; else Error{Config, "invalid_parameter"}.
Scheme parse_scheme(std::string_view name);

// --- pure helpers (tested on their own) ----------------------------------------

// "0x" + 40 lowercase hex digits.
bool valid_address(std::string_view address) noexcept;
// 20 raw bytes of a valid address (no check).
void address_to_raw(std::string_view address, char out[20]) noexcept;
// "0x" + hex of 20 raw bytes, appended to out.
void raw_to_address(const char raw[20], std::string& out);
// The 40 lowercase hex digits of 20 raw bytes, written to out (two at a time).
void raw_to_hex(const char raw[20], char out[40]) noexcept;

// The common Heartbeat of the per-peer schemes, decoded without the generic
// path: true (and xyz set) when `data` is exactly one position field whose
// x/y/z each appear at most once as fixed32 (an omitted one is 0) - what every
// encoder writes for a heartbeat without desired_room. Anything else: false
// (decode it with codec::decode_heartbeat, which agrees wherever this is true).
bool heartbeat_position_only(std::string_view data, float xyz[3]) noexcept;

// The wire subject of one peer's heartbeat (workers / v3; Native has none).
std::string heartbeat_subject(Scheme scheme, std::string_view address);

// One heartbeat row: what a connector hands over and the engine ingests.
struct HeartbeatRows {
  std::string raw_addresses;  // n x 20 bytes
  std::vector<float> xyz;     // n x 3
  // Rows whose heartbeat carried desired_room: (row, room); "" clears.
  std::vector<std::pair<uint32_t, std::string>> rooms;
  size_t size() const noexcept { return raw_addresses.size() / 20; }
};

// dclcomms.nats.v1.HeartbeatBatch of `rows` (the bytes the Python encoder writes).
std::string encode_heartbeat_batch(const HeartbeatRows& rows);
// Its inverse; Error{Decode, ...} when malformed (lengths, room index).
HeartbeatRows decode_heartbeat_batch(std::string_view data);

// dclcomms.nats.v1.IslandChanges (native scheme: one island's island_changed of a
// tick), its fields as views into `data`. Error{Decode, ...} when it is not a valid
// message (a known field with another wire type included); the lengths of the
// repeated fields are not checked here.
struct IslandChangesView {
  std::string_view island_id;
  std::string_view peers;      // the IslandChangedMessage `peers` entries
  std::string_view addresses;  // n x 20 bytes
  std::vector<std::string_view> conn_strs;
  std::vector<std::string_view> from_island_ids;
};
IslandChangesView decode_island_changes(std::string_view data);

// engine.islands (an encoded IslandStatusMessage) as parts of at most
// max_payload bytes each (docs/nats.md, "engine.islands in parts"; the same bytes
// as dclcomms.nats.status_parts.split_island_status): {data} when it fits; else
// whole islands (field 1 entries, in order) per part, each part headed by field
// 1000 IslandStatusPart{snapshot, index, count}. Error{Encode, "max_payload"}
// when one island's entry cannot fit in a part; Error{Decode, ...} when `data`
// is not a valid message.
std::vector<std::string> split_island_status(std::string_view data, size_t max_payload,
                                             uint64_t snapshot);

// What a subscription of the feed delivers, classified from its wire subject.
struct Classified {
  enum class Kind { Ignore, Heartbeat, HeartbeatBatch, Connect, Disconnect, BadAddress };
  Kind kind = Kind::Ignore;
  std::string_view address;  // Heartbeat, Connect, Disconnect (validated)
};
Classified classify(Scheme scheme, std::string_view subject) noexcept;

// --- the connector relay (island traffic -> a connector's sessions) -------------
//
// The subjects of the core's island messages, per scheme:
//   native : dclcomms.v1.island.<id>.changed (IslandChanges), .members
//            (IslandMembership), engine.islands (tick end)
//   workers: engine.peer.<addr>.island_changed (IslandChangedMessage),
//            engine.island.<id>.peer_join|peer_left (JoinIslandMessage),
//            engine.islands
//   v3     : client-proto.<addr>.island_changed, client-proto.island.<id>.peer_join|
//            peer_left, archipelago.islands
std::vector<std::string> relay_patterns(Scheme scheme);

// The last member map validated per island (compatibility schemes: every
// island_changed of one island in a tick carries the same entries, checked once).
struct PeersCache {
  std::unordered_map<std::string, std::string> entries;  // island id -> entries
};

// What one message of those subscriptions is for the relay.
struct RelayDecoded {
  enum class Kind { Ignore, Item, BadAddress, BadIsland, BadSubject };
  Kind kind = Kind::Ignore;
  ws::RelayItem item;
};
// Decodes one message as the Python pub/sub and connector glue read it
// (docs/nats.md): island_changed with its member entries checked (a
// malformed one throws Error{Decode, ...}), peer_join/peer_left with the
// island and peer of their payload, the islands status as the tick end (its
// payload is not read). Subjects with a bad address or island token are
// BadAddress / BadIsland (native: BadSubject), never decoded.
RelayDecoded decode_relay(Scheme scheme, std::string_view subject, std::string_view data,
                          PeersCache& cache);

// --- the client ----------------------------------------------------------------

struct ClientOptions {
  std::vector<std::string> servers;  // nats://host:port, at least one
  std::string name = "dclcomms";
  int64_t reconnect_wait_ms = 500;
  int64_t connect_timeout_ms = 2000;
  int reconnect_buf_bytes = 8 * 1024 * 1024;  // libnats' buffer while reconnecting
  size_t max_outbox_bytes = 128u * 1024 * 1024;
  // Bound of what the subscriptions received and the applier has not applied
  // yet (beyond: dropped, counted as dropped_inbox_full).
  size_t max_inbox_rows = 4u * 1024 * 1024;
};

struct ClientStats {
  uint64_t published = 0;        // messages handed to libnats
  uint64_t published_bytes = 0;  // their payload bytes
  uint64_t received = 0;         // messages received by the feed's subscriptions
  uint64_t dropped_outbox_full = 0;
  uint64_t dropped_nats_buffer = 0;
  uint64_t dropped_closed = 0;
  uint64_t dropped_max_payload = 0;    // beyond the server's max_payload
  uint64_t dropped_decode = 0;         // undecodable messages (received)
  uint64_t dropped_slow_consumer = 0;  // libnats dropped for a slow subscription
  uint64_t dropped_inbox_full = 0;     // rows beyond max_inbox_rows
  uint64_t bad_address_publish = 0;    // heartbeats refused on publish (bad address)
  uint64_t bad_address_receive = 0;    // subjects refused on receive (bad address)
  uint64_t reconnects = 0;
  bool connected = false;
  size_t outbox_bytes = 0;
  // The feed (engine side).
  uint64_t heartbeats = 0;        // heartbeats applied to the engine
  uint64_t no_position = 0;       // heartbeats without a position (ignored)
  uint64_t resets = 0;            // connect + disconnect applied (engine.disconnect)
  uint64_t backoff_dropped = 0;   // heartbeats of backed-off peers
  uint64_t invalid_position = 0;  // non-finite positions (dropped)
  uint64_t out_of_bounds = 0;     // a coordinate beyond the world bound (dropped)
  uint64_t engine_errors = 0;     // update_many calls that threw (logged nowhere: counted)
  // The relay (connector side).
  uint64_t relayed = 0;              // island messages handed to the relay's sink
  uint64_t bad_island_receive = 0;   // an island token refused on receive
  uint64_t bad_subject_receive = 0;  // a native island subject refused on receive
  int64_t relay_last_ns = 0;         // steady clock: the last one handed over
  int64_t relay_tick_first_ns = 0;   // steady clock: the first one after the last tick end
};

class Client {
 public:
  // Connects to the first reachable server; Error{PubSub, "nats_unavailable"}
  // when none answers within connect_timeout_ms.
  Client(ClientOptions options, Scheme scheme);
  ~Client();  // close()
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Scheme scheme() const noexcept { return scheme_; }

  // Queues a connector's heartbeats (never blocks). Rows with a bad address are
  // dropped and counted (bad_address_publish); returns the rows queued.
  // ops/preferred as archipelago::Engine::update_many (null: keep every one).
  size_t publish_heartbeats(const std::string_view* addresses, size_t n, const float* xyz,
                            const archipelago::PreferenceOp* ops, const std::string* preferred);
  // Queues one message on a wire subject (the caller validated it). Messages
  // leave in the order they were queued, heartbeats included.
  bool publish(std::string subject, std::string data);
  // Queues engine.islands on its wire subject: whole when it fits the server's
  // max_payload, else split_island_status() parts (snapshot ids grow: the clock's
  // microseconds), all of them or none. An island too large for a part drops
  // the status (dropped_max_payload). Returns the messages queued (0: dropped).
  size_t publish_island_status(std::string subject, std::string data);

  // Waits until everything queued so far has reached the server (or timeout);
  // false on timeout or when disconnected.
  bool flush(int64_t timeout_ms);

  // Subscribes this scheme's heartbeat, connect and disconnect subjects and
  // feeds `engine` (heartbeats -> update_many, connect/disconnect ->
  // disconnect) on the applier thread. Once per client. The engine must outlive
  // the client or stop_feed(). Heartbeats with a non-finite coordinate, or one
  // beyond world_bound_m in absolute value (> 0; 0: no bound), are dropped and
  // counted (invalid_position, out_of_bounds); the rest of their batch is applied.
  void feed_engine(archipelago::Engine* engine, double world_bound_m = 0);
  // Unsubscribes and stops the applier (what was received is applied first).
  void stop_feed();
  // Waits until everything received so far has been applied (tests, benches).
  void settle();
  // Peers whose heartbeats are ignored until the given Unix ms (replaces the set).
  void set_backoff(std::vector<std::pair<std::string, int64_t>> until_ms);

  // Subscribes this scheme's island subjects (relay_patterns) and hands each
  // message, decoded (decode_relay), to sink on libnats' delivery thread, in
  // arrival order; undecodable ones are dropped and counted (dropped_decode).
  // Once per client; the sink must stay valid until stop_relay() or close().
  using RelaySink = std::function<void(std::vector<ws::RelayItem>)>;
  void relay_islands(RelaySink sink);
  // Unsubscribes (what the server already sent is handed over first).
  void stop_relay();

  ClientStats stats() const;
  bool connected() const;

  // Stops the feed, flushes the outbox (bounded wait), closes the connection.
  // Idempotent; later publishes are dropped (dropped_closed).
  void close();

 private:
  struct Impl;
  Scheme scheme_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dclcomms::nats
