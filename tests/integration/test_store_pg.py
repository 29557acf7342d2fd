"""The store contract on PostgreSQL: runs the unit program test_store_pg
(which checks both backends with the same code) against a fresh database in
this process's private cluster.  Skipped when the program is not built or,
outside QUERN_TEST_STORE=pg, when the PostgreSQL server is not installed."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from qlib import run_tests, unit_on_postgres  # noqa: E402


def test_store_contract_on_postgres():
    unit_on_postgres("test_store_pg")


if __name__ == "__main__":
    run_tests(dict(globals()))
