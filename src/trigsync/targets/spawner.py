"""The spawner: the fixed Python text the ssh fast path runs on the receiver (see
``sshchannel.py`` for why and how it is reached).

Run as ``python3 -c SPAWNER TIMEOUT ROOM RSYNC`` through the login shell, once. stdin:
the secret, one line, then nothing until it closes (then it exits); stdout, one line: the
port it listens on, on 127.0.0.1, and the port of its private rsync daemon (below), or 0
and why there is none. Each connection: the secret, NUL, the command, NUL, then the
command's stream; the command runs with ``/bin/sh -c`` on that stream.

The private daemon: ``RSYNC --daemon`` (the remote rsync as ``--rsync-path`` names it,
so through ``/bin/sh``), on another random port of 127.0.0.1, with a config and a secrets
file of its own in a fresh 0700 directory: one module, ``root``, at ``/``, as this user,
writable, and only for the user ``trigsync`` with the same secret (rsync's challenge and
response: the secret never crosses). ``use chroot = no`` and ``munge symlinks = no`` keep
symlinks exactly as ``rsync --server`` would (a module at ``/`` is not sanitized);
``socket options = TCP_NODELAY`` is ours to set here, and so is ``listen backlog``
(5 by default: a burst of standbys logging in lost SYNs and waited 1 s for each). A run reaches it through a port the
ssh connection forwards (``sshroute.py``): the daemon forks for each, where the spawner's
route starts a shell, a remote rsync and, on trigsync's side, ``sh``, ``cat`` and ``ssh``.
rsyncd forks for every connection before any secret, and its child waits for the
client's greeting without end: the global ``timeout`` (TIMEOUT) ends one that never
greets, while the module's ``timeout = 0`` lets a standby wait for its change (one
stalled at the secret's challenge still holds its child). Without a temporary directory,
or an rsync that starts as a daemon, the spawner serves alone and says why.
The daemon dies with the spawner (SIGTERM at exit, however it exits: a hang-up, an
answer that met a closed session, and the parent-death signal), its directory with it
(after a SIGKILL, the next spawner of the user removes it: its ``pid`` file names a
spawner that is gone, and the spawner's lock on it is free: a pid alone misleads across
pid namespaces sharing the temp dir; the file is opened without blocking or following
a link and read for 16 bytes at most, so a hostile entry neither hangs nor crashes it);
the spawner exits when the daemon dies, so the channel is set up again.

Other users of the receiver can reach the port, so a connection costs nothing until its
secret checked out. Every header is read in the one process (non-blocking sockets,
selectors) and a child is forked only for the right secret (``hmac.compare_digest``): a
connection that sends nothing holds a socket for TIMEOUT seconds at most, and at most
ROOM of them wait. When they are all taken, each is read once more (a header that came
starts, one closed or wrong goes), then those that another user opened go (the uid of
their end, in /proc/net/tcp and tcp6; Linux), then the oldest of those not known to be
the spawner's user's (a scan of /proc races with the sockets it lists), then the oldest.
So whoever opens connections faster than a run's header crosses the ssh connection
pushes out only their own, or the spawner's own user's (who can do anything as that
user anyway). None of this is on a run's path: /proc is read only when the room is full.

A header is peeked at, then taken up to its second NUL, so the command's stream that
follows it stays in the socket for the command. SIGCHLD is ignored, so the kernel reaps
the children (each gets it back, as SIGPIPE and SIGXFSZ, at their defaults). Plain
Python 3.5 and later: receivers are old.
"""

from __future__ import annotations

HEADER_TIMEOUT = 5.0  # a header crosses the ssh connection, maybe behind a transfer's data
HEADER_ROOM = 256  # connections whose header is still awaited, at most

