"""A local directory (a backup disk, an NFS mount): a plain path or ``file:///path``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..changes import Move
from ..errors import SetupError
from ..rsync import Transport
from . import beneath
from .base import Target, TargetSpec, require_absolute

log = logging.getLogger(__name__)


class LocalTarget(Target):
    kind = "local"

    def __init__(self, spec: TargetSpec, *, state_dir: Path, contimeout: int = 10) -> None:
        super().__init__(spec, state_dir=state_dir, contimeout=contimeout)
        path = spec.url.removeprefix("file://")
        self.path = require_absolute(
            os.path.abspath(path) if not path.startswith("/") else path, spec.url
        )

    def check(self) -> None:
        parent = os.path.dirname(self.path.rstrip("/")) or "/"
        if not os.path.isdir(self.path) and not os.path.isdir(parent):
            raise SetupError(
                f"target {self.spec.url}: neither {self.path} nor its parent {parent} exists; "
                f"create it with: mkdir -p {self.path}"
            )

    async def rename(self, moves: Sequence[Move]) -> Sequence[Move]:
        """Rename beneath the replica root without following a symlink in any component."""
        try:
            root = beneath.open_root(os.fsencode(self.path))
        except OSError as exc:
            log.debug("%s: cannot open the replica root (%s); rsync sends", self.name, exc)
            return ()
        done = []
        try:
            for move in moves:
                try:
                    beneath.rename(root, move.old, move.new)
                except OSError as exc:
                    log.debug(
                        "%s: rename %r -> %r failed (%s); rsync sends it",
                        self.name,
                        move.old,
                        move.new,
                        exc.strerror,
                    )
                else:
                    done.append(move)
        finally:
            os.close(root)
        return done

    def transport(self) -> Transport:
        return Transport(self.path, tuple(self.spec.extra_rsync_args))
