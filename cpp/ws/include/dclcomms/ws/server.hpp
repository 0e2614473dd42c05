#pragma once
// One WebSocket/HTTP server core (websocketpp 0.8.2 on standalone asio)
// serving the Archipelago ws-connector (/ws, /archipelago/ws; archipelago.md
// section 1), RFC-5 rooms (/rooms/<roomId>; transports.md section 1) and the
// message bus transport (/bus; control-plane.md section 4: the connector
// handshake, then JSON text frames in and out) and the live map feed
// (/map/feed: JSON text frames out, no handshake; docs/map.md). Handshakes, limits, close
// codes and room fan-out run entirely in C++; the embedding program (Python)
// only drains events with poll(), answers HTTP requests with respond() and
// interprets bus frames (topics, NATS). See docs/ws.md.
//
// Threads: io_threads asio threads run every socket handler; auth_threads
// workers verify auth chains (so the I/O threads never block on ~0.1-1 ms of
// secp256k1 work per handshake). All methods are thread-safe and may be called
// from any thread; the send/kick/close/respond methods post work to the I/O
// threads and return at once.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "dclcomms/codec/fast.hpp"

namespace dclcomms::ws {

// Every setting of one server, in one list: type, name, default, minimum and
// doc (unit, effect). Config's fields, validate() and the Python binding
// (dclcomms.ws.ServerConfig: keywords, defaults, docstrings, the field named
// in errors) are all generated from it, so a new limit is one line here plus
// the code that enforces it (docs/architecture.md). Minimum kAny: not checked
// (strings, flags, and unsigned values whose every value is meaningful).
// clang-format off
#define DCLCOMMS_WS_CONFIG(X)                                                                      \
  X(std::string, host, "127.0.0.1", kAny,                                                          \
    "address to listen on (an IPv4 or IPv6 literal)")                                              \
  X(uint16_t, port, 0, kAny, "TCP port; 0 = pick a free one")                                      \
  X(int, io_threads, 1, 1,                                                                         \
    "asio threads running every socket handler; with rooms served, also the number of room "      \
    "shards (a room lives in one, each shard has its own lock)")                                   \
  X(int, auth_threads, 1, 1, "workers verifying auth chains off the I/O threads")                  \
  X(size_t, max_frame_bytes, 16384, 1,                                                             \
    "connector and rooms: a larger inbound frame is closed 1009 (bytes)")                          \
  /* connector (/ws, /archipelago/ws) */                                                           \
  X(bool, connector, true, kAny, "serve the Archipelago connector on /ws and /archipelago/ws")     \
  X(int64_t, connector_handshake_timeout_ms, 60'000, 1,                                            \
    "connector and bus: each handshake stage must end within this (ms), else 4001")                \
  X(int, heartbeat_max_per_s, 10, 1,                                                               \
    "connector heartbeats accepted per session and 1 s window; more are dropped (counted)")        \
  X(double, world_bound_m, 4096.0, 0,                                                              \
    "connector: a heartbeat with |x|, |y| or |z| above this is dropped and counted "                \
    "(heartbeats_dropped_out_of_bounds), like a NaN one (metres; 0 = no bound)")                   \
  X(size_t, connector_max_queued_bytes, 1 << 20, kAny,                                             \
    "connector and bus: a send that would queue more than this to a session closes it 4008 "       \
    "(bytes; nothing is dropped)")                                                                 \
  /* rooms (/rooms/<roomId>) */                                                                    \
  X(bool, rooms, true, kAny, "serve RFC-5 rooms on /rooms/<roomId>")                               \
  X(int64_t, rooms_handshake_timeout_ms, 10'000, 1,                                                \
    "rooms: each handshake stage must end within this (ms), else 4001")                            \
  X(size_t, rooms_max_users, 100, kAny, "members per room; more are kicked 4007")                  \
  X(size_t, rooms_soft_limit_bytes, 64 * 1024, kAny,                                               \
    "rooms: above this many bytes queued to a receiver, unreliable updates to it are dropped "     \
    "(counted)")                                                                                   \
  X(size_t, rooms_hard_limit_bytes, 1 << 20, kAny,                                                 \
    "rooms: a message that would queue more than this to a receiver closes it 4008 (bytes; "       \
    "at least rooms_soft_limit_bytes)")                                                            \
  X(int, rooms_sender_max_msgs_per_s, 0, 0,                                                        \
    "rooms sender token bucket, messages/s (0 = off): over it an unreliable update is dropped, "   \
    "a reliable one closes the sender 4009")                                                       \
  X(size_t, rooms_sender_max_bytes_per_s, 0, kAny,                                                 \
    "rooms sender token bucket, bytes/s of update bodies (0 = off)")                               \
  X(bool, scene_rooms, false, kAny,                                                                \
    "serve ADR-204 scene rooms on /scene-rooms/<roomId>: RFC-5 rooms with a membership of their "  \
    "own (a client holds an island room and a scene room), joined only with a token")              \
  X(std::optional<std::string>, ws_room_secret, std::nullopt, kAny,                                \
    "HS256 key of room ?access_token= JWTs (None: tokens are rejected)")                           \
  X(bool, ws_room_require_token, false, kAny, "rooms: reject upgrades without ?access_token=")     \
  /* bus (/bus): the connector's handshake (its timeout, the deny list), then text frames; */      \
  /* outbound limit connector_max_queued_bytes */                                                  \
  X(bool, bus, false, kAny, "serve the message-bus transport on /bus")                             \
  X(int, bus_max_frames_per_s, 50, 1, "bus: more text frames than this within any 1 s => 4009")    \
  X(size_t, bus_max_frame_bytes, 32768, 1, "bus: a larger inbound frame is closed 1009 (bytes)")   \
  /* bridge (/bridge): text frames to and from the embedder, which authenticates the */         \
  /* first ones and accepts or closes the session; outbound limit connector_max_queued_bytes */   \
  X(bool, bridge, false, kAny, "serve the third-party server bridge on /bridge")                   \
  X(int64_t, bridge_auth_timeout_ms, 10'000, 1,                                                    \
    "bridge: a session not accepted by the embedder within this is closed 4001 (ms)")             \
  X(int, bridge_max_frames_per_s, 200, 1,                                                          \
    "bridge: more text frames than this within any 1 s => 4009")                                   \
  X(size_t, bridge_max_frame_bytes, 65536, 1,                                                      \
    "bridge: a larger inbound frame is closed 1009 (bytes)")                                       \
  /* map feed (/map/feed): no handshake, server -> page text frames only */                        \
  X(bool, map_feed, false, kAny, "serve the live map feed on /map/feed")                           \
  X(size_t, map_feed_max_pages, 32, kAny, "map feed: open pages; one more is closed 1013")         \
  X(size_t, map_feed_max_queued_bytes, 1 << 20, 1,                                                 \
    "map feed: a frame that would queue more than this to a page is skipped for it; the page "     \
    "resyncs from the next key frame (bytes)")                                                     \
  X(int, map_feed_max_skipped, 30, 1,                                                              \
    "map feed: this many frames skipped for a page without it taking a delta in between "         \
    "close it 4008")                                                                               \
  /* every session */                                                                              \
  X(int64_t, idle_timeout_ms, 90'000, 0,                                                           \
    "a session silent (no frame, no pong) this long is closed 1001 'idle timeout'; pinged after "  \
    "a third of it (ms; 0 = off)")                                                                 \
  X(int64_t, http_timeout_ms, 10'000, 1,                                                           \
    "plain HTTP requests not answered by the embedder within this get 503 (ms)")                   \
  X(int64_t, http_keep_alive_ms, 5'000, 0,                                                         \
    "plain HTTP/1.1: a connection is kept open this long after an answer for the next request "    \
    "(keep-alive; ms; 0 = every answer closes its connection)")                                    \
  X(size_t, http_max_body_bytes, 64 * 1024, kAny,                                                  \
    "a plain HTTP request whose Content-Length is larger is answered 413 from its headers, "       \
    "before a byte of the body is read (bytes)")                                                   \
  /* admission: what one client or a flood may hold (docs/operations.md) */                        \
  X(size_t, max_connections, 0, kAny,                                                              \
    "open TCP connections served on every path; 0 = the file-descriptor limit (RLIMIT_NOFILE) "    \
    "minus fd_reserve. Past it a connection is answered 503 (or, within the reserve, served "      \
    "only /health/live, /health/ready, /status and /metrics)")                                     \
  X(size_t, fd_reserve, 64, kAny,                                                                  \
    "descriptors kept beyond max_connections: half for /health/*, /status and /metrics "           \
    "connections, half for the process (NATS, files)")                                             \
  X(size_t, max_unauthenticated_per_ip, 0, kAny,                                                   \
    "connections from one IP address that have not completed a handshake (plain HTTP ones "       \
    "included while open); one more is answered 503 and closed, unless one of them is idle "      \
    "between two keep-alive requests: the longest idle one is closed instead. 0 = "               \
    "max_connections / 8, at least 64")                                                            \
  X(int64_t, unauthenticated_evict_min_age_ms, 2'000, 0,                                           \
    "at max_connections, a new connection evicts the longest idle keep-alive HTTP connection "     \
    "(any age), else the oldest one that has not completed a "                                     \
    "handshake if that one is at least this old (a flood from many addresses cannot keep valid "   \
    "clients out); younger ones are kept, the newcomer gets the reserve or 503 (ms)")              \
  X(int64_t, unauthenticated_timeout_ms, 15'000, 1,                                                \
    "a WebSocket session not authenticated this long after its upgrade is closed 4001 "            \
    "'handshake timeout' (ms; each stage also has its own timeout)")                               \
  X(size_t, max_pending_frames, 8, 1,                                                              \
    "frames queued while an auth chain is verified; one more closes the session 4000")             \
  X(size_t, max_pending_heartbeats, 1 << 20, kAny,                                                 \
    "accepted heartbeats waiting for poll(); more are dropped (counted) so a stalled embedder "     \
    "cannot exhaust memory")
// clang-format on

// The minimum of settings that have none.
struct NoMinimum {};
inline constexpr NoMinimum kAny{};

struct Config {
#define DCLCOMMS_WS_CONFIG_FIELD(type, name, default_value, minimum, doc) type name = default_value;
  DCLCOMMS_WS_CONFIG(DCLCOMMS_WS_CONFIG_FIELD)
#undef DCLCOMMS_WS_CONFIG_FIELD
};

// Throws Error{Config, "invalid_parameter", "<field>: <why>"} naming the first
// setting below its minimum (or rooms_soft_limit_bytes above
// rooms_hard_limit_bytes).
void validate(const Config& config);

// --- events drained by poll() ------------------------------------------------

struct HttpRequest {
  uint64_t request_id = 0;
  std::string method, path, query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};
struct PeerConnected {
  std::string address;
};
struct PeerDisconnected {
  std::string address;
};
// Consecutive accepted heartbeats, in arrival order.
struct Heartbeats {
  std::vector<std::string> addresses;
  std::vector<float> positions;                           // 3 per heartbeat (x, y, z)
  std::vector<std::optional<std::string>> desired_rooms;  // nullopt = field absent
};
// Bus: handshake completed, welcome sent.
struct BusOpened {
  std::string address;
};
// Bus: one text frame of a completed session (valid UTF-8), in arrival order.
struct BusFrame {
  std::string address;
  std::string text;
};
// Bus: the registered session for address closed (for any reason, also at
// stop(); not a session replaced by a newer one).
struct BusClosed {
  std::string address;
};
// Bridge: a connection to /bridge (not authenticated yet: the embedder checks
// its first frames, then accept_bridge or close_bridge).
struct BridgeOpened {
  uint64_t id = 0;
  std::string query;
};
// Bridge: one text frame (valid UTF-8), in arrival order.
struct BridgeFrame {
  uint64_t id = 0;
  std::string text;
};
// Bridge: the session closed (for any reason, also at stop()).
struct BridgeClosed {
  uint64_t id = 0;
};
// A tapped room's traffic (set_room_tap): a member's update or an injected
// one, sender = its address or identity.
struct RoomMessage {
  std::string room;
  std::string from;
  std::string body;
  bool unreliable = false;
  int64_t received_ms = 0;  // server clock (Unix ms)
  bool scene = false;       // a scene room (/scene-rooms/<room>), else /rooms/<room>
};
using Event =
    std::variant<HttpRequest, PeerConnected, PeerDisconnected, Heartbeats, BusOpened, BusFrame,
                 BusClosed, BridgeOpened, BridgeFrame, BridgeClosed, RoomMessage>;

// The kind of an Event: its alternative, in variant order (bound to Python as
// _core.WsEventKind, the first item of every polled event).
enum class EventKind : uint8_t {
  Http,
  Connected,
  Disconnected,
  Heartbeats,
  BusOpened,
  BusFrame,
  BusClosed,
  BridgeOpened,
  BridgeFrame,
  BridgeClosed,
  RoomMessage
};
inline EventKind kind_of(const Event& ev) noexcept {
  return static_cast<EventKind>(ev.index());
}
static_assert(std::variant_size_v<Event> == static_cast<size_t>(EventKind::RoomMessage) + 1);
static_assert(
    std::is_same_v<std::variant_alternative_t<static_cast<size_t>(EventKind::Heartbeats), Event>,
                   Heartbeats>);
static_assert(
    std::is_same_v<std::variant_alternative_t<static_cast<size_t>(EventKind::BusClosed), Event>,
                   BusClosed>);
static_assert(
    std::is_same_v<std::variant_alternative_t<static_cast<size_t>(EventKind::RoomMessage), Event>,
                   RoomMessage>);

// --- the connector relay (island traffic from the pub/sub, no embedder) -----
//
// What a connector does with the core's island messages (archipelago.md 1.5),
// done on the I/O thread of the connector's sessions instead of in the
// embedder: Server::relay() takes them in the order the pub/sub delivered them.
// Per connector session the hub remembers the island it last sent it, and per
// island which of its sessions are there:
//  * IslandChangesItem: island_changed to each recipient connected here (others
//    are counted relayed_not_connected). A session that has no island yet (new,
//    or replacing a kicked one) gets no from_island_id;
//  * IslandMovesItem: left_island then join_island of each peer to this
//    connector's other sessions on that island, except those that received
//    their island_changed for that island since the last TickEndItem (their
//    member map is already current);
//  * TickEndItem: the end of a tick (engine.islands).
struct IslandChangesItem {
  struct Recipient {
    std::string address;  // lowercase 0x address
    std::string conn_str;
    std::optional<std::string> from_island_id;
    // Optional: the ServerPacket{island_changed} of this recipient with these
    // fields, built by the caller (off the I/O thread); the hub uses it unless it
    // must drop from_island_id. Empty: built by the hub.
    std::string frame;
  };
  std::string island_id;
  std::string peers_entries;  // the IslandChangedMessage peers entries, encoded (shared)
  std::vector<Recipient> recipients;
  // The recipients' frames are only the bytes before peers_entries
  // (codec::encode_server_island_changed_head): the hub writes each head and
  // then the item's peers_entries, one copy shared by all of them (a frame of
  // two parts), instead of a whole frame each.
  bool frame_heads = false;
};
struct IslandMovesItem {
  std::string island_id;
  std::vector<std::string> left, joined;  // in this order
};
struct TickEndItem {};
using RelayItem = std::variant<IslandChangesItem, IslandMovesItem, TickEndItem>;

// Server::relay_stats(): what the relay took and handed to sessions.
struct RelayStats {
  uint64_t items = 0;            // RelayItems handed to the I/O thread
  uint64_t dropped_stopped = 0;  // RelayItems given to a server not running
  uint64_t drains = 0;           // I/O-thread tasks that handed them to sessions
  int64_t last_drain_ns = 0;     // steady clock (CLOCK_MONOTONIC) at the end of the last one
};

// Counters are monotonic since start(); gauges are current values.
struct Stats {
  std::vector<std::pair<std::string, uint64_t>> connector;   // "sessions" first
  std::vector<std::pair<std::string, uint64_t>> rooms;       // "users", "rooms" first
  std::vector<std::pair<std::string, size_t>> room_details;  // (roomName, count)
  std::vector<std::pair<std::string, uint64_t>> bus;         // "sessions" first
  std::vector<std::pair<std::string, uint64_t>> bridge;      // "sessions", "taps" first
  std::vector<std::pair<std::string, uint64_t>> feed;        // "pages" first
  // admission: "connections", "unauthenticated", "max_connections" (gauges),
  // then counters (refused_*, accept_paused, http_too_large)
  std::vector<std::pair<std::string, uint64_t>> server;
};

class Server {
 public:
  explicit Server(Config config);  // validate(config) first
  ~Server();                       // stops if running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the threads; returns the bound port. Throws
  // Error{Config, ...} when already started or the address cannot be bound.
  uint16_t start();
  // Closes every socket with 1001, answers pending HTTP requests 503, joins
  // the threads. Idempotent; the server cannot be restarted.
  void stop();
  uint16_t port() const noexcept;

