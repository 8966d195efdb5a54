"""sersync's ``confxml.xml``, read into the same ``Config`` the TOML loader produces.

The XML only builds the mapping a ``trigsync.toml`` would hold and hands it to
``config.from_mapping``, so there is one config model and one set of checks. Every
element is either mapped or reported as a ``Note``: ``warning`` for a sersync setting
trigsync does not honour, otherwise a change of meaning worth a comment. Nothing is
dropped silently.
"""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config, sersync_remote, sersync_xml
from .errors import ConfigError
from .excludes import regex_to_rsync_all
from .sersync_params import common_params

# The <inotify> toggles of sersync 2.5.4's confxml.xml.
_INOTIFY_TOGGLES = (
    "delete",
    "createFolder",
    "createFile",
    "closeWrite",
    "moveFrom",
    "moveTo",
    "attrib",
    "modify",
)
# What trigsync does whatever the toggle says, when the toggle says otherwise.
_INOTIFY_ALWAYS = {
    "delete": "trigsync always replicates deletions (sersync left them on the receiver)",
    "createFolder": "trigsync always replicates new directories",
    "closeWrite": "trigsync always sends a file once it is closed after writing",
    "moveFrom": "trigsync always replicates files moved out of the tree (as deletions)",
    "moveTo": "trigsync always replicates files moved into the tree",
}
_UNSUPPORTED_PLUGINS = {
    "socket": "sends change notices to a socket server",
    "refreshCDN": "purges URLs from a CDN",
    "http": "posts change notices over HTTP",
}


@dataclass(frozen=True, slots=True)
class Note:
    """One remark about the conversion; ``key`` is the trigsync key it concerns, or ""."""

    element: str
    text: str
    key: str = ""
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.element}: {self.text}"


@dataclass(frozen=True, slots=True)
class Imported:
    config: config.Config
    notes: tuple[Note, ...]
    mapping: dict[str, Any]  # what a trigsync.toml would hold


