"""sersync2's command line and config file, for the CLI: ``trigsync -d -r -o confxml.xml``.

``sersync2 [-d] [-r] [-n N] [-o FILE] [-m PLUGIN]`` becomes ``trigsync run`` with the
same flags: each is either mapped or answered with a message that says what to do.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence

from . import sersync, sersync_import
from .config_data import Config
from .errors import ConfigError

log = logging.getLogger(__name__)

_BARE = re.compile(r"-[drnom]+")
_DEFAULT_CONFIG = "confxml.xml"  # sersync2 with no -o read this from the working directory

SERSYNC_HELP = """\
trigsync in place of sersync2: the same flags, the same confxml.xml.
  -d          detach and run in the background (add --pid-file FILE to record the pid);
              better: trigsync service install, so systemd restarts it if it dies
  -r          push the whole tree once before watching (trigsync run --initial-sync)
  -o FILE     sersync's confxml.xml (default ./confxml.xml)
  -n N        sersync's thread count: not needed, trigsync runs one worker per target
  -m PLUGIN   sersync's refreshCDN/socket/http plugins: trigsync has none
Convert the file for good with: trigsync import-sersync confxml.xml > trigsync.toml
"""


def is_sersync_argv(argv: Sequence[str]) -> bool:
    """Whether argv is sersync2's command line rather than one of trigsync's commands."""
    return bool(argv) and _BARE.fullmatch(argv[0]) is not None


def translate(argv: Sequence[str]) -> list[str]:
    """sersync2's argv into ``trigsync run``'s; raises ConfigError for what has no equivalent."""
    out = ["run"]
    words = list(argv)
    config_given = False
    while words:
        word = words.pop(0)
        if not _BARE.fullmatch(word):
            out.append(word)  # trigsync's own options (-v, --pid-file ...) pass through
            continue
        for i, flag in enumerate(word[1:], 1):
            if flag in "dr":
                out.append(f"-{flag}")
                continue
            value = word[i + 1 :] or (words.pop(0) if words else "")
            if not value:
                raise ConfigError(f"sersync flag -{flag} needs a value; see trigsync -h")
            if flag == "m":
                raise ConfigError(
                    f"-m {value}: sersync's {value} plugin runs alone, without syncing; "
                    "trigsync has no such plugin: drop -m to replicate"
                )
            out += [f"-{flag}", value]
            config_given |= flag == "o"
            break
    if not config_given:
        out += ["-o", _DEFAULT_CONFIG]
    return out


def load(path: str) -> Config:
    """Read confxml.xml, logging every note: warnings for what is not honoured."""
    imported = sersync.load(path)
    for note in imported.notes:
        if note.warning:
            log.warning("%s: %s", path, note)
        else:
            log.info("%s: %s", path, note)
    return imported.config


def import_sersync(path: str) -> int:
    """Print the trigsync.toml equivalent of a confxml.xml on stdout."""
    sys.stdout.write(sersync_import.render(sersync.load(path), path))
    return 0
