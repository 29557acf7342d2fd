#!/bin/bash
# bench/callgrind.sh [BUILD]: instructions for a fixed workload (300 single creates,
# 3 batches of 500, then lease+report of all 1800) under valgrind --tool=callgrind.
# Instruction counts are repeatable on a noisy machine, unlike wall time.
# instruction count for a fixed workload (stable on a noisy machine)
B=${1:-build}
D=$(mktemp -d)
env QUERN_BOOTSTRAP_KEY=qk_cg_callgrind_0123 ${CG_PRELOAD:+LD_PRELOAD=$CG_PRELOAD} valgrind --tool=callgrind --callgrind-out-file=$D/cg.out $B/quernd --listen 127.0.0.1:0 --data $D/data --fsync off --slots -1 > $D/out 2>$D/err &
VP=$!
for i in $(seq 200); do grep -q listening $D/out 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/.*listening on //p' $D/out)
python3 - "$URL" <<'PY'
import sys, json, http.client, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port)
H = {"Authorization": "Bearer qk_cg_callgrind_0123", "Content-Type": "application/json"}
for i in range(300):
    c.request("POST", "/api/projects/default/tasks", json.dumps({"assigned_agent_id": "a", "run": True, "input": {"i": i}}), H)
    r = c.getresponse(); r.read(); assert r.status == 201
for b in range(3):
    c.request("POST", "/api/projects/default/tasks/batch", json.dumps({"tasks": [{"assigned_agent_id": "a", "run": True, "input": {"i": i}} for i in range(500)]}), H)
    r = c.getresponse(); r.read(); assert r.status == 201
done = 0
while done < 1800:
    c.request("POST", "/api/projects/default/workers/lease", json.dumps({"agent_id": "a", "max": 100}), H)
    r = c.getresponse(); runs = json.loads(r.read())["data"]
    c.request("POST", "/api/projects/default/workers/report", json.dumps({"results": [{"run_id": x["id"], "attempt": 1, "status": "completed"} for x in runs]}), H)
    r = c.getresponse(); r.read()
    done += len(runs)
    if not runs: break
print("done", done)
PY
kill -TERM $VP; wait $VP
callgrind_annotate $D/cg.out 2>/dev/null | head -30 > $D/annot.txt
grep -m1 "PROGRAM TOTALS" $D/annot.txt
echo $D
