"""Example realm policy: crowded islands on LiveKit, small ones on WebSocket rooms.

Run a realm with it (LiveKit configured, otherwise every island stays on rooms)::

    PYTHONPATH=examples dclcomms realm --policy crowded_policy:CrowdedIslands \\
        --livekit-host wss://livekit.example.org --livekit-api-key KEY --livekit-api-secret SECRET

The core asks ``transport_for`` once per island whose membership changed in a
tick. Switching an island's transport re-issues ``island_changed`` (same island
id, new connection string) to every member, so the thresholds have hysteresis:
up to LiveKit at ``UP_AT`` members, back down at ``DOWN_AT`` or fewer. This is
``dclcomms.policy.CrowdedOnLiveKit`` with the thresholds fixed as class
attributes, to show how a deployment customises a policy in a few lines.
"""

from __future__ import annotations

from dclcomms.policy import CrowdedOnLiveKit, Transports


class CrowdedIslands(CrowdedOnLiveKit):
    UP_AT = 10
    DOWN_AT = 5

    def __init__(self, transports: Transports) -> None:
        super().__init__(transports, up_at=self.UP_AT, down_at=self.DOWN_AT)
