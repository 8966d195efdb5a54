"""Where a path lives on its filesystem, from a mount table: bind mounts seen through."""

from __future__ import annotations

from trigsync import mounts

TABLE = b"""\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:40 / /srv/data rw - tmpfs none rw
31 22 0:40 /mirror /mnt/back\\040up rw - tmpfs none rw
32 22 254:0 /home/u /srv/home rw - ext4 /dev/vda rw
33 30 0:41 / /srv/data/over rw - tmpfs none rw
34 30 0:42 / /srv/data/over rw - tmpfs none rw
"""


def test_parse_unescapes_and_keeps_the_order() -> None:
    table = mounts.parse(TABLE)
    assert table[2] == mounts.Mount(b"0:40", b"/mirror", b"/mnt/back up")
    assert [m.point for m in table][-2:] == [b"/srv/data/over", b"/srv/data/over"]


def test_place_sees_through_a_bind_mount() -> None:
    table = mounts.parse(TABLE)
    assert mounts.place(b"/mnt/back up/x", table) == (b"0:40", b"/mirror/x")
    assert mounts.place(b"/srv/data/mirror/x", table) == (b"0:40", b"/mirror/x")
    assert mounts.place(b"/srv/data", table) == (b"0:40", b"/")
    assert mounts.place(b"/srv/home/a", table) == (b"254:0", b"/home/u/a")
    assert mounts.place(b"/srv/homework", table) == (b"254:0", b"/srv/homework")
    assert mounts.place(b"/srv/data/over/f", table) == (b"0:42", b"/f")  # the one on top
    assert mounts.place(b"relative", table) is None


def test_inside_on_this_machine_without_bind_mounts() -> None:
    assert mounts.inside("/proc/self", "/proc")
    assert not mounts.inside("/proc", "/proc/self")


def test_a_bind_mount_of_a_directory_in_the_tree_is_an_alias() -> None:
    table = [
        mounts.Mount(b"8:1", b"/", b"/"),
        mounts.Mount(b"0:50", b"/", b"/srv/src"),  # the source is a tmpfs
        mounts.Mount(b"0:50", b"/a", b"/srv/src/b"),  # source/a shown again at source/b
        mounts.Mount(b"0:60", b"/", b"/srv/src/c"),  # another filesystem: no alias
    ]
    assert mounts.aliases(b"/srv/src", table) == [(b"/srv/src/b", b"/srv/src/a")]


def test_a_bind_mount_from_outside_the_tree_is_no_alias() -> None:
    table = [
        mounts.Mount(b"8:1", b"/", b"/"),
        mounts.Mount(b"8:1", b"/data/uploads", b"/srv/www/uploads"),  # /srv/www on 8:1 too
    ]
    assert mounts.aliases(b"/srv/www", table) == []
    # ...unless the directory it shows is also below the source
    table.append(mounts.Mount(b"8:1", b"/srv/www/media", b"/srv/www/m2"))
    assert mounts.aliases(b"/srv/www", table) == [(b"/srv/www/m2", b"/srv/www/media")]