  // An eventfd, readable while events are pending (owned by the server).
  int event_fd() const noexcept;
  // Drains up to max_events pending events (non-blocking).
  std::vector<Event> poll(size_t max_events);

  // Answers an HttpRequest event once; later or unknown ids are ignored.
  void respond(uint64_t request_id, int status,
               std::vector<std::pair<std::string, std::string>> headers, std::string body);

  // Connector sends to the registered session of a lowercase address; ignored
  // when not connected. Never dropped: a receiver above
  // connector_max_queued_bytes is closed 4008 instead.
  void send_island_changed(const std::string& address, const codec::IslandChanged& msg);
  // The same from the header fields and the peers entries already encoded
  // (what every member of one island shares): one call encodes the header and
  // the frame around the entries, which are copied, not re-encoded.
  void send_island_changed(const std::string& address, std::string_view island_id,
                           std::string_view conn_str,
                           const std::optional<std::string>& from_island_id,
                           std::string_view peers_entries);
  // The same from an encoded IslandChangedMessage (e.g. received over NATS and
  // already validated by decoding): wrapped, not re-encoded.
  void send_island_changed_message(const std::string& address, std::string message);
  void send_join_island(const std::string& address, const std::string& island_id,
                        const std::string& peer_id);
  void send_left_island(const std::string& address, const std::string& island_id,
                        const std::string& peer_id);
  // The connector relay (RelayItem above): items are handled in the order of
  // the calls, on an I/O thread, in as few tasks as there are calls while one
  // is pending. Dropped (counted) when the server is not running.
  void relay(std::vector<RelayItem> items);
  RelayStats relay_stats() const;
  // The island the relay last sent the connector session of a lowercase
  // address ("" when none, or not connected here).
  std::string connector_island_of(const std::string& address) const;
  // Closes the connector session of address with code/reason; for 4005 and
  // 4006 the client first gets kicked{KR_NEW_SESSION} (32 00). Throws
  // Error{Config, "invalid_parameter"} for a code a server may not send.
  void kick(const std::string& address, int code, const std::string& reason);
  // Bus: one text frame (text must be valid UTF-8) to the registered bus
  // session of a lowercase address; ignored when not connected. Never
  // dropped: a receiver above connector_max_queued_bytes is closed 4008.
  void send_bus(const std::string& address, std::string text);
  // Closes the bus session of address with code/reason (no packet before the
  // close frame). Throws Error{Config, "invalid_parameter"} as kick() does.
  void close_bus(const std::string& address, int code, const std::string& reason);
  // Map feed (/map/feed): one text frame per tick to every open page. A page
  // that is in sync gets delta; one that is not (just opened, or skipped a
  // frame because more than map_feed_max_queued_bytes were queued to it) gets key
  // when key is not empty and nothing otherwise. Never buffers without bound:
  // a frame that does not fit is skipped for that page (it resyncs from a later
  // key frame); map_feed_max_skipped skips without a delta taken in between
  // close it 4008.
  void publish_feed(std::string delta, std::string key);
  // Whether some open page waits for a key frame (build one for the next
  // publish_feed only then).
  bool feed_wants_key() const;
  // Rooms: closes the member `address` (lowercase) of `room` (empty: of any
  // room) in the island rooms (scene=false) or the scene rooms (scene=true):
  // peer_kicked{reason}, then close 4005. For bar_ms > 0 the address is also
  // refused (peer_kicked + 4005 at admission) by that room (empty: every room
  // of that kind) for bar_ms: a token issued before a ban cannot rejoin.
  void kick_room_member(bool scene, const std::string& room, const std::string& address,
                        const std::string& reason, int64_t bar_ms);
  // Rooms: lifts the bar kick_room_member set on `address` for `room` (empty: the bar
  // on every room of that kind; a room's own bar stays) before it runs out (an unban).
  void unbar_room_member(bool scene, const std::string& room, const std::string& address);
  // Rooms: the addresses in `room` in join order (empty when it does not exist).
  std::vector<std::string> room_members(bool scene, const std::string& room) const;
  // The scene room (/scene-rooms/<room>) the address is a member of now, "" when none
  // (the /bus's scene topics: docs/msgbus.md).
  std::string scene_room_of(const std::string& address) const;
  // Replaces the deny list (lowercased here); applies to new handshakes
  // (connector and bus).
  void set_deny_list(const std::vector<std::string>& addresses);

