"""Helpers shared by the test modules (test modules never import each other).

* ``common``: conformance data, free ports, serving an aiohttp app;
* ``ws_wire``: an independent protobuf writer/reader for the WebSocket frames, auth chains,
  a raw WebSocket client; ``ws_events``: a server's polled events;
* ``realm_client``: Archipelago / room / bus clients of a running realm;
* ``nats_fixtures``: nats-server processes and clusters started by the tests;
* ``msgbus``: a realm with the /bus and a recording /bus peer;
* ``codec_schema``: the compiled schema through the protobuf runtime;
* ``pubsub``: addresses, heartbeat batches, waiting, for the pub/sub tests;
* ``island_relay``: a connector relaying the core's island messages over NATS, the frames
  each session must receive, the two-tick sequence the relay tests share;
* ``sim``, ``sim_oracle``: the simulator tests' engines, mobility script and oracle;
* ``postgres``: a fresh PostgreSQL database per run, an empty database of each kind;
* ``gatekeeper``: a running gatekeeper, signed requests to it, moderation files;
* ``netfaults``: network namespaces with an impaired router between a realm and its NATS
  (netem, or the TUN stage ``tun_impairment`` where the kernel has no netem).
"""
