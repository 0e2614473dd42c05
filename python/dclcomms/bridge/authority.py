"""Who owns or administers a scene, for signed-fetch bridge credentials: the gatekeeper's
owner-or-admin check (control-plane.md 1.5).

:class:`OwnerOrAdminAuthority` adapts :class:`dclcomms.gatekeeper.resolver.OwnerOrAdmin`
(a resolver - static table or Decentraland's services - plus the ``scene_admin`` rows of
the gatekeeper database) to the gateway's :class:`~dclcomms.bridge.gateway.SceneAuthority`.
The embedded bridge uses the mounted gatekeeper's own; :func:`open_authority` builds the
same from a :class:`~dclcomms.gatekeeper.config.GatekeeperConfig` for ``dclcomms bridge
serve`` (and a realm whose gatekeeper is not mounted), configured exactly like the
gatekeeper (``LAMBDAS_URL``, ``WORLDS_CONTENT_SERVER_URL``, ``PLACES_API_URL``,
``GATEKEEPER_MODERATION_FILE``, ...).

A subscription names ``<realm>:<sceneId>`` and no parcel: Genesis City land owners are
recognised through a static table listing the scene id (``scene_ids``) or a
``scene_admin`` row of the scene's place; the HTTP resolver's land check needs a parcel and
answers "not the owner" without one. World owners and deployers (``<name>.eth``) resolve
through either resolver.
"""

from __future__ import annotations

from typing import Any

from dclcomms.gatekeeper.resolver import OwnerOrAdmin, Resolver, Scene


class OwnerOrAdminAuthority:
    """The gatekeeper's owner-or-admin check as a bridge scene authority. A lookup that
    cannot be answered raises (``ResolverUnavailable``): the gateway refuses the
    subscription with ``resolver_unavailable`` (fail closed)."""

    def __init__(self, owner_or_admin: OwnerOrAdmin) -> None:
        self.owner_or_admin = owner_or_admin

    async def is_owner_or_admin(self, address: str, realm: str, scene_id: str) -> bool:
        scene = Scene(realm=realm, scene_id=scene_id, world=realm.endswith(".eth"))
        return await self.owner_or_admin.check(scene, address.lower())

    async def close(self) -> None:
        await self.owner_or_admin.resolver.close()


def open_authority(config: Any, store: Any, registry: Any = None) -> OwnerOrAdminAuthority:
    """The gatekeeper's resolver for ``config`` (a ``GatekeeperConfig``: HTTP when a lambdas,
    worlds or places URL is set, else the static table of ``moderation_file``) with the
    ``scene_admin`` rows of ``store`` (a ``dclcomms.gatekeeper.storage.Store``)."""
    from dclcomms.gatekeeper.server import build_resolver
    from dclcomms.metrics import Registry

    resolver: Resolver = build_resolver(config, registry if registry is not None else Registry())
    return OwnerOrAdminAuthority(OwnerOrAdmin(resolver, store.is_scene_admin))


__all__ = ["OwnerOrAdminAuthority", "open_authority"]
