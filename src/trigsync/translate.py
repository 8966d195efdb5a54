"""Kernel events in, changes out: pairing moves, tracking new and unclosed files, kinds.

Pure but for ``Fs`` (lstat, watches, listings) and the two injected clocks, so a model
test can drive it with hostile sequences and no kernel; the asyncio shell in
``watcher.py`` only reads the inotify fd and calls ``feed`` and ``take``.

What each kind claims (see ``changes.Kind``): NEW only for a path this translator saw
created (IN_CREATE, or an entry of a directory that did not exist before) and has not
reported since. Whatever may already exist on a target is CHANGED: the new end of a
rename (it may replace a name), a move in from outside or from an excluded name, a
directory moved in (it may replace an empty one).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import inotify as ino
from .changes import Batch, Change, Kind, Move
from .errors import WatchError, WatchLimitError
from .excludes import Excludes
from .fsops import Fs
from .links import Ident, LinkNames
from .scanner import TreeScanner, new_inodes
from .unclosed import FileStates
from .watchtree import Node, WatchTree

log = logging.getLogger(__name__)

MASK = ino.TREE_EVENTS
# A file found while listing a new directory, written less than this long ago, may still
# be open for writing: it waits this long for a write or a close before it is reported,
# rather than be sent half-written and again after its close.
PROBE = 0.05
# A file renamed less than this long after it was last reported gets no rename hint.
YOUNG = 0.5

Event = tuple[int, int, int, bytes]  # wd, mask, cookie, name
# Events on a file that change nothing in the tree of watched directories. A file's
# create, writes and close come one after the other, so the directory (and its path)
# of the last such event is kept for the next one.
_FILE_EVENTS = ino.IN_CREATE | ino.IN_MODIFY | ino.IN_ATTRIB | ino.IN_CLOSE_WRITE | ino.IN_DELETE
Key = tuple[int, bytes]  # parent wd, name
_NO_EXCLUDES = Excludes()


@dataclass(slots=True)
class _Move:
    """A MOVED_FROM waiting for its MOVED_TO."""

    path: bytes
    node: Node | None  # the directory's node, if it was one we watched
    excluded: bool
    deadline: float
    parent: Node | None = None  # where the node was when it left
    hint: bool = True  # False: a target is unlikely to have it, so moving it is not worth it
    at: int | None = None  # where its deletion is in batch number ``batch``, if it is there
    batch: int = 0
    link: tuple[Ident, int] | None = None  # a hard-linked file's inode and link count


class Translator:
    """Turns one tree's inotify events into batches of changes."""

    def __init__(
        self,
        root: bytes,
        fs: Fs,
        *,
        excludes: Excludes = _NO_EXCLUDES,
        move_timeout: float = 0.05,
        watch_modify: bool = False,
        modify_settle: float = 0.5,
        overflow_quiet: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        kernel: str = "inotify",
        lazy: bool = False,
    ) -> None:
        self._kernel = kernel  # whose queue overflows: "inotify" or "fanotify"
        # Directories are found when their first event comes (fanotify, ``fanlazy.py``):
        # nothing is listed at start, nor after lost events.
        self._lazy = lazy
        self.root = root
        self._prefix = root if root == b"/" else root + b"/"
        self._fs = fs
        self._excludes = excludes
        self._move_timeout = move_timeout
        self._watch_modify = watch_modify
        self._overflow_quiet = overflow_quiet
        self._clock = clock
        self._wall = wall
        self.tree = WatchTree()
        self._scanner = TreeScanner(root, self.tree, excludes, MASK, fs, lazy=lazy)
        # A file created and not reported yet goes out NEW at its close, or once its
        # unclosed writes settle (which also covers a create with no write at all).
        self._files = FileStates(modify_settle, YOUNG)
        # A write or chmod through one name of a hard-linked file changes every name.
        self._linked = LinkNames(self._prefix, self.tree, fs, self._scanner)
        self._links = self._linked.map
        self._moves: dict[int, _Move] = {}  # by cookie, oldest first
        # Files created since the last take whose type is not known yet (see _probe_created).
        self._probe: dict[Key, bytes] = {}
        self._last_wd = -1  # the directory of the last file event, and its node and path
        self._last: tuple[Node, bytes] | None = None
        self._out: list[Change] = []
        self._renames: list[Move] = []
        self._full = False
        self._rewalk = False
        self._overflow_last: float | None = None  # time of this episode's last overflow
        self._batch = 0  # how many batches were taken: tells whether _Move.at still holds
        self.events_read = 0
        self.overflows = 0
        self._now = 0.0

    def start(self) -> None:
        """Watch the root and every directory below it."""
        try:
            # The configured root may be a symlink; nothing below it is followed.
            wd = self._fs.add_watch(self.root, MASK & ~ino.IN_DONT_FOLLOW)
        except ino.NoWatchSpaceError:
            top = None
        except OSError as exc:
            raise WatchError(
                f"cannot watch source directory {os.fsdecode(self.root)}: {exc.strerror}; "
                "check that it exists, is a directory and is readable"
            ) from exc
        else:
            top = self.tree.set_root(wd)
        if self._lazy:
            return
        inodes = new_inodes()
        dirs, nospace = self._scanner.scan(top, b"", None, None, inodes)
        self._linked.learn_walk(inodes)
        if top is None or nospace:
            fmt, args = ino.watch_limit_advice(self.root, dirs + 1)
            raise WatchLimitError(
                fmt % args, sysctl="max_user_watches", suggested=int(str(args[-1]))
            )

    def remounted(self) -> None:
        """A filesystem was mounted or unmounted in the tree: no event says what it showed
        or hid, so the next take() watches the tree again and asks for a full sync."""
        self._full = self._rewalk = True

    def close(self) -> None:
        self.tree.clear()
        self._files.clear()
        self._linked.clear()
        self._moves.clear()
        self._probe.clear()

    # -- one wake-up: feed() the events read, then take() the batch ----------------------

    def feed(self, events: Iterable[Event]) -> None:
        self._now = self._clock()
        self._last_wd = -1  # the tree may have changed since (a rewalk, a timed-out move)
        for wd, mask, cookie, name in events:
            self.events_read += 1
            self._handle(wd, mask, cookie, name)

    def take(self) -> Batch:
        """The changes found since the last take, including timers that fell due."""
        now = self._now = self._clock()
        if self._overflow_last is not None and now >= self._overflow_last + self._overflow_quiet:
            self._overflow_last = None
            self._full = self._rewalk = True
        if self._rewalk:
            self._rewalk_tree()
        if self._probe:
            self._probe_created()
        if self._files.unclosed:
            for key in self._files.unclosed.due(now):
                self._report_write(key)
        self._out.extend(Change(path, Kind.CHANGED) for path in self._linked.search(now))
        while self._moves:
            cookie, move = next(iter(self._moves.items()))
            if move.deadline > now:
                break
            del self._moves[cookie]
            self._moved_out(move)
        renames = sorted(self._renames, key=lambda m: m.after)
        batch = Batch(tuple(self._out), self._full, tuple(renames))
        self._batch += 1
        self._out = []
        self._renames = []
        self._files.end_batch(now)
        self._full = False
        return batch

    def next_due(self) -> float | None:
        """When take() has something to report without a new event, if ever."""
        due = [] if (settle := self._files.unclosed.next_due()) is None else [settle]
        if (walk := self._linked.next_due()) is not None:
            due.append(walk)
        if self._moves:
            due.append(next(iter(self._moves.values())).deadline)
        if self._overflow_last is not None:
            due.append(self._overflow_last + self._overflow_quiet)
        return min(due, default=None)

    # -- events --------------------------------------------------------------------------

    def _handle(self, wd: int, mask: int, cookie: int, name: bytes) -> None:
        if mask & ino.IN_Q_OVERFLOW:
            if self._overflow_last is None:
                log.warning(
                    "%s queue overflowed under %s: events were lost; every target gets "
                    "one reconciling sync once the burst is over (raise "
                    "fs.%s.max_queued_events if this repeats)",
                    self._kernel,
                    os.fsdecode(self.root),
                    self._kernel,
                )
            # One episode, however many overflows: a full sync started while the burst
            # still overflows would only need another one after it.
            self._overflow_last = self._now
            self.overflows += 1
            return
        last = self._last
        if wd == self._last_wd and last is not None and name and not mask & ~_FILE_EVENTS:
            node, base = last
        else:
            self._last_wd = -1
            found = self.tree.get(wd)
            if found is None:
                return
            if not name:
                self._handle_self(found, mask)
                return
            path = self.tree.path(found)
            if path is None:
                return
            node, base = found, path
            if not mask & ~_FILE_EVENTS:  # handling it changes no directory's path
                self._last_wd, self._last = wd, (node, base)
        self._handle_named(node, name, base + b"/" + name if base else name, mask, cookie)

    def _handle_named(self, node: Node, name: bytes, path: bytes, mask: int, cookie: int) -> None:
        is_dir = bool(mask & ino.IN_ISDIR)
        key = (node.wd, name)
        if mask & ino.IN_MOVED_FROM:
            self._moved_from(node, name, path, is_dir, cookie)
        elif mask & ino.IN_MOVED_TO:
            self._moved_to(node, name, path, is_dir, cookie)
        elif self._excludes.excludes(path, is_dir=is_dir):
            pass
        elif mask & ino.IN_CREATE:
            if is_dir:
                self._out.append(Change(path, Kind.NEW))
                self._add_tree(node, name, path, Kind.NEW)
            else:
                self._created_file(key, path)
        elif mask & ino.IN_MODIFY and not self._watch_modify:
            # A new file's writes count too: one kept open is reported once they settle.
            if not self._files.created_now(key):
                self._files.unclosed.touch(key, self._now)
        elif mask & (ino.IN_CLOSE_WRITE | ino.IN_MODIFY | ino.IN_ATTRIB):
            if mask & ino.IN_CLOSE_WRITE:
                self._files.unclosed.discard(key)
            # A change to a file reported NEW in this same batch would merge into it.
            if not self._files.created_now(key):
                self._report_write(key, path)
            elif not is_dir:
                self._report_links(key)
        elif mask & ino.IN_DELETE:
            self._links.forget(key)
            # Even a file never reported: a run listing this path for another reason (an
            # earlier deletion of the name, say) may have delivered it. The pending set
            # knows; NEW then DELETED is nothing there.
            self._files.forget(key)
            self._out.append(Change(path, Kind.DELETED))

    def _report_write(self, key: Key, path: bytes | None = None) -> None:
        """Report a written file: NEW if it was never reported, else CHANGED."""
        if path is None and (path := self._linked.path_of(key)) is None:
            self._files.forget(key)
            return
        new = self._files.reported(key, self._now)
        self._out.append(Change(path, Kind.NEW if new else Kind.CHANGED))
        self._report_links(key)

    def _report_links(self, key: Key) -> None:
        """Report the other names of a hard-linked file that was written or chmodded."""
        if self._links:  # else no file in the tree is known to have other names
            self._out.extend(Change(path, Kind.CHANGED) for path in self._linked.others(key))

    def _handle_self(self, node: Node, mask: int) -> None:
        if node is self.tree.root and mask & (
            ino.IN_DELETE_SELF | ino.IN_MOVE_SELF | ino.IN_IGNORED
        ):
            raise WatchError(
                f"source directory {os.fsdecode(self.root)} was deleted or moved away; "
                "recreate it and restart trigsync"
            )
        if mask & (ino.IN_DELETE_SELF | ino.IN_IGNORED):
            self.tree.drop(node.wd)
        elif mask & ino.IN_UNMOUNT:
            self.remounted()
        elif mask & ino.IN_ATTRIB and node is self.tree.root:
            self._out.append(Change(b".", Kind.CHANGED))

    def _lone_file(self, key: Key, path: bytes) -> os.stat_result | None:
        """The lstat of ``path`` if it is a regular file with one link (one that may still
        be open for writing), else None; FileNotFoundError if it is gone."""
        try:
            st = self._fs.lstat(self._prefix + path)
        except FileNotFoundError:
            raise
        except NotADirectoryError as exc:  # its directory was replaced: gone all the same
            raise FileNotFoundError(exc.errno, exc.strerror, exc.filename) from exc
        except OSError as exc:
            log.warning("cannot stat %r: %s", path, exc.strerror)
            return None
        self._links.learn(key, st)
        return st if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else None

    def _created_file(self, key: Key, path: bytes) -> None:
        # Held as a file still being written, whatever its size: its close reports it,
        # once, as NEW; a writer that never closes (or a create with no write) once it
        # settles. Held even if it is gone already (a deploy tool's temp file is often
        # renamed by now): the IN_DELETE or IN_MOVED_FROM that follows for this name
        # must know that no target has it. What nothing will close (a symlink, a second
        # link of a file) is found by _probe_created at the take, with no lstat for the
        # files closed by then: most of a storm's.
        until = self._now + self._files.unclosed.settle
        self._files.hold(key, self._now, until, fresh=True)
        self._probe[key] = path

    def _probe_created(self) -> None:
        """Report now the files created since the last take that no close will report
        (not regular, or with other links), and learn the links of the latter; an lstat
        only for those still waiting unreported (not closed, written or gone since)."""
        probe, self._probe = self._probe, {}
        for key, path in probe.items():
            if not self._files.unreported(key):
                continue
            try:
                st = self._lone_file(key, path)
            except FileNotFoundError:
                continue  # gone: what follows for this name says the rest
            if st is None:
                self._files.forget(key)
                self._files.reported(key, self._now, new=True)
                self._out.append(Change(path, Kind.NEW))

    def _add_tree(self, parent: Node, name: bytes, path: bytes, kind: Kind) -> None:
        """Watch and list a directory that appeared; its entries are reported as ``kind``,
        except files that may still be open for writing, which wait for their close."""

        def found(node: Node | None, name: bytes, path: bytes, is_dir: bool) -> None:
            if not is_dir and node is not None:
                key = (node.wd, name)
                try:
                    st = self._lone_file(key, path)
                except FileNotFoundError:
                    return
                age = PROBE if st is None else self._wall() - st.st_mtime
                if age < PROBE:
                    until = self._now + PROBE - max(age, 0.0)
                    self._files.hold(key, self._now, until, fresh=kind is Kind.NEW)
                    return
                self._files.reported(key, self._now)  # a later close is a change
            self._out.append(Change(path, kind))

        self._scanner.add_tree(parent, name, path, found)
        node = parent.children.get(name)
        if node is not None and node.moving:
            # The directory whose MOVED_FROM waits is here again (moved out and straight
            # back under another cookie, maybe to the very same name; or the event came
            # late and this is where it is now).
            self._settled(node)

    def _settled(self, node: Node) -> None:
        """``node`` is where it is for good: its watch is in use, so no MOVED_FROM that
        still waits may drop it when it times out (with fanotify, an older one may name
        it: a merged mkdir resolved that name to this directory's handle)."""
        node.moving = False
        for waiting in self._moves.values():
            if waiting.node is node:
                waiting.node = None

    def _moved_from(
        self, parent: Node, name: bytes, path: bytes, is_dir: bool, cookie: int
    ) -> None:
        key = (parent.wd, name)
        # A hint that no target can use would only make the rename run alone.
        # Correctness never depends on one.
        hint = self._files.worth_a_hint(key, self._now)
        self._files.forget(key)
        link = None if is_dir else self._links.moved(key)
        node = parent.children.get(name) if is_dir else None
        if node is not None:
            node.moving = True
        excluded = self._excludes.excludes(path, is_dir=is_dir)
        at = None
        if not excluded:
            # Its deletion goes in now, in order: a change to the same name that comes
            # before the move is paired, or times out, must not overtake it.
            at = len(self._out)
            self._out.append(Change(path, Kind.DELETED))
        deadline = self._now + self._move_timeout
        move = _Move(path, node, excluded, deadline, parent, hint, at, self._batch, link)
        self._moves[cookie] = move

    def _moved_to(self, parent: Node, name: bytes, path: bytes, is_dir: bool, cookie: int) -> None:
        src = self._moves.pop(cookie, None)
        if src is not None and src.node is not None:
            self._settled(src.node)
        # The name now holds another file: what was known about the one it replaced
        # (fresh, unclosed) no longer applies.
        self._files.forget((parent.wd, name))
        self._links.forget((parent.wd, name))
        if self._excludes.excludes(path, is_dir=is_dir):
            if src is not None:
                self._moved_out(src)  # into an excluded place: as good as gone
            return
        if src is not None and src.link is not None:
            self._links.add((parent.wd, name), *src.link)
        # The new end may replace a name the target has, so it is CHANGED, never NEW.
        entries = Kind.NEW  # below a directory moved in, nothing can be on a target
        if src is not None and not src.excluded:
            if src.hint:
                # Placed just before the old path's deletion, so that the pending set
                # still sees whether a target can have the old path at all.
                at = src.at if src.at is not None and src.batch == self._batch else None
                self._renames.append(Move(src.path, path, len(self._out) if at is None else at))
                entries = Kind.CHANGED  # a target may move its copy of the subtree
            if src.node is not None:
                self.tree.move(src.node, parent, name)
        self._out.append(Change(path, Kind.CHANGED))
        if is_dir:
            self._add_tree(parent, name, path, entries)

    def _moved_out(self, move: _Move) -> None:
        """A MOVED_FROM that found no MOVED_TO in the tree: forget what left."""
        node = move.node
        if node is not None and (
            node.parent is not move.parent or node.name != move.path.rsplit(b"/", 1)[-1]
        ):
            # It came back in under another cookie (moved out and straight back): the
            # MOVED_TO re-attached the same watch, which must stay.
            return
        if node is not None:
            node.moving = False
            wds = self.tree.detach(node)
            for wd in wds:
                self._scanner.remove_watch(wd)
            self._files.drop_dirs(wds)
            if len(self._links):
                self._links.drop_dirs(wds)

    def _rewalk_tree(self) -> None:
        """After lost events: watch what is missing, forget what is gone, drop stale state."""
        self._rewalk = False
        for move in self._moves.values():
            if move.node is not None:
                move.node.moving = False
        self._moves.clear()
        self._probe.clear()
        self._files.clear()
        if not self._lazy:
            self._linked.rewalk()
            return
        self._linked.clear()
        if (root := self.tree.root) is not None:
            for child in list(root.children.values()):
                for wd in self.tree.detach(child):
                    self._scanner.remove_watch(wd)
            self._fs.add_watch(self.root, MASK & ~ino.IN_DONT_FOLLOW)

    def dirs_in_use(self) -> set[int]:
        """The directories that pending state names: a lazy tree must keep them."""
        wds = self._files.dirs() | self._links.dirs()
        for move in self._moves.values():
            wds.update(n.wd for n in (move.node, move.parent) if n is not None)
        return wds
