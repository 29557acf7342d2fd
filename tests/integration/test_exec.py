"""Code execution through the API: every runtime, the control channel,
interactions, artifacts, cancel, timeouts, retries with checkpoints, review,
approval and JSON-RPC commands (RUNTIME.md)."""
import json
import os
import shutil
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from qlib import CodeTasks, Server, expect, run_tests, wait_for  # noqa: E402

S = Server()
P = "/api/projects/default"
C = CodeTasks(S)
create, run_of, wait_status, logs = C.create, C.run_of, C.wait_status, C.logs


def test_sh_completes_with_output_and_logs():
    t = create('echo hello; echo oops >&2; printf \'{"n": 7}\' > "$QUERN_OUTPUT"',
               wait_for_result=True)
    run = t["run"]
    assert run["status"] == "completed", run
    assert run["output"] == {"n": 7} and run["exit_code"] == 0
    lines = logs(t, run)
    assert ("stdout", "hello") in [(x["type"], x["message"]) for x in lines]
    assert ("stderr", "oops") in [(x["type"], x["message"]) for x in lines]
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["status"] == "completed"


def test_python_input_env_and_exit_code():
    code = ("import json, os\n"
            "d = json.load(open(os.environ['QUERN_INPUT']))\n"
            "print(d['a'] + 1, os.environ['QUERN_RUN_ID'][:4], os.environ['QUERN_TASK_ID'][:5])\n"
            "raise SystemExit(3)\n")
    t = create(code, "python", input={"a": 41}, wait_for_result=True)
    run = t["run"]
    assert run["status"] == "failed" and run["exit_code"] == 3
    assert run["error"]["code"] == "exit_code"
    assert "42 run_ task_" in [x["message"] for x in logs(t, run)]


def test_unknown_runtime_is_400():
    r = S.req("POST", P + "/tasks", {"code": "x", "runtime_id": "cobol"})
    assert r.status == 400 and r.json["error"]["param"] == "runtime_id"


NODE_INTERACT = r"""
import fs from 'fs';
const say = (m) => fs.writeSync(3, JSON.stringify(m) + '\n');
say({type: 'progress', progress: 0.5});
say({type: 'checkpoint', data: {step: 1}});
say({type: 'usage', tokens_used: 12, cost: 0.01});
say({type: 'log', level: 'warn', message: 'careful', data: {k: 1}});
say({type: 'input_request', prompt: 'name?', schema: {type: 'string'}});
let buf = '';
for await (const c of process.stdin) { buf += c; if (buf.includes('\n')) break; }
const msg = JSON.parse(buf.split('\n')[0]);
fs.writeFileSync(process.env.QUERN_ARTIFACTS + '/hello.txt', 'hi ' + msg.response);
say({type: 'output', output: {got: msg.response}});
"""


def test_node_control_channel_and_interaction():
    if not shutil.which("node"):
        print("skip: node missing")
        return
    t = create(NODE_INTERACT, "node")
    run = wait_status(t, ["interaction_required", "failed"])
    assert run["status"] == "interaction_required", logs(t, run)
    assert run["interaction"]["kind"] == "input" and run["interaction"]["prompt"] == "name?"
    assert run["progress"] == 0.5 and run["checkpoints_count"] == 1 and run["tokens_used"] == 12
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["progress"] == 0.5   # the task's too
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("POST", base + "/interaction", {"response": "bob"}), 200)
    run = wait_status(t, ["completed", "failed"])
    assert run["status"] == "completed", logs(t, run)
    assert run["output"] == {"got": "bob"}
    arts = {a["name"]: a for a in run["artifacts"]}
    assert arts["hello.txt"]["size"] == 6 and len(arts["hello.txt"]["sha256"]) == 64
    warn = [x for x in logs(t, run) if x["type"] == "log"]
    assert warn and warn[0]["level"] == "warn" and warn[0]["data"] == {"k": 1}
    types = [e["type"] for e in expect(S.req("GET", base + "/session_logs"), 200)]
    for ty in ("task_run.queued", "task_run.started", "task_run.progress", "task_run.checkpoint",
               "task_run.interaction_required", "task_run.artifact", "task_run.completed"):
        assert ty in types, (ty, types)


