"""The watcher's map from inotify watch descriptors to directories in the tree.

Each watched directory is a node that knows only its parent and its name, so renaming or
moving a directory is O(1) however large it is, and paths are built on demand.
"""

from __future__ import annotations

from collections.abc import KeysView, Mapping
from types import MappingProxyType

# The children of every directory that has none: most of a large tree's directories are
# leaves, and an empty dict of their own would cost 64 bytes each (60 MB at 1M).
_NONE: Mapping[bytes, Node] = MappingProxyType({})


class Node:
    """One watched directory."""

    __slots__ = ("children", "moving", "name", "parent", "wd")

    def __init__(self, wd: int, parent: Node | None, name: bytes) -> None:
        self.wd = wd
        self.parent = parent
        self.name = name
        self.children: Mapping[bytes, Node] = _NONE
        # Set while a MOVED_FROM of this directory waits for its partner: events from
        # inside it are dropped then, because the pairing rescans it or it left the tree.
        self.moving = False


class WatchTree:
    """Watched directories by wd, linked into a tree below one root."""

    def __init__(self) -> None:
        self.root: Node | None = None
        self._by_wd: dict[int, Node] = {}

    def __len__(self) -> int:
        return len(self._by_wd)

    def get(self, wd: int) -> Node | None:
        return self._by_wd.get(wd)

    def wds(self) -> KeysView[int]:
        return self._by_wd.keys()

    def set_root(self, wd: int) -> Node:
        self.root = Node(wd, None, b"")
        self._by_wd[wd] = self.root
        return self.root

    def attach(self, wd: int, parent: Node, name: bytes) -> Node:
        """The node for ``wd``, placed at ``parent/name``; an existing node is moved there."""
        node = self._by_wd.get(wd)
        if node is None:
            node = self._by_wd[wd] = Node(wd, parent, name)
        elif node.parent is not parent or node.name != name:
            self._unlink(node)
            node.parent = parent
            node.name = name
            node.moving = False  # it left and came back: it is watched where it is now
        _link(parent, name, node)
        return node

    def move(self, node: Node, parent: Node, name: bytes) -> None:
        self._unlink(node)
        node.parent = parent
        node.name = name
        _link(parent, name, node)

    def drop(self, wd: int) -> Node | None:
        """Forget one watch; nodes below it become unreachable until they are dropped too."""
        node = self._by_wd.pop(wd, None)
        if node is not None:
            self._unlink(node)
            node.parent = None
        return node

    def detach(self, node: Node) -> list[int]:
        """Forget a whole subtree and return its wds, which the caller must remove."""
        self._unlink(node)
        node.parent = None
        wds: list[int] = []
        stack = [node]
        while stack:
            n = stack.pop()
            if self._by_wd.get(n.wd) is n:
                del self._by_wd[n.wd]
                wds.append(n.wd)
            stack.extend(n.children.values())
            n.children = _NONE
        return wds

    def clear(self) -> None:
        self.root = None
        self._by_wd.clear()

    def path(self, node: Node) -> bytes | None:
        """``node``'s path relative to the root (b"" for the root itself).

        None if it is no longer below the root, is inside a directory being moved, or
        lost its name to another directory.
        """
        parts: list[bytes] = []
        while node.parent is not None:
            if node.moving or node.parent.children.get(node.name) is not node:
                # Another directory took its name (fanotify: a mkdir merged into an
                # earlier one placed this node there first): where it is now, only a
                # listing says; whatever its events name is not there.
                return None
            parts.append(node.name)
            node = node.parent
        if node is not self.root:
            return None
        parts.reverse()
        return b"/".join(parts)

    @staticmethod
    def _unlink(node: Node) -> None:
        parent = node.parent
        if parent is not None and parent.children.get(node.name) is node:
            if len(parent.children) == 1:
                parent.children = _NONE
            else:
                kids = parent.children
                assert isinstance(kids, dict)
                del kids[node.name]


def _link(parent: Node, name: bytes, node: Node) -> None:
    kids = parent.children
    if isinstance(kids, dict):
        kids[name] = node
    else:
        parent.children = {name: node}
