"""The one form a heartbeat takes from the socket to the engine: :class:`HeartbeatBatch`.

The C++ server hands accepted heartbeats to Python as a :class:`HeartbeatBatch`
(``dclcomms.ws.Heartbeats`` is this class); the connector glue publishes it, the
pub/sub delivers it (the NATS one re-batches what it receives into the same type)
and the archipelago core gives its columns to :meth:`Engine.update_many
<dclcomms.archipelago.Engine.update_many>` as they are. The three-state preferred
island travels as the ``desiredRoom`` field does on the wire: a str sets it, ``""``
clears it, :data:`UNSET` (the field was absent) keeps the stored one. It is turned
into the engine's :class:`PreferenceOp` once, in C++, when the engine ingests the
batch (:func:`preference_op` is the same rule for a single value).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from dclcomms import _core
from dclcomms.errors import ConfigError

__all__ = ["UNSET", "HeartbeatBatch", "PreferenceOp", "Unset", "preference_op"]

PreferenceOp = _core.PreferenceOp
"""What an update does to the stored preferred island: ``KEEP``, ``SET`` or ``CLEAR``."""


class Unset(enum.Enum):
    """Type of :data:`UNSET`: a field absent from a message, "keep the stored value"."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


def preference_op(value: str | Unset | None) -> tuple[_core.PreferenceOp, str]:
    """``(op, island)`` of a three-state preferred island: UNSET keeps, None or "" clears.

    The rule the engine applies to every row of a batch (in C++). Anything else raises
    :class:`~dclcomms.errors.ConfigError` ``invalid_parameter``.
    """
    if value is UNSET:
        return PreferenceOp.KEEP, ""
    if value is None:
        return PreferenceOp.CLEAR, ""
    if isinstance(value, str):
        return (PreferenceOp.SET, value) if value else (PreferenceOp.CLEAR, "")
    raise ConfigError(
        f"preferred island must be a str, None or UNSET, got {value!r}", code="invalid_parameter"
    )


@dataclass(frozen=True, slots=True)
class HeartbeatBatch:
    """Heartbeats of many peers, in arrival order (a peer may appear more than once).

    ``desired_rooms``: one entry per heartbeat, :data:`UNSET` when the field was absent
    (keep the stored preferred island), ``""`` to clear it, else the island to prefer.
    """

    addresses: Sequence[str]
    positions: npt.NDArray[np.float32]  # (n, 3)
    desired_rooms: Sequence[str | Unset]

    def __len__(self) -> int:
        return len(self.addresses)

    def select(self, rows: Sequence[int]) -> HeartbeatBatch:
        """The batch of the given rows, in that order."""
        idx = list(rows)
        return HeartbeatBatch(
            [self.addresses[i] for i in idx],
            self.positions[idx],
            [self.desired_rooms[i] for i in idx],
        )