def test_cancel_sleeping_run():
    t = create("echo started; sleep 600")
    wait_for(lambda: any(x["message"] == "started" for x in logs(t, run_of(t))), what="start")
    run = run_of(t)
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    c = expect(S.req("POST", base + "/cancel", {"message": "stop it"}), 200)
    assert c["status"] in ("canceling", "canceled")
    run = wait_status(t, ["canceled"])
    assert run["cancel_message"] == "stop it"
    assert S.req("POST", base + "/cancel", {}).status == 409


def test_timeout():
    t = create("sleep 600", settings={"timeout_ms": 300, "kill_grace_ms": 100}, wait_for_result=True)
    assert t["run"]["status"] == "timed_out" and t["run"]["error"]["code"] == "timeout"


def test_retry_resumes_from_checkpoint():
    code = ('if [ -f "$QUERN_CHECKPOINT" ]; then cat "$QUERN_CHECKPOINT"; exit 0; fi\n'
            'echo \'{"type":"checkpoint","data":{"at":5}}\' >&3\nexit 1\n')
    t = create(code, settings={"max_retries": 1, "retry_delay_ms": 0}, wait_for_result=True)
    run = t["run"]
    assert run["status"] == "completed" and run["attempt"] == 2, run
    assert any('"at"' in x["message"] for x in logs(t, run))
    types = [e["type"] for e in S.req("GET", P + "/tasks/%s/runs/%s/session_logs" % (t["id"], run["id"])).json]
    assert "task_run.retrying" in types


def test_require_review_then_approve():
    t = create("echo ok", settings={"require_review": True}, wait_for_result=True)
    run = t["run"]
    assert run["status"] == "review_required"
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    assert expect(S.req("POST", base + "/review", {"decision": "approve"}), 200)["status"] == "completed"


def test_require_approval_holds_then_denies_or_runs():
    t = create("echo ran", settings={"require_approval": True})
    run = wait_status(t, ["interaction_required"])
    assert run["interaction"]["kind"] == "approval" and run["started_at"] is None
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    r = S.req("POST", base + "/interaction", {"response": {"approved": "yes"}})
    assert r.status == 400
    expect(S.req("POST", base + "/interaction", {"response": {"approved": True}}), 200)
    run = wait_status(t, ["completed"])
    assert "ran" in [x["message"] for x in logs(t, run)]
    t2 = create("echo never", settings={"require_approval": True})
    run2 = wait_status(t2, ["interaction_required"])
    base2 = P + "/tasks/%s/runs/%s" % (t2["id"], run2["id"])
    d = expect(S.req("POST", base2 + "/interaction", {"response": {"approved": False}}), 200)
    assert d["status"] == "denied" and logs(t2, d) == []


def test_command_user_message_and_close():
    code = 'read line; echo "got $line"; cat >/dev/null; echo closed'
    t = create(code)
    run = wait_status(t, ["running"])
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    r = S.req("POST", base + "/command", {"jsonrpc": "2.0", "method": "user_message",
                                          "params": {"text": "hi"}, "id": 1})
    assert r.status == 200 and r.json["id"] == 1, r
    assert S.req("POST", base + "/command", {"jsonrpc": "2.0", "method": "dance", "id": 2}).status == 400
    # JSON-RPC 2.0's shapes: params structured, id a string, number or null
    # (a boolean or an object id was taken and echoed back, a string params delivered)
    for bad, param in (({"params": "hi", "id": 5}, "params"), ({"params": 7, "id": 5}, "params"),
                       ({"params": {}, "id": True}, "id"), ({"params": {}, "id": {"a": 1}}, "id"),
                       ({"params": {}, "id": [1]}, "id")):
        body = dict({"jsonrpc": "2.0", "method": "user_message"}, **bad)
        r = S.req("POST", base + "/command", body)
        assert r.status == 400 and r.json["error"]["param"] == param, (bad, r)
    for ok_id in ("x", 2.5, None):
        r = S.req("POST", base + "/command", {"jsonrpc": "2.0", "method": "user_message",
                                              "params": [], "id": ok_id})
        assert r.status == 200 and r.json["id"] == ok_id, r
    expect(S.req("POST", base + "/command", {"jsonrpc": "2.0", "method": "close", "id": 3}), 200)
    run = wait_status(t, ["completed"])
    msgs = [x["message"] for x in logs(t, run)]
    assert any(m.startswith("got ") and "user_message" in m for m in msgs) and "closed" in msgs
    r = S.req("POST", base + "/command", {"jsonrpc": "2.0", "method": "user_message", "id": 4})
    assert r.status == 400 and r.json["error"]["code"] == "no_active_sandbox"