SPAWNER = r"""
import atexit, collections, fcntl, hmac, os, selectors, shutil, signal, socket, stat, struct
import subprocess, sys, tempfile, time
timeout, room, rsync = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
key = sys.stdin.buffer.readline().strip()
most = len(key) + 65538
me = os.geteuid()
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.bind(("127.0.0.1", 0))
lst.listen(4096)
lst.setblocking(False)
CONF = (
    "use chroot = no\n"
    "munge symlinks = no\n"
    "reverse lookup = no\n"
    "log file = /dev/null\n"
    "socket options = TCP_NODELAY\n"
    "listen backlog = 128\n"
    "timeout = %d\n"
    "%s[root]\n"
    "path = /\n"
    "timeout = 0\n"
    "read only = no\n"
    "list = no\n"
    "hosts allow = 127.0.0.1\n"
    "auth users = trigsync\n"
    "secrets file = %s\n"
    "strict modes = yes\n"
)
def orphaned():
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except Exception:
        pass
def sweep():
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        if not name.startswith("trigsync-rsyncd-"):
            continue
        path = os.path.join(base, name)
        fd = -1
        try:
            st = os.lstat(path)
            if st.st_uid != me or not stat.S_ISDIR(st.st_mode):
                continue
            fd = os.open(os.path.join(path, "pid"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            st = os.fstat(fd)
            text = os.read(fd, 16)
            if st.st_uid != me or not stat.S_ISREG(st.st_mode) or not text.isdigit():
                continue
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            if 1 < int(text) < 1 << 22:
                os.kill(int(text), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            pass
        finally:
            if fd >= 0:
                os.close(fd)
held = []
def daemon():
    try:
        sweep()
    except OSError:
        pass
    home = tempfile.mkdtemp(prefix="trigsync-rsyncd-")
    try:
        fd = os.open(os.path.join(home, "pid"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        held.append(fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"%d" % os.getpid())
        secrets = os.path.join(home, "secrets")
        fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"trigsync:" + key + b"\n")
        os.close(fd)
        conf = os.path.join(home, "rsyncd.conf")
        with open(conf, "w") as f:
            ids = "" if me else "uid = 0\ngid = 0\n"
            f.write(CONF % (max(1, int(timeout)), ids, secrets))
        why = "no free port"
        for _ in range(5):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            with open(os.path.join(home, "stderr"), "wb") as err:
                p = subprocess.Popen(
                    ["/bin/sh", "-c", "exec %s \"$@\"" % rsync, "sh", "--daemon", "--no-detach",
                     "--address=127.0.0.1", "--port=%d" % port, "--config=" + conf],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    preexec_fn=orphaned)
            end = time.monotonic() + 5
            while p.poll() is None and time.monotonic() < end:
                try:
                    c = socket.create_connection(("127.0.0.1", port), 1)
                    c.settimeout(2)
                    hello = c.recv(9)
                    c.close()
                except OSError:
                    time.sleep(0.02)
                    continue
                if hello.startswith(b"@RSYNCD:"):
                    return p, port, home
                break
            if p.poll() is None:
                p.kill()
                why = "rsync --daemon did not answer on port %d" % port
            else:
                with open(os.path.join(home, "stderr"), "rb") as err:
                    said = err.read().decode("utf-8", "replace").strip().splitlines()
                why = "rsync --daemon exited %d: %s" % (p.returncode, said[-1] if said else "")
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    shutil.rmtree(home, ignore_errors=True)
    return None, why, None
dproc = dhome = None
def stop():
    if dproc is not None:
        try:
            os.kill(dproc.pid, signal.SIGTERM)
        except OSError:
            pass
        shutil.rmtree(dhome, ignore_errors=True)
def leave(code):
    stop()
    sys.exit(code)
atexit.register(stop)
for s in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, lambda *_: leave(0))
try:
    dproc, dport, dhome = daemon()
except (OSError, subprocess.SubprocessError) as e:
    dproc, dport, dhome = None, "cannot set it up: %s" % e, None
line = "%d %s" % (lst.getsockname()[1], dport if dproc is not None else "0 " + dport)
sys.stdout.buffer.write(line.encode("utf-8", "replace").replace(b"\n", b" ") + b"\n")
sys.stdout.flush()
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
sel = selectors.DefaultSelector()
sel.register(lst, selectors.EVENT_READ)
sel.register(0, selectors.EVENT_READ)
waiting = collections.OrderedDict()
def ends(a):
    b = socket.inet_aton(a[0])
    v6 = struct.unpack("=4I", b"\0" * 10 + b"\xff\xff" + b)
    return ["%08X:%04X" % (struct.unpack("=I", b)[0], a[1]),
            "%08X%08X%08X%08X:%04X" % (v6 + (a[1],))]
mine = ends(lst.getsockname())
def forget(c):
    del waiting[c]
    sel.unregister(c)
def drop(c):
    forget(c)
    c.close()
def owners():
    far = {}
    for c, w in waiting.items():
        for e in ends(w[2]):
            far[e] = c
    theirs, ours = set(), set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    w = line.split()
                    if w[1] in far and w[2] in mine:
                        (ours if int(w[7]) == me else theirs).add(far[w[1]])
        except (OSError, ValueError, IndexError, StopIteration):
            pass
    return theirs, ours
def make_room():
    keep = room * 3 // 4
    for c in list(waiting):
        read(c, waiting[c])
    if len(waiting) > keep:
        theirs, ours = owners()
        for c in theirs:
            drop(c)
        for c in [c for c in waiting if c not in ours][:max(0, len(waiting) - keep)]:
            drop(c)
    while len(waiting) > keep:
        drop(next(iter(waiting)))
def accept():
    for _ in range(64):
        try:
            c, a = lst.accept()
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionAbortedError:
            continue
        except OSError:
            if waiting:
                drop(next(iter(waiting)))
            return
        if len(waiting) >= room:
            make_room()
        c.setblocking(False)
        waiting[c] = [time.monotonic() + timeout, b"", a]
        sel.register(c, selectors.EVENT_READ)
def spawn(c, cmd):
    if os.fork() == 0:
        try:
            for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
                signal.signal(s, signal.SIG_DFL)
            c.setblocking(True)
            try:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            os.dup2(c.fileno(), 0)
            os.dup2(c.fileno(), 1)
            os.execv("/bin/sh", ["sh", "-c", cmd])
        finally:
            os._exit(127)
def read(c, w):
    try:
        seen = c.recv(most, socket.MSG_PEEK)
        at = -1
        for _ in range(2 - w[1].count(b"\0")):
            at = seen.find(b"\0", at + 1)
            if at < 0:
                break
        if seen:
            w[1] += c.recv(len(seen) if at < 0 else at + 1)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        seen = b""
    f = w[1].split(b"\0")
    if not seen or len(w[1]) > most or len(f) > 1 and not hmac.compare_digest(f[0], key):
        drop(c)
    elif len(f) > 2:
        forget(c)
        try:
            spawn(c, f[1])
        except OSError:
            pass
        c.close()
while True:
    left = 1.0
    if waiting:
        left = min(left, max(0.0, next(iter(waiting.values()))[0] - time.monotonic()))
    if dproc is not None:
        try:
            gone = os.waitpid(dproc.pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            gone = True
        if gone:
            leave(3)
    for k, _ in sel.select(left):
        if k.fileobj is lst:
            accept()
        elif k.fileobj == 0:
            if not os.read(0, 4096):
                leave(0)
        elif k.fileobj in waiting:
            read(k.fileobj, waiting[k.fileobj])
    now = time.monotonic()
    while waiting and next(iter(waiting.values()))[0] <= now:
        drop(next(iter(waiting)))
"""