  // Bridge (control-plane.md 5): the embedder authenticates a session from its
  // frames, then accepts it (stops its auth timer) or closes it; send_bridge
  // queues one text frame (never dropped: over connector_max_queued_bytes the
  // session is closed 4008). Unknown or closed ids are ignored.
  void accept_bridge(uint64_t id);
  void send_bridge(uint64_t id, std::string text);
  void close_bridge(uint64_t id, int code, const std::string& reason);
  // Room taps: while on, every update relayed in room (and every injected
  // one) is also a RoomMessage event. Off by default: an untapped room costs
  // one empty-set check per update. scene: the scene room /scene-rooms/<room>
  // (the gatekeeper's registry), else the room /rooms/<room>; the two are
  // tapped, injected and released independently.
  void set_room_tap(const std::string& room, bool on, bool scene = false);
  // Broadcasts body to every member of room as a peer_update whose sender is
  // identity (not a player: its own alias, announced with peer_join on first
  // use and listed in later welcomes, until release_room_identity or the
  // room empties). Ignored (counted) when the room has no members or body is
  // over max_frame_bytes.
  void inject_room(const std::string& room, const std::string& identity, std::string body,
                   bool unreliable, bool scene = false);
  void release_room_identity(const std::string& room, const std::string& identity,
                             bool scene = false);

  Stats stats() const;

  class Impl;

 private:
  void send_connector(const std::string& address, std::string payload);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dclcomms::ws
