"""Structured logs: one logfmt line per record (``key=value``, values quoted when needed).

    time=2026-05-09T07:35:25.123Z level=warning logger=gradserve.access pid=4242 msg="rpc failed"
    method=/gradserve.v1.Gradient/Evaluate code=INVALID_ARGUMENT duration=0.000412 ...

Extra fields come from ``extra={"fields": {...}}`` on the logging call (see
``gradserve.rpc.interceptors``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+,[]")


def _value(value: Any) -> str:
    text = str(value)
    if text and all(c in _PLAIN for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """Formats a record as one logfmt line; exceptions go on the line as ``exc=...``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"time={stamp}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"pid={record.process}",
            f"msg={_value(record.getMessage())}",
        ]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts += [f"{key}={_value(value)}" for key, value in fields.items()]
        if record.exc_info:
            parts.append(f"exc={_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def configure(level: str) -> None:
    """Send every log record at ``level`` or above to stderr, as logfmt (the root logger's
    handlers are replaced)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
