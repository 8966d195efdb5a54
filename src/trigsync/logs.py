"""Log formats: text by default, or JSON lines (``log_format = "json"``) for collectors
such as journald's exporters, Loki or Elasticsearch."""

from __future__ import annotations

import json
import logging
import time

TEXT = "%(asctime)s %(levelname)s %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        data: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        # ensure_ascii: a file name that is not UTF-8 (surrogate escapes) still makes a valid line.
        return json.dumps(data, ensure_ascii=True)


def formatter(log_format: str) -> logging.Formatter:
    return JsonLines() if log_format == "json" else logging.Formatter(TEXT)


def use_format(log_format: str) -> None:
    """Switch every handler of the root logger to ``log_format`` (text or json)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(log_format))