def test_command_as_soon_as_running():
    # A run is visible as running as soon as its start commits (before the
    # fsync and the spawn): a command sent at once must reach its stdin.
    for _ in range(15):
        t = create('read line; echo "got $line"')
        run = wait_status(t, ["running"])
        base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
        r = S.req("POST", base + "/command", {"jsonrpc": "2.0", "method": "user_message",
                                              "params": {"text": "hi"}, "id": 1})
        assert r.status == 200, r
        run = wait_status(t, ["completed", "failed"])
        assert run["status"] == "completed", run
        assert any(m.startswith("got ") and "user_message" in m
                   for m in [x["message"] for x in logs(t, run)])


def test_many_runs_in_parallel():
    ts = [create("echo $QUERN_ATTEMPT") for _ in range(20)]
    for t in ts:
        assert wait_status(t, ["completed", "failed"])["status"] == "completed"


def test_output_schema_enforced_at_exit():
    t = create('echo \'{"n": "x"}\' > "$QUERN_OUTPUT"', output_schema={
        "type": "object", "properties": {"n": {"type": "integer"}}}, wait_for_result=True)
    assert t["run"]["status"] == "failed" and t["run"]["error"]["code"] == "invalid_output"


def test_secrets_reach_code_and_are_redacted():
    expect(S.req("POST", P + "/secrets", {"name": "API_TOKEN", "value": "tok-12345"}), 201)
    t = create('cat /run/secrets/API_TOKEN; echo; echo "env=$API_TOKEN"', secrets=["API_TOKEN"],
               secrets_env=True, wait_for_result=True)
    run = t["run"]
    assert run["status"] == "completed", logs(t, run)
    msgs = [x["message"] for x in logs(t, run)]
    assert "***" in msgs and "env=***" in msgs and not any("tok-12345" in m for m in msgs)
    r = S.req("POST", P + "/tasks", {"code": "true", "secrets": ["NOPE"]})
    assert r.status == 400 and r.json["error"]["param"] == "secrets"


def test_policy_denies_before_anything_runs():
    pol = expect(S.req("GET", P + "/policy"), 200)
    try:
        expect(S.req("PUT", P + "/policy", {"allowed_runtimes": ["python"]}), 200)
        t = create("echo should-not-run")
        run = wait_status(t, ["denied"])
        assert run["error"]["code"] == "policy_denied" and "allowed_runtimes" in run["error"]["message"]
        assert logs(t, run) == [] and run["started_at"] is None
        expect(S.req("PUT", P + "/policy", {"require_approval": True}), 200)
        t2 = create("echo held")
        assert wait_status(t2, ["interaction_required"])["interaction"]["kind"] == "approval"
    finally:
        body = {k: v for k, v in pol.items() if k in ("allowed_runtimes", "max_timeout_ms", "max_memory_mb",
                "max_code_bytes", "network_allowed", "require_approval", "relay_webhook_url",
                "outbound_allow_private")}
        S.req("PUT", P + "/policy", body)


