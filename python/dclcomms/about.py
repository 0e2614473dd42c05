"""The realm's ``/about`` document (ADR-110; wire.md section 7, control-plane.md section 2).

All non-optional fields are always emitted (``false`` and ``[]`` included).
``comms.adapter`` is ``archipelago:archipelago:<ws(s) url>/archipelago/ws``, or,
in fixed-adapter mode, ``comms.fixedAdapter`` carries the configured string.
HTTP 200 when healthy, else 503.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dclcomms.config import RealmConfig


@dataclass(frozen=True)
class AboutState:
    """The live facts /about reports."""

    comms_healthy: bool
    users_count: int
    version: str
    overloaded: bool = False  # e.g. the clustering tick overran its period
    bus_sessions: int = 0  # open /bus sessions (bff.userCount)


def http_to_ws(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


def public_url_from_host(config: RealmConfig, host_header: str | None, bound: str) -> str:
    """``public_url`` if configured, else ``http://<Host header>``, else the bound address."""
    if config.public_url:
        return config.public_url.rstrip("/")
    if host_header and all(c not in host_header for c in "/ \t\r\n@"):
        return f"http://{host_header}"
    return bound


def about(
    config: RealmConfig,
    state: AboutState,
    public_url: str,
    *,
    gatekeeper_url: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body). ``gatekeeper_url``: advertised as ``comms.gatekeeperUrl``
    (the base URL of the ADR-204 gatekeeper routes, e.g. ``<it>/get-scene-adapter``)."""
    configurations: dict[str, Any] = {
        "realmName": config.realm_name,
        "networkId": config.network_id,
        "globalScenesUrn": [],
        "scenesUrn": [],
    }
    if config.city_loader_content_server:
        configurations["cityLoaderContentServer"] = config.city_loader_content_server
    comms: dict[str, Any] = {
        "healthy": state.comms_healthy,
        "protocol": "v3",
        "version": state.version,
        "commitHash": config.commit_hash,
        "usersCount": state.users_count,
    }
    if gatekeeper_url:
        comms["gatekeeperUrl"] = gatekeeper_url
    if config.fixed_adapter:
        comms["fixedAdapter"] = config.fixed_adapter
    else:
        comms["adapter"] = "archipelago:archipelago:" + http_to_ws(public_url) + "/archipelago/ws"
    content = {"healthy": True, "publicUrl": config.content_url}
    lambdas = {"healthy": True, "publicUrl": config.lambdas_url}
    healthy = bool(content["healthy"] and lambdas["healthy"] and state.comms_healthy)
    body: dict[str, Any] = {
        "healthy": healthy,
        "configurations": configurations,
        "content": content,
        "lambdas": lambdas,
        "comms": comms,
    }
    if config.bus:  # the /bus message bus, the BFF's successor (control-plane.md 4)
        body["bff"] = {
            "healthy": state.comms_healthy,
            "version": state.version,
            "commitHash": config.commit_hash,
            "publicUrl": http_to_ws(public_url) + "/bus",
            "userCount": state.bus_sessions,
            "protocolVersion": "dclcomms-bus/1",
        }
    body["acceptingUsers"] = (
        healthy and not state.overloaded and state.users_count < config.max_users
    )
    return (200 if healthy else 503), body


__all__ = ["AboutState", "about", "http_to_ws", "public_url_from_host"]
