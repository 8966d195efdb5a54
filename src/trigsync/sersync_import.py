"""``trigsync import-sersync``: a converted confxml.xml written out as trigsync.toml.

Each key is preceded by the notes about it, so every change of meaning shows as a
comment where it applies. What comes out loads back into the same ``Config``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError
from .sersync import Imported, Note

DIFFERENCES = (
    "trigsync differs from sersync on purpose in two places:",
    "- dot-files (.htaccess, .env, ...) are replicated; sersync skipped them. To keep",
    '  skipping them add ".*" to excludes.',
    "- rsync exit 23 (some files were not transferred) is a failure that is retried,",
    "  not a success: a file the receiver refuses is reported until it arrives.",
)

# The order keys are written in; anything else follows in the mapping's own order.
_ORDER = (
    "source",
    "excludes",
    "exclude_regex",
    "rsync_args",
    "timeout",
    "watch_modify",
    "reconcile_every",
    "retry_max",
)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for \ud83d-style surrogate pairs
        # (ensure_ascii) and a raw DEL, which TOML refuses.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(
                f"{value!r} is not UTF-8 and a trigsync.toml cannot hold it; "
                "rename it, or keep running trigsync -o confxml.xml"
            ) from None
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return "[" + ", ".join(_value(v) for v in value) + "]"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _comments(notes: Sequence[Note], indent: str = "") -> list[str]:
    return [f"{indent}# {'NOT HONOURED: ' if n.warning else ''}{_one_line(n)}" for n in notes]


def _one_line(text: object) -> str:
    """Notes quote the file: a newline (&#10;) would end the comment and start a TOML line."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], str(text))


def render(imported: Imported, origin: str) -> str:
    lines = [f"# trigsync.toml converted from {_one_line(origin)} by trigsync import-sersync", "#"]
    lines += [f"# {line}" for line in DIFFERENCES]
    written = {key for block in imported.mapping["sync"] for key in block}
    by_key: dict[str, list[Note]] = {}
    for note in imported.notes:
        by_key.setdefault(note.key if note.key in written else "", []).append(note)
    general = by_key.pop("", [])
    if general:
        lines += ["#", "# sersync settings with no key of their own:"]
        lines += _comments(general)
    for block in imported.mapping["sync"]:
        lines += ["", "[[sync]]"]
        keys = [k for k in _ORDER if k in block]
        keys += [k for k in block if k not in keys and k not in ("target", "command_hook")]
        for key in keys:
            lines += _comments(by_key.get(key, []))
            lines.append(f"{key} = {_value(block[key])}")
        for table in block.get("target", []):
            lines += ["", "[[sync.target]]"]
            lines += [f"{k} = {_value(v)}" for k, v in table.items()]
        for hook in block.get("command_hook", []):
            lines += ["", *_comments(by_key.get("command_hook", []))]
            lines.append("[[sync.command_hook]]")
            lines += [f"{k} = {_value(v)}" for k, v in hook.items()]
    return "\n".join(lines) + "\n"
