"""A private PostgreSQL cluster for one test process.  Stdlib only.

cluster_url() starts (once per process) a throwaway cluster: initdb into a
temp dir owned by an unprivileged user (root runs the server binaries through
runuser as "postgres"), trust auth, a free loopback port, the unix socket in
the temp dir, fsync off.  It returns the postgres:// URL of its "postgres"
database.  new_database() creates a fresh database in it and returns its URL.

Cleanup does not depend on this process exiting cleanly: a small reaper
process holds the read end of a pipe; when this process dies for any reason
(normal exit, exception, SIGKILL by the runner's timeout) the pipe closes and
the reaper stops the cluster (pg_ctl -m immediate) and removes the temp dir.
"""
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

PGBIN = os.environ.get("QUERN_PGBIN", "/usr/lib/postgresql/15/bin")
SUPERUSER = "quern"

_lock = threading.Lock()
_cluster = None
_ndb = 0

_REAPER = r"""
import os, shutil, subprocess, sys
pgctl, pgdata, top, prefix = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
try:
    sys.stdin.buffer.read()   # returns at EOF: the test process is gone
except BaseException:
    pass
subprocess.run(prefix + [pgctl, "-D", pgdata, "-m", "immediate", "-w", "stop"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
shutil.rmtree(top, ignore_errors=True)
"""


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _Cluster:
    def __init__(self):
        self.prefix = []
        owner = None
        if os.geteuid() == 0:
            owner = pwd.getpwnam(os.environ.get("QUERN_PGUSER", "postgres"))
            self.prefix = ["runuser", "-u", owner.pw_name, "--"]
        # Not under QUERN_TEST_TMP: that dir is private to root (mode 0700),
        # and the server user must reach its data directory.
        self.top = tempfile.mkdtemp(prefix="quern-pg-")
        os.chmod(self.top, 0o700)
        if owner:
            os.chown(self.top, owner.pw_uid, owner.pw_gid)
        self.data = os.path.join(self.top, "data")
        self.log = os.path.join(self.top, "server.log")
        self._run([os.path.join(PGBIN, "initdb"), "-D", self.data, "-U", SUPERUSER,
                   "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
        # The reaper first, so that a failure below still cleans up.
        r, w = os.pipe()
        self.reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER, os.path.join(PGBIN, "pg_ctl"), self.data, self.top]
            + self.prefix, stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        os.close(r)
        self._pipe = w   # inherited by nobody (O_CLOEXEC by default in Python)
        last = None
        for _ in range(5):
            self.port = _free_port()
            opts = ("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                    "-c shared_buffers=32MB -c logging_collector=off"
                    % (self.port, self.top))
            try:
                self._run([os.path.join(PGBIN, "pg_ctl"), "-D", self.data, "-l", self.log,
                           "-o", opts, "-w", "-t", "60", "start"])
                break
            except RuntimeError as e:   # the port was taken in between: try another
                last = e
        else:
            raise last
        self.url = "postgres://%s@127.0.0.1:%d/postgres" % (SUPERUSER, self.port)

    def _run(self, argv):
        p = subprocess.run(self.prefix + argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           cwd=self.top)
        if p.returncode != 0:
            tail = ""
            if os.path.exists(getattr(self, "log", "")):
                with open(self.log, errors="replace") as f:
                    tail = f.read()[-2000:]
            raise RuntimeError("%s failed: %s\n%s" % (argv[0], p.stdout.decode(errors="replace"),
                                                      tail))

    def psql(self, sql, db="postgres"):
        """Runs sql through psql over the loopback port; returns its stdout."""
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
                            "-d", db, "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError("psql: %s" % p.stderr.decode(errors="replace"))
        return p.stdout.decode()

    def stop(self):
        os.close(self._pipe)       # the reaper stops the server and removes the dir
        self.reaper.wait(120)


def cluster():
    """The process's private cluster, started on first use."""
    global _cluster
    with _lock:
        if _cluster is None:
            _cluster = _Cluster()
            import atexit
            atexit.register(_cluster.stop)
        return _cluster


def cluster_url():
    """The URL of the private cluster's "postgres" database."""
    return cluster().url


def new_database():
    """Creates a fresh, empty database in the private cluster; returns its URL."""
    global _ndb
    c = cluster()
    with _lock:
        _ndb += 1
        name = "quern_%d_%d" % (os.getpid(), _ndb)
    c.psql("CREATE DATABASE %s STRATEGY file_copy" % name)
    return "postgres://%s@127.0.0.1:%d/%s" % (SUPERUSER, c.port, name)


_by_key = {}


def database_for(key):
    """The URL of the database kept for key (e.g. a quernd data dir), created
    on first use: a server restarted on the same data finds its store again."""
    with _lock:
        url = _by_key.get(key)
    if url is None:
        url = new_database()
        with _lock:
            url = _by_key.setdefault(key, url)
    return url


if __name__ == "__main__":
    # Smoke test: start, create a database, query it, stop.
    url = new_database()
    print(url)
    print(cluster().psql("SELECT current_database(), version()", db=url.rsplit("/", 1)[1]))