def test_sigterm_lets_running_code_finish():
    s = Server()
    try:
        t = expect(s.req("POST", P + "/tasks", {"code": "echo started; sleep 1; echo finished"}), 201)
        wait_for(lambda: any(x["message"] == "started" for x in [
            json.loads(l) for l in s.req("GET", P + "/tasks/%s/runs/%s/logs" % (
                t["id"], expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]["id"])).text.splitlines()]),
            what="the code to start")
        s.stop()     # SIGTERM: drains, exits 0 (asserted by stop)
        s.start()
        run = expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
        assert run["status"] == "completed" and run["attempt"] == 1, run
    finally:
        s.stop()


def test_relative_data_directory():
    """make run uses --data ./quern-data: code must run with a relative data dir."""
    import subprocess
    import tempfile
    import qlib
    cwd = tempfile.mkdtemp(prefix="quern-rel-", dir=os.environ.get("QUERN_TEST_TMP"))
    binary = os.path.abspath(os.path.join(qlib.BUILD, "quernd"))
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--data", "./rel-data"], cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, QUERN_BOOTSTRAP_KEY=qlib.ROOT_KEY))
    try:
        line = p.stdout.readline().decode()
        hostport = line.strip().rsplit("http://", 1)[1]
        rel = qlib.Server.__new__(qlib.Server)
        rel.host, port = hostport.rsplit(":", 1)
        rel.port = int(port)
        t = expect(rel.req("POST", P + "/tasks", {"code": 'echo rel > "$QUERN_STORAGE_PROJECT/f"; cat "$QUERN_STORAGE_PROJECT/f"',
                                                  "wait_for_result": True}), 201)
        assert t["run"]["status"] == "completed", t["run"]
    finally:
        p.terminate()
        p.wait(30)


