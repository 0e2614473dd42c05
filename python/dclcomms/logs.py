"""Logging set-up shared by every ``dclcomms`` service command.

``setup_logging(config)`` installs one handler on the ``dclcomms`` logger:
:class:`JsonFormatter` (one JSON object per line, the default) or plain text,
at ``config.log_level``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dclcomms.config import RealmConfig


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and any ``extra=`` fields."""

    _std = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in self._std:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(config: RealmConfig) -> None:
    handler = logging.StreamHandler()
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("dclcomms")
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
    root.propagate = False


__all__ = ["JsonFormatter", "setup_logging"]
