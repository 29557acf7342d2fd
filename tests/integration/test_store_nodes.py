"""The store's several-node calls on PostgreSQL: runs the unit program
test_store_nodes (two stores on one database play two nodes: one leader,
liveness, notifications, SKIP LOCKED, takeover; and a copy from SQLite)
against fresh databases of this process's private cluster.  Skipped when the
program is not built or the PostgreSQL server is not installed."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from qlib import run_tests, unit_on_postgres  # noqa: E402


def test_store_nodes_on_postgres():
    unit_on_postgres("test_store_nodes", urls=("QUERN_TEST_PG_URL", "QUERN_TEST_PG_COPY_URL"))


if __name__ == "__main__":
    run_tests(dict(globals()))
