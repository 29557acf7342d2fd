#!/bin/bash
# bench/callgrind_metadata.sh [N] [KEYS] [BUILD]: quernd's instructions per single task create
# whose metadata holds KEYS string keys (0: metadata {}), under valgrind --tool=callgrind
# (--fsync off).  The tasks are posted one at a time by a Python client (not counted): a
# name, an agent, `run: true` and the metadata; counting starts after 100 warm-up creates.
# Compare KEYS=0 with KEYS>0, and one BUILD with another, for what metadata costs a create.
set -eu
N=${1:-500}; KEYS=${2:-3}; B=${3:-build}
cd "$(dirname "$0")/.."
D=$(mktemp -d /tmp/quern-cgmd.XXXX)
export QUERN_KEY=qk_cg_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
QUERN_BOOTSTRAP_KEY=$QUERN_KEY valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" \
    "$B/quernd" --listen 127.0.0.1:0 --data "$D/data" --fsync off --slots -1 >"$D/out" 2>"$D/err" &
P=$!
for _ in $(seq 600); do grep -q 'listening on' "$D/out" 2>/dev/null && break; sleep 0.1; done
export QUERN_URL=$(sed -n 's/.*listening on //p' "$D/out")
post() {
    python3 - "$1" "$KEYS" <<'EOF'
import http.client, json, os, sys
n, keys = int(sys.argv[1]), int(sys.argv[2])
host, port = os.environ["QUERN_URL"].split("//", 1)[1].rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
h = {"Authorization": "Bearer " + os.environ["QUERN_KEY"], "Content-Type": "application/json"}
for i in range(n):
    md = {"key%d" % k: "value-%d-%d" % (k, i % 10) for k in range(keys)}
    c.request("POST", "/api/projects/default/tasks", json.dumps(
        {"name": "md-%d" % i, "assigned_agent_id": "cg", "run": True, "metadata": md}), h)
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status
EOF
}
post 100
callgrind_control -z $P >/dev/null
post "$N"
callgrind_control -d $P >/dev/null
kill $P; wait $P 2>/dev/null || true
f=$(ls -t "$D"/cg.out.* | head -1)
callgrind_annotate --inclusive=yes --auto=no "$f" 2>/dev/null >"$D/annot.txt"
T=$(grep -m1 "PROGRAM TOTALS" "$D/annot.txt" | awk '{gsub(",","",$1); print $1}')
echo "create with $KEYS metadata keys: $T instructions, $((T / N)) per create"
grep -E "src/store_sqlite\.c:(sq_put|meta_note|meta_forget)" "$D/annot.txt" | \
    sed -E 's/^ *([0-9,]+) .*(src\/[a-z_]+\.c:[a-zA-Z_0-9.]+).*/\1 \2/' | \
    awk -v n="$N" '{gsub(",","",$1); printf "%9d %s\n", $1/n, $2}'
echo "(callgrind output kept in $D)"