def test_quernd_under_umask_077():
    """make run started quernd under `umask 077` (its key file's): the mount
    template's directories were then 0700 and host root's, the warm ts box
    died at start (move_mount /opt/quern: EACCES) and code inherited 077."""
    old = os.umask(0o077)
    try:
        s = Server(env={"QUERN_WARM": "ts=1,python=0,node=0"})
    finally:
        os.umask(old)
    try:
        def warm_ready():
            m = s.req("GET", "/metrics", key=None).text
            return "quern_warm_boxes_ready 1" in m.splitlines()
        wait_for(warm_ready, timeout=60, what="the warm ts box under umask 077")
        for code, rt in (("umask; ls -ld /quern", "sh"), ("import os; print(oct(os.umask(0)))", "python"),
                         ("console.log((process.umask() as number).toString(8));", "ts")):
            t = expect(s.req("POST", P + "/tasks", {"code": code, "runtime_id": rt,
                                                     "wait_for_result": True}), 201)
            assert t["run"]["status"] == "completed", (rt, t["run"])
            lines = s.req("GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], t["run"]["id"])).text
            msgs = [json.loads(l)["message"] for l in lines.splitlines()]
            assert msgs[0] in ("0022", "0o22", "22"), (rt, msgs)
        with open(os.path.join(s.data, "stderr.log")) as f:
            assert "died at start" not in f.read()
    finally:
        s.stop()


def test_ts_types_are_stripped():
    code = ("interface P { n: number }\n"
            "const p: P = JSON.parse(await (await import('fs')).promises.readFile(process.env.QUERN_INPUT!, 'utf8'));\n"
            "console.log('n=' + (p.n * 2));\n")
    t = create(code, "ts", input={"n": 21}, wait_for_result=True)
    assert t["run"]["status"] == "completed", logs(t, t["run"])
    assert "n=42" in [x["message"] for x in logs(t, t["run"])]


def test_runtime_with_every_ro_path_and_every_storage_scope():
    """A runtime with the most read-only paths quern.conf allows (8) and a
    task given all three storage scopes: the box gets the 13 mounts (its
    mount table was sized for 12, one slot was written past its end; the
    sanitizer build aborted, others wrote over the stack)."""
    import tempfile
    d = tempfile.mkdtemp(prefix="quern-ro-", dir=os.environ.get("QUERN_TEST_TMP"))
    cfg = os.path.join(d, "quern.conf")
    with open(cfg, "w") as f:
        f.write("[runtime.many]\ninterpreter = /bin/sh\nro_paths = %s\n"
                % " ".join("/usr/share:/opt/ro%d" % i for i in range(8)))
    s = Server(extra_args=["--config", cfg])
    try:
        expect(s.req("POST", P + "/storage", {"scope": "organization", "name": "org"}), 201)
        t = expect(s.req("POST", P + "/tasks", {"code": "ls /storage /opt", "runtime_id": "many",
                                                 "account_id": "acct-ro", "wait_for_result": True}), 201)
        assert t["run"]["status"] == "completed", t["run"]
        lines = s.req("GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], t["run"]["id"])).text
        msgs = {json.loads(x)["message"] for x in lines.splitlines()}
        assert {"account", "project", "org"} <= msgs, msgs
        assert {"ro%d" % i for i in range(8)} <= msgs, msgs
    finally:
        s.stop()


def test_many_and_large_secrets_reach_the_box():
    """A task may name 100 secrets (API): exec took at most 64 (the run
    failed sandbox_error), put only the first ~48 in the environment with
    secrets_env (the rest silently missing), and /run/secrets was a 1 MiB
    tmpfs (16 values of 64 KiB failed the spawn, ENOSPC)."""
    names = []
    for i in range(100):
        name = "MANY_%03d" % i
        value = ("v%03d-" % i) + ("x" * (65536 - 5) if i < 20 else "small")
        expect(S.req("POST", P + "/secrets", {"name": name, "value": value}), 201)
        names.append(name)
    files_bytes = 20 * 65536 + 80 * len("v000-small")
    code = ("env | grep -c '^MANY_'; ls /run/secrets | wc -l; cat /run/secrets/* | wc -c; "
            "echo \"$MANY_099\"")
    # every secret in the environment (small ones: the kernel bounds an
    # environment at a few MiB)
    t = create(code, secrets=names[20:], secrets_env=True, wait_for_result=True)
    assert t["run"]["status"] == "completed", t["run"]
    assert [x["message"] for x in logs(t, t["run"])] == ["80", "80", str(80 * 10), "***"], \
        logs(t, t["run"])
    # all 100 as files, 20 of them 64 KiB
    t = create(code, secrets=names, wait_for_result=True)
    assert t["run"]["status"] == "completed", t["run"]
    assert [x["message"] for x in logs(t, t["run"])][:3] == ["0", "100", str(files_bytes)], \
        logs(t, t["run"])


def test_runtime_ro_path_may_be_a_file():
    """ro_paths may name a file: the template's mount point for it was a
    directory, and every run of the runtime failed sandbox_error
    (move_mount: EINVAL).  Another runtime may use the same box path for a
    directory."""
    import tempfile
    d = tempfile.mkdtemp(prefix="quern-rofile-", dir=os.environ.get("QUERN_TEST_TMP"))
    cfg = os.path.join(d, "quern.conf")
    host_file = os.path.join(d, "app.conf")
    with open(host_file, "w") as f:
        f.write("from-the-host\n")
    os.chmod(d, 0o755)
    with open(cfg, "w") as f:
        f.write("[runtime.rofile]\ninterpreter = /bin/sh\nro_paths = %s:/opt/app.conf /usr/share:/opt/share\n\n"
                "[runtime.rodir]\ninterpreter = /bin/sh\nro_paths = /usr/share:/opt/app.conf\n" % host_file)
    s = Server(extra_args=["--config", cfg])
    try:
        for rt, code, want in (("rofile", "cat /opt/app.conf; ls -d /opt/share/doc", ["from-the-host", "/opt/share/doc"]),
                               ("rodir", "ls -d /opt/app.conf/doc", ["/opt/app.conf/doc"])):
            t = expect(s.req("POST", P + "/tasks", {"code": code, "runtime_id": rt,
                                                     "wait_for_result": True}), 201)
            assert t["run"]["status"] == "completed", (rt, t["run"])
            lines = s.req("GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], t["run"]["id"])).text
            assert [json.loads(x)["message"] for x in lines.splitlines()] == want, (rt, lines)
    finally:
        s.stop()


def test_a_box_too_deep_to_build_fails_its_run_not_quernd():
    """A box whose file system takes more steps than its plan holds (here:
    ro_paths with deep box paths, one a file so that the box builds its
    whole root) fails its run sandbox_error; quernd aborted."""
    import tempfile
    d = tempfile.mkdtemp(prefix="quern-deep-", dir=os.environ.get("QUERN_TEST_TMP"))
    cfg = os.path.join(d, "quern.conf")
    deep = "/".join("d%d" % k for k in range(45))
    with open(cfg, "w") as f:
        f.write("[runtime.deep]\ninterpreter = /bin/sh\nro_paths = /etc/hostname:/opt/hn %s\n"
                % " ".join("/usr/share:/opt/r%d/%s" % (i, deep) for i in range(7)))
    s = Server(extra_args=["--config", cfg])
    try:
        t = expect(s.req("POST", P + "/tasks", {"code": "echo hi", "runtime_id": "deep",
                                                 "wait_for_result": True}), 201)
        assert t["run"]["status"] == "failed" and t["run"]["error"]["code"] == "sandbox_error", t["run"]
        assert "steps to build" in t["run"]["error"]["message"], t["run"]["error"]
        t = expect(s.req("POST", P + "/tasks", {"code": "echo hi", "wait_for_result": True}), 201)
        assert t["run"]["status"] == "completed", t["run"]
    finally:
        s.stop()


def test_a_memory_limit_that_cannot_be_set_fails_the_run():
    """When the kernel cannot bring a slot's memory cgroup under the limit a
    run asks for (EBUSY: memory it cannot reclaim, here a process of the
    test's put in the slot), the run fails sandbox_error; it ran under the
    slot's previous limit (1 GiB for a run asking for 64 MiB)."""
    import subprocess
    s = Server(env={"QUERN_WARM": "python=0,node=0,ts=0"})   # cold runs: cell 0 each time
    hog = None
    try:
        def run(code, mb):
            t = expect(s.req("POST", P + "/tasks", {"code": code, "settings": {"memory_limit_mb": mb},
                                                     "wait_for_result": True}), 201)
            return t["run"]
        assert run("true", 1024)["status"] == "completed"
        slot0 = [os.path.join(d, "slot0") for d in _cgroups_of(s.proc.pid)
                 if os.path.exists(os.path.join(d, "slot0", "memory.limit_in_bytes")) or
                 os.path.exists(os.path.join(d, "slot0", "memory.max"))]
        if not slot0:
            print("     (no memory cgroup on this host: nothing to check)")
            return
        procs = os.path.join(slot0[0], "cgroup.procs")
        hog = subprocess.Popen([sys.executable, "-c", "import sys, time; a = bytearray(120 << 20); "
                                "print('ok', flush=True); time.sleep(600)"], stdout=subprocess.PIPE,
                               preexec_fn=lambda: open(procs, "w").write("0"))
        assert hog.stdout.readline().strip() == b"ok"
        r = run("python3 -c 'a = bytearray(150 << 20)'", 64)
        assert r["status"] == "failed" and r["error"]["code"] == "sandbox_error", r
        assert "memory or process limit" in r["error"]["message"], r["error"]
        hog.kill()
        hog.wait()
        hog = None
        r = wait_for(lambda: (lambda x: x if (x["error"] or {}).get("code") != "sandbox_error" else None)(
            run("python3 -c 'a = bytearray(150 << 20)'", 64)), 30, "the slot's memory free again")
        assert r["status"] == "failed" and r["error"]["code"] == "memory_limit_exceeded", r
    finally:
        if hog:
            hog.kill()
            hog.wait()
        s.stop()


def _children(pid):
    """[(pid, name, state)] of pid's child processes."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        rest = st.rsplit(")", 1)[1].split()
        if int(rest[1]) == pid:
            out.append((int(p), st.split("(", 1)[1].rsplit(")", 1)[0], rest[0]))
    return out


def test_a_slirp4netns_that_dies_is_reaped():
    """A slot's slirp4netns that ended (killed here) stayed a zombie until
    a run with network came to that same slot, which may be never; it is
    reaped when the next box ends, and the slot's next run with network
    starts another."""
    if not os.access("/usr/bin/slirp4netns", os.X_OK):
        print("     (no slirp4netns: nothing to check)")
        return
    s = Server()
    try:
        def run(**kw):
            t = expect(s.req("POST", P + "/tasks", dict({"code": "echo hi", "wait_for_result": True}, **kw)), 201)
            assert t["run"]["status"] == "completed", t["run"]
        run(settings={"network": True})
        slirps = [c for c in _children(s.proc.pid) if c[1] == "slirp4netns"]
        assert slirps, _children(s.proc.pid)
        for p, _, _ in slirps:
            os.kill(p, 9)
        wait_for(lambda: all(c[2] == "Z" for c in _children(s.proc.pid) if c[0] in [x[0] for x in slirps]),
                 what="slirp4netns dead")
        run()
        left = [c for c in _children(s.proc.pid) if c[0] in [x[0] for x in slirps]]
        assert left == [], left
        for _ in range(3):
            run(settings={"network": True})
    finally:
        s.stop()


def _own_cgroup_dirs():
    """The cgroup directories this process (and so the quernds it starts)
    is in, one per hierarchy: quernd makes its own under these."""
    dirs = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            hier, ctrls, path = line.rstrip("\n").split(":", 2)
            if hier == "0":
                mnt = "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") \
                    else "/sys/fs/cgroup/unified"
            else:
                mnt = "/sys/fs/cgroup/" + ctrls.replace("name=", "")
            d = mnt + ("" if path == "/" else path)
            if os.path.isdir(d):
                dirs.append(d)
    return dirs


def _cgroups_of(pid):
    """The cgroup directories quernd pid made (quern-<pid>-<seq>) under this
    process's own cgroups: a directory of the same name elsewhere is another
    quernd's of that pid long ago (pids are reused), which no quernd started
    here would ever look at."""
    found = []
    for top in _own_cgroup_dirs():
        try:
            names = os.listdir(top)
        except OSError:
            continue
        found += [os.path.join(top, d) for d in names if d.startswith("quern-%d-" % pid)]
    return sorted(found)


def test_cgroups_of_a_crashed_quernd_are_removed_by_the_next():
    """A SIGKILLed quernd cannot remove its cgroups (a base and a directory
    per slot, per controller): they stayed for good, hundreds on a host
    that runs the crash tests.  The next quernd removes those of a quernd
    that is gone; a live one's stay."""
    s = Server()
    mine = _cgroups_of(s.proc.pid)
    if not mine:
        s.stop()
        print("     (no cgroups on this host: nothing to check)")
        return
    t = expect(s.req("POST", P + "/tasks", {"code": "echo hi", "wait_for_result": True}), 201)
    assert t["run"]["status"] == "completed", t["run"]
    dead = s.proc.pid
    s.kill()
    assert _cgroups_of(dead) == mine
    s2 = Server()
    try:
        assert _cgroups_of(dead) == [], _cgroups_of(dead)
        assert _cgroups_of(S.proc.pid), "the live quernd's cgroups stay"
        t = expect(s2.req("POST", P + "/tasks", {"code": "echo hi", "wait_for_result": True}), 201)
        assert t["run"]["status"] == "completed", t["run"]
    finally:
        s2.stop()


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