def load(path: str | Path) -> Imported:
    """Read a sersync confxml.xml file."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file; check the path given to -o") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from exc
    return parse(data, origin=where)


def parse(data: bytes, *, origin: str) -> Imported:
    root = sersync_xml.read(data, origin)
    if root.tag != "head":
        raise ConfigError(
            f"{origin}: the root element is <{root.tag}>, not sersync's <head>; "
            "give a sersync confxml.xml, or a trigsync.toml with --config"
        )
    reader = _Reader(origin)
    mapping = reader.read(root)
    return Imported(config.from_mapping(mapping, origin=origin), tuple(reader.notes), mapping)


def _on(elem: ET.Element | None) -> bool:
    return elem is not None and elem.get("start", "false").strip().lower() == "true"


class _Reader:
    """Walks the XML once, building the TOML-shaped mapping and the notes."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.notes: list[Note] = []

    def note(self, element: str, text: str, key: str = "", *, warning: bool = False) -> None:
        self.notes.append(Note(element, text, key, warning))

    def fail(self, element: str, text: str) -> ConfigError:
        return ConfigError(f"{self.origin}: <{element}>: {text}")

    def read(self, root: ET.Element) -> dict[str, Any]:
        common: dict[str, Any] = {}
        plugins = {p.get("name", ""): p for p in root.findall("plugin")}
        for child in root:
            tag = child.tag
            if tag == "filter":  # a second block adds to the first, as sersync's list did
                regexes = self._filter(child).get("exclude_regex", [])
                common["exclude_regex"] = common.get("exclude_regex", []) + regexes
            elif tag == "inotify":
                common.update(self._inotify(child))
            elif tag == "host":
                self.note(
                    "host",
                    f"hostip={child.get('hostip')} port={child.get('port')} served sersync's "
                    "plugins over HTTP; trigsync has no such listener: ignored",
                    warning=True,
                )
            elif tag == "debug":
                if _on(child):
                    self.note("debug", "for more log detail run trigsync with -v", warning=True)
            elif tag == "fileSystem":
                if child.get("xfs", "false").lower() == "true":
                    self.note("fileSystem xfs", "not needed: trigsync works on every filesystem")
            elif tag == "plugin":
                self._plugin_definition(child)
            elif tag == "sersync" and child is not root.find("sersync"):
                self.note(tag, "a second <sersync> section: only the first is read", warning=True)
            elif tag != "sersync":
                self.note(tag, "unknown element, not a sersync 2.5 setting: ignored", warning=True)
        sersync = root.find("sersync")
        if sersync is None:
            raise self.fail("head", "has no <sersync> section; add one with a <localpath>")
        return {"sync": self._sersync(sersync, common, plugins)}

    def _filter(self, elem: ET.Element) -> dict[str, Any]:
        if not _on(elem):
            return {}
        regexes = []
        for child in elem:
            if child.tag == "exclude" and child.get("expression"):
                regexes.append(child.get("expression", ""))
            else:
                self.note(
                    f"filter/{child.tag}",
                    "only <exclude expression> is read: ignored",
                    warning=True,
                )
        for regex in regexes:
            if regex_to_rsync_all(regex) is None:
                self.note(
                    f"filter/exclude {regex}",
                    "has no rsync equivalent: the watcher skips what it matches, but a full "
                    "sync (-r, crontab) sends it; add an rsync pattern to excludes",
                    "exclude_regex",
                    warning=True,
                )
        if regexes:
            self.note(
                "filter",
                "sersync's regular expressions, matched against the whole path below the "
                "source; full syncs get the rsync pattern of each where one exists",
                "exclude_regex",
            )
        return {"exclude_regex": regexes}

    def _inotify(self, elem: ET.Element) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for child in elem:
            name = child.tag
            if name not in _INOTIFY_TOGGLES:
                self.note(f"inotify/{name}", "unknown event toggle: ignored", warning=True)
                continue
            on = _on(child)
            if name == "modify":
                out["watch_modify"] = on
                if on:
                    self.note(
                        "inotify/modify", "files are sent while still being written", "watch_modify"
                    )
            elif name == "attrib" and not on:
                self.note("inotify/attrib", "trigsync also replicates chmod, chown and touch")
            elif name == "createFile" and on:
                self.note(
                    "inotify/createFile",
                    "trigsync sends a new file once it is closed, not when it is created",
                )
            elif name in _INOTIFY_ALWAYS and not on:
                self.note(f"inotify/{name} start=false", _INOTIFY_ALWAYS[name], warning=True)
        return out

    def _plugin_definition(self, elem: ET.Element) -> None:
        name = elem.get("name", "")
        if name in _UNSUPPORTED_PLUGINS:
            self.note(
                f"plugin {name}",
                f"{_UNSUPPORTED_PLUGINS[name]}; trigsync has no equivalent "
                f"(sersync ran it only with -m {name}): ignored",
                warning=True,
            )
        elif name != "command":
            self.note(f"plugin {name}", "unknown plugin: ignored", warning=True)

    def _sersync(
        self, elem: ET.Element, common: dict[str, Any], plugins: dict[str, ET.Element]
    ) -> list[dict[str, Any]]:
        rsync_elem = elem.find("rsync")
        params = self._rsync(rsync_elem if rsync_elem is not None else ET.Element("rsync"))
        ssh = params.pop("ssh")
        user = params.pop("user")
        port = params.pop("port")
        password_file = params.pop("password_file")
        for child in elem:
            if child.tag == "failLog":
                params.update(self._fail_log(child))
            elif child.tag == "crontab":
                params.update(self._crontab(child))
            elif child.tag == "plugin":
                params.update(self._plugin_use(child, plugins))
            elif child.tag == "rsync" and child is not rsync_elem:
                self.note("sersync/rsync", "a second <rsync>: only the first is read", warning=True)
            elif child.tag not in ("localpath", "rsync"):
                self.note(f"sersync/{child.tag}", "unknown element: ignored", warning=True)
        blocks = []
        for local in elem.findall("localpath"):
            source = local.get("watch")
            if not source:
                raise self.fail("localpath", 'has no watch="..."; set it to the source directory')
            targets = []
            for remote in local:
                if remote.tag != "remote":
                    self.note(f"localpath/{remote.tag}", "unknown element: ignored", warning=True)
                    continue
                url = self._url(remote, user=user, port=port, ssh=ssh)
                table: dict[str, Any] = {"url": url}
                if password_file and not ssh:
                    table["password_file"] = password_file
                targets.append(table)
            if not targets:  # the TOML's own advice (targets = [...]) fits no XML file
                raise self.fail(
                    "localpath",
                    f'watch="{source}" has no <remote>; add <remote ip="HOST" name="MODULE"/>',
                )
            blocks.append({"source": source, "target": targets, **common, **params})
        if not blocks:
            raise self.fail("sersync", 'has no <localpath watch="/dir">; add one')
        return blocks

    def _url(self, remote: ET.Element, *, user: str, port: str, ssh: bool) -> str:
        ip, name = remote.get("ip", "").strip(), remote.get("name", "").strip()
        try:
            return sersync_remote.url(ip, name, user=user, port=port, ssh=ssh)
        except ValueError as exc:
            raise self.fail(*exc.args) from None

    def _rsync(self, elem: ET.Element) -> dict[str, Any]:
        out: dict[str, Any] = {"ssh": False, "user": "", "port": "", "password_file": ""}
        for child in elem:
            tag = child.tag
            if tag == "commonParams":
                out["rsync_args"] = self._common_params(child.get("params", ""))
            elif tag == "auth":
                if _on(child):
                    out["user"] = child.get("users", "").strip()
                    out["password_file"] = child.get("passwordfile", "").strip()
            elif tag == "userDefinedPort":
                if _on(child):
                    out["port"] = child.get("port", "").strip()
                    if not out["port"].isdigit():
                        raise self.fail("userDefinedPort", f"port={out['port']!r} is not a number")
            elif tag == "timeout":
                if _on(child):
                    out["timeout"] = self._int(child, "time")
                else:
                    self.note("rsync/timeout start=false", "trigsync uses 60 s", "timeout")
            elif tag == "ssh":
                out["ssh"] = _on(child)
            else:
                self.note(f"rsync/{tag}", "unknown element: ignored", warning=True)
        if out["ssh"] and out["user"]:
            self.note(
                "rsync/auth",
                "the password file does not apply over ssh; log in with an ssh key",
                warning=True,
            )
        return out

    def _common_params(self, params: str) -> list[str]:
        try:
            kept = common_params(params)
        except ValueError as exc:
            raise self.fail("commonParams", f"params={params!r}: {exc}") from None
        update = ""
        if any(w.startswith("-") and not w.startswith("--") and "u" in w for w in kept):
            update = " (-u: files newer on the receiver are not overwritten)"
        self.note(
            "rsync/commonParams",
            f"{params!r}: trigsync always runs rsync -a with deletions and picks -R itself; "
            f"the other options are kept{update}",
            "rsync_args",
        )
        return kept

    def _fail_log(self, elem: ET.Element) -> dict[str, Any]:
        self.note(
            "failLog path",
            f"{elem.get('path')}: trigsync keeps failed paths in its journal in the state "
            "directory and retries them itself; no script is written",
        )
        if elem.get("timeToExecute") is None:
            return {}
        minutes = self._int(elem, "timeToExecute")
        self.note(
            "failLog timeToExecute",
            f"sersync re-ran failures every {minutes} min; trigsync retries at once with "
            "backoff, pausing at most this long (default 30 s)",
            "retry_max",
        )
        return {"retry_max": minutes * 60}

    def _crontab(self, elem: ET.Element) -> dict[str, Any]:
        if not _on(elem):
            return {}
        minutes = self._int(elem, "schedule")
        out: dict[str, Any] = {"reconcile_every": minutes * 60}
        self.note("crontab", f"a full sync every {minutes} min", "reconcile_every")
        cfilter = elem.find("crontabfilter")
        if _on(cfilter):
            assert cfilter is not None
            globs = [e.get("expression", "") for e in cfilter.findall("exclude")]
            out["excludes"] = [g for g in globs if g]
            self.note(
                "crontabfilter",
                "rsync patterns; trigsync applies them to every run and to the watcher, "
                "not only to the scheduled full sync",
                "excludes",
            )
        return out

    def _plugin_use(self, elem: ET.Element, plugins: dict[str, ET.Element]) -> dict[str, Any]:
        name = elem.get("name", "")
        if not _on(elem):
            return {}
        if name != "command":
            self.note(f"sersync/plugin {name}", "no equivalent in trigsync: ignored", warning=True)
            return {}
        definition = plugins.get("command")
        param = definition.find("param") if definition is not None else None
        if param is None:
            raise self.fail("plugin name=command", "has no <param prefix=...>; add it or disable")
        argv = shlex.split(param.get("prefix", ""))
        if not argv:
            raise self.fail("plugin name=command", "param prefix is empty; name the command")
        hook: dict[str, Any] = {
            "argv": argv,
            "argv_after": shlex.split(param.get("suffix", "")),
            "ignore_error": param.get("ignoreError", "true").lower() == "true",
        }
        pfilter = definition.find("filter") if definition is not None else None
        if _on(pfilter):
            assert pfilter is not None
            hook["include_regex"] = [
                e.get("expression", "") for e in pfilter.findall("include") if e.get("expression")
            ]
        self.note(
            "plugin command",
            "becomes a command hook, run once per file after it was sent, with the path as one "
            "argument, never through a shell (sersync ran it on the event, before rsync)",
            "command_hook",
        )
        return {"command_hook": [hook]}

    def _int(self, elem: ET.Element, attr: str) -> int:
        text = elem.get(attr, "").strip()
        if not text.isdigit() or int(text) <= 0:
            raise self.fail(elem.tag, f"{attr}={text!r} must be a positive whole number")
        return int(text)
