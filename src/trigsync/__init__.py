"""trigsync: event-triggered, real-time directory replication with rsync."""

from __future__ import annotations

__version__ = "0.1.0"
