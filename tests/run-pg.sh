#!/bin/sh
# Runs the whole integration suite against PostgreSQL: each test process
# starts its own private cluster (tests/integration/pgcluster.py) and every
# quernd it starts gets a fresh database in it (--store postgres://...).
# Needs the PostgreSQL server binaries (Debian: postgresql-15; QUERN_PGBIN
# overrides /usr/lib/postgresql/15/bin).
set -e
cd "$(dirname "$0")/.."
QUERN_TEST_STORE=pg exec python3 tests/runner.py --integration tests/integration "$@"
