"""The store's several-node calls on PostgreSQL: runs the unit program
test_store_nodes (two stores on one database play two nodes: one leader,
liveness, notifications, SKIP LOCKED, takeover; and a copy from SQLite)
against fresh databases of this process's private cluster.  Skipped when the
program is not built or the PostgreSQL server is not installed."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pgcluster  # noqa: E402
from qlib import BUILD, run_tests  # noqa: E402


def test_store_nodes_on_postgres():
    prog = os.path.join(BUILD, "tests", "test_store_nodes")
    if not os.path.exists(prog):
        print("skip: %s is not built (make %s)" % (prog, prog))
        return
    if (os.environ.get("QUERN_TEST_STORE") != "pg"
            and not os.path.exists(os.path.join(pgcluster.PGBIN, "initdb"))):
        print("skip: no PostgreSQL server in %s" % pgcluster.PGBIN)
        return
    env = dict(os.environ, QUERN_TEST_PG_URL=pgcluster.new_database(),
               QUERN_TEST_PG_COPY_URL=pgcluster.new_database())
    p = subprocess.run([prog], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0 and " 0 failed" in out and "skip" not in out, out


if __name__ == "__main__":
    run_tests(dict(globals()))
