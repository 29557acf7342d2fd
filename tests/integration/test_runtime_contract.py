"""A black-box audit of ../shared/RUNTIME.md through the API: every runtime
(sh, bash, python, node, ts) against the basic contract (environment, input,
output, artifacts, stdout/stderr, the fd-3 control channel), iterations,
interactions, commands, cancel, timeouts, limits and their error codes,
accounting, secrets, runtime_unavailable, and hostile code the isolation
section promises to contain.  After every hostile run quernd must answer
/healthz.  No timing assertions: time limits are upper bounds against hangs.

Claims of RUNTIME.md checked here (R = runtime table, E = "what the code
sees", O = outcome table, L = default limits, I = isolation):
  R1 sh/default run /bin/sh, bash runs bash, python python3, node ES modules
     with top-level await, ts strips types and has node's contract
  R2 unknown runtime_id → 400; missing interpreter → failed runtime_unavailable
  E1 fresh private scratch cwd, removed after the run
  E2 QUERN_INPUT, QUERN_OUTPUT (file or fd-3 output), invalid JSON → invalid_output
  E3 QUERN_ARTIFACTS: regular files stored; FIFOs, devices, symlinks never followed
  E4 QUERN_CHECKPOINT: the latest checkpoint on a retry; absent on attempt 1
  E5 QUERN_STORAGE_*, QUERN_RUN_ID/TASK_ID/PROJECT_ID/ATTEMPT, QUERN_CONTROL_FD=3
  E6 secrets: exact bytes, redaction in logs, fd-3 logs, outputs, events
  E7 fd 3: log (level, data), progress, checkpoint, output, usage, input_request
     round trip (`{"type":"interaction_response","response":…}` on stdin)
  E8 continue: fresh process per iteration, data as input, iterations counted,
     log entries carry their iteration, max_iterations → failed max_iterations
  E9 stdin user_message lines, close, cancel (SIGTERM then SIGKILL), 400
     without a live sandbox
  E10 stdout/stderr lines become log entries in order
  O1 exit 0 completed / review_required; exit ≠ 0 failed exit_code, retried
  O2 timeout / inactivity_timeout → timed_out
  O3 memory → memory_limit_exceeded; log → output_limit_exceeded (kept to limit)
  O4 signal → failed, code signal, name in the message
  O5 policy → denied policy_denied; cancel → canceling → canceled
  O6 exit_code, cpu_ms, peak_memory_kb, wall_ms on every run
  L1 open files 256, processes 64, file size 64 MiB, memory 256 MiB, not PID 1
  I1 new user/pid/mount/net/ipc/uts namespaces, read-only system, private /tmp,
     host /tmp, data dir, other runs invisible, no network, seccomp (mount,
     ptrace, keyctl, bpf, modules, unshare, setns), rlimits cannot be raised
"""
import base64
import json
import os
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import CodeTasks, Server, expect, run_tests, wait_for  # noqa: E402

LEAK = "host-env-leak-7c1f93"
S = Server(env={"QUERN_AUDIT_HOST_SECRET": LEAK})
P = "/api/projects/default"
TERMINAL = ("completed", "failed", "timed_out", "denied", "canceled")
RUNTIMES = ("sh", "bash", "python", "node", "ts")


# ---- helpers ----

C = CodeTasks(S)
create, run_of, base_of, wait_status, logs = C.create, C.run_of, C.base_of, C.wait_status, C.logs


def finish(task, timeout=60):
    return wait_status(task, TERMINAL, timeout)


def msgs(task, run, type_=None):
    return [x["message"] for x in logs(task, run) if type_ is None or x["type"] == type_]


def events(task, run):
    return expect(S.req("GET", base_of(task, run) + "/session_logs?limit=10000"), 200)


def healthy():
    assert S.req("GET", "/healthz", key=None).status == 200
    assert S.req("GET", "/readyz", key=None).status == 200


def accounted(run):
    """O6: every run that executed carries exit_code, cpu_ms, peak_memory_kb, wall_ms."""
    for k in ("exit_code", "cpu_ms", "peak_memory_kb", "wall_ms"):
        assert k in run, (k, run)
    for k in ("cpu_ms", "peak_memory_kb", "wall_ms"):
        assert isinstance(run[k], int) and run[k] >= 0, (k, run)


def go(code, runtime="sh", settings=None, **kw):
    """Runs code to its end; returns (task, run, log entries); checks health and accounting."""
    t = create(code, runtime, settings=settings or {}, **kw)
    run = finish(t, 120)
    healthy()
    if run["status"] != "denied":
        accounted(run)
    return t, run, logs(t, run)


def many(specs):
    """Starts several runs at once and waits for all: [(code, runtime, kw)] → [(task, run, logs)]."""
    ts = [create(c, rt, **kw) for c, rt, kw in specs]
    out = []
    for t in ts:
        run = finish(t, 120)
        accounted(run)
        out.append((t, run, logs(t, run)))
    healthy()
    return out


def py(body):
    return "import os, sys, json\n" + body


CTL_PY = "def ctl(m):\n    os.write(3, (json.dumps(m) + '\\n').encode())\n"


# ---- the basic contract, every runtime ----

CONTRACT = {
    "sh": r"""
set -e
echo "env=$QUERN_RUN_ID|$QUERN_TASK_ID|$QUERN_PROJECT_ID|$QUERN_ATTEMPT|$QUERN_CONTROL_FD"
echo "input=$(tr -d '\n' < "$QUERN_INPUT")"
echo x > w.txt; [ "$(cat w.txt)" = x ]
echo "shell=${BASH_VERSION:-none}"
echo err-line >&2
echo '{"type":"log","level":"warn","message":"from-fd3","data":{"k":1}}' >&3
echo '{"type":"progress","progress":0.25}' >&3
printf 'art-sh' > "$QUERN_ARTIFACTS/a.txt"
env | grep -c . > /dev/null
echo "leak=$(env | grep -c QUERN_AUDIT_HOST_SECRET)"
printf '{"rt":"sh"}' > "$QUERN_OUTPUT"
""",
    "bash": r"""
set -euo pipefail
declare -a arr=(a b c)
[[ ${#arr[@]} -eq 3 ]]
echo "env=$QUERN_RUN_ID|$QUERN_TASK_ID|$QUERN_PROJECT_ID|$QUERN_ATTEMPT|$QUERN_CONTROL_FD"
echo "input=$(tr -d '\n' < "$QUERN_INPUT")"
echo x > w.txt; [[ $(<w.txt) == x ]]
echo "shell=bash"
echo err-line >&2
echo '{"type":"log","level":"warn","message":"from-fd3","data":{"k":1}}' >&3
echo '{"type":"progress","progress":0.25}' >&3
printf 'art-bash' > "$QUERN_ARTIFACTS/a.txt"
echo "leak=$(env | grep -c QUERN_AUDIT_HOST_SECRET || true)"
printf '{"rt":"bash"}' > "$QUERN_OUTPUT"
""",
    "python": py(CTL_PY + r"""
e = os.environ
print("env=" + "|".join([e["QUERN_RUN_ID"], e["QUERN_TASK_ID"], e["QUERN_PROJECT_ID"],
                         e["QUERN_ATTEMPT"], e["QUERN_CONTROL_FD"]]))
print("input=" + json.dumps(json.load(open(e["QUERN_INPUT"]))))
open("w.txt", "w").write("x")
assert open("w.txt").read() == "x"
assert sys.version_info[0] == 3 and sys.executable == "/usr/bin/python3", sys.executable
assert __name__ == "__main__" and sys.argv[0].endswith(".py")
print("shell=python", flush=True)
print("err-line", file=sys.stderr, flush=True)
ctl({"type": "log", "level": "warn", "message": "from-fd3", "data": {"k": 1}})
ctl({"type": "progress", "progress": 0.25})
open(e["QUERN_ARTIFACTS"] + "/a.txt", "w").write("art-python")
print("leak=%d" % sum(1 for k in e if k == "QUERN_AUDIT_HOST_SECRET"))
json.dump({"rt": "python"}, open(e["QUERN_OUTPUT"], "w"))
"""),
    "node": r"""
import fs from 'node:fs';
const e = process.env;
const ctl = (m) => fs.writeSync(3, JSON.stringify(m) + '\n');
console.log('env=' + [e.QUERN_RUN_ID, e.QUERN_TASK_ID, e.QUERN_PROJECT_ID, e.QUERN_ATTEMPT,
                      e.QUERN_CONTROL_FD].join('|'));
console.log('input=' + JSON.stringify(JSON.parse(fs.readFileSync(e.QUERN_INPUT, 'utf8'))));
fs.writeFileSync('w.txt', 'x');
if (fs.readFileSync('w.txt', 'utf8') !== 'x') process.exit(9);
await new Promise((r) => setTimeout(r, 5));
if (!process.argv[1].endsWith('.mjs') || process.execPath !== '/usr/bin/node') process.exit(8);
console.log('shell=' + (typeof import.meta.url));
console.error('err-line');
ctl({type: 'log', level: 'warn', message: 'from-fd3', data: {k: 1}});
ctl({type: 'progress', progress: 0.25});
fs.writeFileSync(e.QUERN_ARTIFACTS + '/a.txt', 'art-node');
console.log('leak=' + Object.keys(e).filter((k) => k === 'QUERN_AUDIT_HOST_SECRET').length);
fs.writeFileSync(e.QUERN_OUTPUT, JSON.stringify({rt: 'node'}));
""",
    "ts": r"""
import fs from 'node:fs';
import type { Stats } from 'node:fs';
interface Msg { type: string; [k: string]: unknown }
type Env = Record<string, string | undefined>;
const e: Env = process.env;
const ctl = (m: Msg): void => { fs.writeSync(3, JSON.stringify(m) + '\n'); };
function first<T>(xs: T[]): T { return xs[0]!; }
console.log('env=' + [e.QUERN_RUN_ID, e.QUERN_TASK_ID, e.QUERN_PROJECT_ID, e.QUERN_ATTEMPT,
                      e.QUERN_CONTROL_FD].join('|'));
console.log('input=' + JSON.stringify(JSON.parse(fs.readFileSync(e.QUERN_INPUT as string, 'utf8'))));
fs.writeFileSync('w.txt', 'x');
const st: Stats | null = fs.statSync('w.txt');
if (st!.size !== 1) process.exit(9);
await new Promise<void>((r) => setTimeout(r, 5));
console.log('shell=' + first<string>([typeof import.meta.url]));
console.error('err-line');
ctl({type: 'log', level: 'warn', message: 'from-fd3', data: {k: 1}});
ctl({type: 'progress', progress: 0.25});
fs.writeFileSync(e.QUERN_ARTIFACTS + '/a.txt', 'art-ts');
console.log('leak=' + Object.keys(e).filter((k: string) => k === 'QUERN_AUDIT_HOST_SECRET').length);
fs.writeFileSync(e.QUERN_OUTPUT!, JSON.stringify({rt: 'ts'}));
""",
}


def test_basic_contract_every_runtime():
    inp = {"x": 7, "s": "héllo"}
    done = many([(CONTRACT[rt], rt, {"input": inp}) for rt in RUNTIMES])
    for rt, (t, run, lg) in zip(RUNTIMES, done):
        where = (rt, run, lg)
        assert run["status"] == "completed", where
        assert run["exit_code"] == 0 and run["runtime_id"] == rt, where
        assert run["output"] == {"rt": rt}, where
        out = [x["message"] for x in lg if x["type"] == "stdout"]
        assert "env=%s|%s|default|1|3" % (run["id"], t["id"]) in out, where
        got = [json.loads(m[6:]) for m in out if m.startswith("input=")]
        assert got == [inp], where
        assert "leak=0" in out, where
        if rt == "sh":
            assert "shell=none" in out, where          # /bin/sh, not bash
        if rt in ("node", "ts"):
            assert "shell=string" in out, where        # an ES module: import.meta exists
        assert [x["message"] for x in lg if x["type"] == "stderr"] == ["err-line"], where
        fd3 = [x for x in lg if x["type"] == "log"]
        assert len(fd3) == 1 and fd3[0]["message"] == "from-fd3", where
        assert fd3[0]["level"] == "warn" and fd3[0]["data"] == {"k": 1}, where
        arts = {a["name"]: a for a in run["artifacts"]}
        assert list(arts) == ["a.txt"] and arts["a.txt"]["size"] == len("art-" + rt), where
        r = S.req("GET", base_of(t, run) + "/artifacts/content?name=a.txt")
        assert r.status == 200 and r.text == "art-" + rt, where
        ev = events(t, run)
        assert any(e["type"] == "task_run.progress" and e["data"].get("progress") == 0.25 for e in ev), ev


OUT_FD3 = {
    "sh": 'echo \'{"type":"output","output":{"via":"fd3","rt":"sh"}}\' >&3',
    "bash": 'echo \'{"type":"output","output":{"via":"fd3","rt":"bash"}}\' >&3',
    "python": py(CTL_PY + 'ctl({"type": "output", "output": {"via": "fd3", "rt": "python"}})\n'),
    "node": "import fs from 'fs';\nfs.writeSync(3, JSON.stringify({type:'output',output:{via:'fd3',rt:'node'}})+'\\n');\n",
    "ts": "import fs from 'fs';\nconst o: {via: string; rt: string} = {via: 'fd3', rt: 'ts'};\n"
          "fs.writeSync(3, JSON.stringify({type:'output',output:o})+'\\n');\n",
}


def test_output_by_control_message_every_runtime():
    done = many([(OUT_FD3[rt], rt, {}) for rt in RUNTIMES])
    for rt, (t, run, lg) in zip(RUNTIMES, done):
        assert run["status"] == "completed" and run["output"] == {"via": "fd3", "rt": rt}, (rt, run, lg)


EXIT5 = {
    "sh": "echo before; exit 5", "bash": "echo before; exit 5",
    "python": "print('before', flush=True)\nraise SystemExit(5)\n",
    "node": "console.log('before');\nprocess.exit(5);\n",
    "ts": "const n: number = 5;\nconsole.log('before');\nprocess.exit(n);\n",
}


def test_exit_code_every_runtime():
    done = many([(EXIT5[rt], rt, {}) for rt in RUNTIMES])
    for rt, (t, run, lg) in zip(RUNTIMES, done):
        assert run["status"] == "failed" and run["exit_code"] == 5, (rt, run)
        assert run["error"]["code"] == "exit_code", (rt, run)
        assert "before" in [x["message"] for x in lg], (rt, lg)


BOM = "\ufeff"


def test_a_leading_byte_order_mark_is_skipped_every_runtime():
    """Code saved by an editor that starts files with a UTF-8 byte-order mark:
    sh and bash took it as part of the first command (exit 127, "\ufeffecho:
    not found"); quernd drops it before the code is written for the box."""
    specs = [(BOM + EXIT5[rt], rt, {}) for rt in RUNTIMES]
    for (_, rt, _), (t, run, lg) in zip(specs, many(specs)):
        assert run["status"] == "failed" and run["exit_code"] == 5, (rt, run, lg)
        assert "before" in [x["message"] for x in lg], (rt, lg)
    # only the first one: a second mark is the code's own, as the shell reads it
    t, run, lg = go(BOM + BOM + "echo x")
    assert run["exit_code"] == 127, (run, lg)


def test_uncaught_errors_fail_every_runtime():
    specs = [("set -e; false; echo not-here", "sh", {}), ("set -e; false; echo not-here", "bash", {}),
             ("raise ValueError('boom')\n", "python", {}), ("throw new Error('boom');\n", "node", {}),
             ("const f = (): never => { throw new Error('boom'); };\nf();\n", "ts", {}),
             ("await Promise.reject(new Error('boom'));\n", "node", {})]
    for (code, rt, _), (t, run, lg) in zip(specs, many(specs)):
        assert run["status"] == "failed" and run["error"]["code"] == "exit_code", (rt, run)
        assert run["exit_code"] not in (0, None), (rt, run)
        if rt in ("python", "node", "ts"):
            assert any("boom" in x["message"] for x in lg if x["type"] == "stderr"), (rt, lg)


def test_default_runtime_is_sh_and_unknown_is_400():
    t = expect(S.req("POST", P + "/tasks", {"code": 'echo "b=${BASH_VERSION:-none}"',
                                            "wait_for_result": True}), 201)
    assert t["run"]["status"] == "completed" and "b=none" in msgs(t, t["run"]), t["run"]
    for bad in ("cobol", "", "SH", "python ", 7):
        r = S.req("POST", P + "/tasks", {"code": "true", "runtime_id": bad})
        assert r.status == 400 and r.json["error"]["param"] == "runtime_id", (bad, r)
    r = S.req("POST", P + "/definitions", {"id": "rt-cobol", "title": "x", "runtime_id": "cobol", "code": "x"})
    assert r.status == 400 and r.json["error"]["param"] == "runtime_id", r
    expect(S.req("POST", P + "/definitions", {"id": "rt-py", "title": "x", "runtime_id": "python",
                                              "code": "print('from a definition')"}), 201)
    r = S.req("PATCH", P + "/definitions/rt-py", {"runtime_id": "cobol"})
    assert r.status == 400 and r.json["error"]["param"] == "runtime_id", r
    t = expect(S.req("POST", P + "/definitions/rt-py/trigger", {"input": {}}), 201)
    run = finish(t)
    assert run["status"] == "completed" and msgs(t, run) == ["from a definition"], run


def test_ts_type_only_syntax_is_stripped():
    code = r"""
import type { Stats } from 'node:fs';
import { readFileSync } from 'node:fs';
export interface Shape { kind: 'a' | 'b'; n?: number }
type Pair<A, B> = [A, B];
abstract class Base<T> { protected constructor(public readonly v: T) {} abstract get(): T }
class Box extends Base<number> { constructor(v: number) { super(v); } get(): number { return this.v; } }
const p: Pair<string, number> = ['x', 1];
const s = { kind: 'a' } as Shape;
const n = (JSON.parse(readFileSync(process.env.QUERN_INPUT!, 'utf8')) as { n: number }).n;
declare const nothing: unknown;
let st: Stats | undefined;
const r = await Promise.resolve<number>(new Box(n).get() * 2);
console.log(`r=${r} ${p[0]} ${s.kind} ${typeof st}`);
"""
    t, run, lg = go(code, "ts", input={"n": 21})
    assert run["status"] == "completed", lg
    assert "r=42 x a undefined" in [x["message"] for x in lg], lg


def test_stdout_lines_in_order():
    t, run, lg = go("i=0; while [ $i -lt 300 ]; do echo \"o$i\"; i=$((i+1)); done")
    assert run["status"] == "completed"
    out = [x for x in lg if x["type"] == "stdout"]
    assert [x["message"] for x in out] == ["o%d" % i for i in range(300)]
    seqs = [x["seq"] for x in lg]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # each stream keeps its order (across the two pipes the order is the
    # one quernd reads them in: not asserted)
    t, run, lg = go(py("for i in range(200):\n    f = sys.stdout if i % 2 else sys.stderr\n"
                       "    print('m%d' % i, file=f, flush=True)\n"), "python")
    for ty, par in (("stdout", 1), ("stderr", 0)):
        assert [x["message"] for x in lg if x["type"] == ty] == ["m%d" % i for i in range(200) if i % 2 == par], lg


def test_invalid_output_file():
    specs = [("echo '{bad' > \"$QUERN_OUTPUT\"", "sh", {}),
             ("printf '' > \"$QUERN_OUTPUT\"", "sh", {}),
             ("printf '[1,2' > \"$QUERN_OUTPUT\"", "sh", {}),
             ("printf '\\377\\376' > \"$QUERN_OUTPUT\"", "sh", {})]
    for (code, _, _), (t, run, lg) in zip(specs, many(specs)):
        assert run["status"] == "failed" and run["error"]["code"] == "invalid_output", (code, run)
    # no file at all is not an error: the run completes with no output
    t, run, _ = go("true")
    assert run["status"] == "completed" and run["output"] is None


def test_nul_escape_in_box_json_is_valid():
    """"\\u0000" is valid JSON (python's json.dump of /proc/self/cmdline writes
    it): in QUERN_OUTPUT and fd-3 messages it is taken, each NUL becoming
    U+FFFD as in log lines (it failed the run invalid_output, and the fd-3
    message was ignored)."""
    code = py(CTL_PY + "ctl({'type': 'log', 'level': 'warn', 'message': 'a\\0b', 'data': {'k': 'x\\0'}})\n"
                       "ctl({'type': 'checkpoint', 'data': {'s': '\\0'}})\n"
                       "json.dump({'argv': 'one\\0two\\0', 'l': ['\\0']}, open(os.environ['QUERN_OUTPUT'], 'w'))\n")
    for t, run, lg in many([(code, "python", {}), (code.replace("json.dump({", "ctl({'type': 'output', 'output': "
                                                                "{'argv': 'one\\0two\\0', 'l': ['\\0']}})\n#"),
                                              "python", {})]):
        assert run["status"] == "completed", run
        assert run["output"] == {"argv": "one\ufffdtwo\ufffd", "l": ["\ufffd"]}, run["output"]
        entry = [x for x in lg if x["message"] == "a\ufffdb"]
        assert entry and entry[0]["level"] == "warn" and entry[0]["data"] == {"k": "x\ufffd"}, lg
        assert not [x for x in lg if "invalid control message" in x["message"]], lg
        cps = expect(S.req("GET", base_of(t, run) + "/checkpoints"), 200)["data"]
        assert cps and cps[0]["data"] == {"s": "\ufffd"}, cps


def test_lone_surrogate_escape_in_box_json_is_valid():
    """The escape of a lone surrogate is valid JSON text: python's json.dump
    writes one for a file name that is not UTF-8 (os.listdir's "\\udcff").
    It becomes U+FFFD, a pair stays the character, "\\\\ud800" (an escaped
    backslash) stays text (it failed the run invalid_output)."""
    code = py(CTL_PY + "open(b'bad\\xff.txt', 'wb').write(b'x')\n"
                       "ctl({'type': 'log', 'message': 'm\\udcff', 'data': {'k': '\\udc80'}})\n"
                       "json.dump({'files': os.listdir('.'), 'hi': 'a\\ud800b', 'two': '\\ud800\\ud801', "
                       "'pair': '\\U0001F600', 'text': '\\\\ud800'}, open(os.environ['QUERN_OUTPUT'], 'w'))\n")
    t, run, lg = go(code, "python")
    assert run["status"] == "completed", run
    assert run["output"] == {"files": ["bad\ufffd.txt"], "hi": "a\ufffdb", "two": "\ufffd\ufffd",
                             "pair": "\U0001F600", "text": "\\ud800"}, run["output"]
    entry = [x for x in lg if x["message"] == "m\ufffd"]
    assert entry and entry[0]["data"] == {"k": "\ufffd"}, lg


def test_output_file_wins_over_control_output():
    for code in ('echo \'{"type":"output","output":{"from":"fd3"}}\' >&3; echo \'{"from":"file"}\' > "$QUERN_OUTPUT"',
                 'echo \'{"from":"file"}\' > "$QUERN_OUTPUT"; echo \'{"type":"output","output":{"from":"fd3"}}\' >&3'):
        t, run, _ = go(code)
        assert run["status"] == "completed" and run["output"] == {"from": "file"}, run
    t, run, _ = go('echo \'{"type":"output","output":{"n":1}}\' >&3; echo \'{"type":"output","output":[2]}\' >&3')
    assert run["output"] == [2], run     # the last control output counts


def test_environment_details():
    code = ('echo "home=$HOME tmpdir=$TMPDIR pwd=$PWD it=$QUERN_ITERATION acct=${QUERN_STORAGE_ACCOUNT:-none}"; '
            '[ -d "$QUERN_STORAGE_PROJECT" ] && [ -d "$QUERN_STORAGE_ORG" ] && echo dirs')
    t, run, lg = go(code)
    assert [x["message"] for x in lg] == ["home=/scratch tmpdir=/tmp pwd=/scratch it=1 acct=none", "dirs"], lg
    t, run, lg = go('echo "acct=$QUERN_STORAGE_ACCOUNT"; touch "$QUERN_STORAGE_ACCOUNT/x" && echo w', account_id="rt-acct")
    assert [x["message"] for x in lg] == ["acct=/storage/account", "w"], lg
    assert ("account", "accessed") in {(a["scope"], a["access_type"]) for a in run["storage_access"]}, run


def test_storage_access_is_recorded_per_instance():
    def kinds(run):
        return sorted((a["scope"], a["access_type"]) for a in run["storage_access"])
    prov = [("organization", "provided"), ("project", "provided")]
    go('echo seed > "$QUERN_STORAGE_PROJECT/seed"; echo seed > "$QUERN_STORAGE_ORG/seed"')
    specs = [("echo untouched", "sh", {}),
             ('cat "$QUERN_STORAGE_PROJECT/seed"', "sh", {}),
             ('ls "$QUERN_STORAGE_ORG" > /dev/null', "sh", {}),
             ('echo more >> "$QUERN_STORAGE_PROJECT/seed"', "sh", {}),
             (py("print(open(os.environ['QUERN_STORAGE_ORG'] + '/seed').read())\n"), "python", {}),
             ("import fs from 'fs';\nfs.readFileSync(process.env.QUERN_STORAGE_PROJECT + '/seed');\n", "node", {}),
             (py("open(os.environ['QUERN_STORAGE_ORG'] + '/seed').close()\n"), "python", {}),
             ('[ -e "$QUERN_STORAGE_PROJECT/seed" ] && echo there', "sh", {})]
    (_, r0, _), (_, r1, _), (_, r2, _), (_, r3, _), (_, r4, _), (_, r5, _), (_, r6, _), (_, r7, _) = [
        many([sp])[0] for sp in specs]     # one at a time: the instances are shared
    # RUNTIME.md's three kinds: provided at start; opened (a file at the top,
    # or the top directory, opened); accessed (read, written, ...)
    assert kinds(r0) == prov, r0["storage_access"]
    for r, scope in ((r1, "project"), (r2, "organization"), (r3, "project"), (r4, "organization"),
                     (r5, "project")):
        assert kinds(r) == sorted(prov + [(scope, "opened"), (scope, "accessed")]), r["storage_access"]
    assert kinds(r6) == sorted(prov + [("organization", "opened")]), r6["storage_access"]   # no read
    assert kinds(r7) == prov, r7["storage_access"]      # a stat is no use


def test_retries_apply_to_every_failure_of_the_code():
    st = {"max_retries": 1, "retry_delay_ms": 0, "timeout_ms": 400, "kill_grace_ms": 100}
    specs = [("sleep 5", "sh", {"settings": st}), ("kill -KILL $$", "sh", {"settings": st}),
             ("echo '{bad' > \"$QUERN_OUTPUT\"", "sh", {"settings": st})]
    for t, run, _ in many(specs):
        assert run["attempt"] == 2 and run["status"] in ("timed_out", "failed"), run
        assert len(run["errors"]) == 2, run


def test_output_size_bounds():
    # QUERN_OUTPUT: at most 16 MiB and 1000000 JSON values (each costs
    # quernd 40+ bytes once parsed); a big legitimate output is kept whole
    specs = [(py("json.dump(list(range(200000)), open(os.environ['QUERN_OUTPUT'], 'w'))\n"), "python", {}),
             (py("open(os.environ['QUERN_OUTPUT'], 'w').write('[' + '0,' * 1000000 + '0]')\n"), "python", {}),
             (py("open(os.environ['QUERN_OUTPUT'], 'w').write(json.dumps('x' * (17 << 20)))\n"), "python", {})]
    (t1, r1, _), (t2, r2, _), (t3, r3, _) = many(specs)
    assert r1["status"] == "completed" and r1["output"] == list(range(200000)), r1["status"]
    for r in (r2, r3):
        assert r["status"] == "failed" and r["error"]["code"] == "invalid_output", r["error"]


def test_output_schema_applies_to_control_output_too():
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    t, run, _ = go('echo \'{"type":"output","output":{"n":"x"}}\' >&3', output_schema=schema)
    assert run["status"] == "failed" and run["error"]["code"] == "invalid_output", run
    t, run, _ = go('echo \'{"type":"output","output":{"n":3}}\' >&3', output_schema=schema)
    assert run["status"] == "completed" and run["output"] == {"n": 3}, run


# ---- iterations ----

ITER = py(CTL_PY + r"""
d = json.load(open(os.environ["QUERN_INPUT"]))
n = d.get("n", 0)
marker = "/tmp/seen"
print("iter %d fresh=%s" % (n, not os.path.exists(marker)), flush=True)
open(marker, "w").write("x")
if n < 2:
    ctl({"type": "continue", "data": {"n": n + 1}})
else:
    json.dump({"done": n}, open(os.environ["QUERN_OUTPUT"], "w"))
""")


def test_iterations_continue_with_data():
    t, run, lg = go(ITER, "python", input={"n": 0})
    assert run["status"] == "completed", (run, lg)
    assert run["iterations"] == 3 and run["output"] == {"done": 2}, run
    its = [(x["message"].split(" fresh")[0], x["iteration"]) for x in lg if x["type"] == "stdout"]
    assert [m for m, _ in its] == ["iter 0", "iter 1", "iter 2"], lg
    assert len({i for _, i in its}) == 3 and [i for _, i in its] == sorted(i for _, i in its), its
    groups = expect(S.req("GET", P + "/logs?task=" + run["id"]), 200)
    groups = groups["data"] if isinstance(groups, dict) else groups
    assert len(groups) == 3, groups
    for g in groups:
        assert all("iteration" in it or True for it in g["items"])


def test_grouped_log_ids_stay_unique_across_attempts():
    # a retry's iterations start at 1 again: its groups were given the same
    # ids as the first attempt's ("RUN:1", "RUN:2" twice)
    code = py(CTL_PY + r"""
it, at = os.environ["QUERN_ITERATION"], os.environ["QUERN_ATTEMPT"]
print("attempt", at, "iteration", it)
if it == "1":
    ctl({"type": "continue", "data": {}})
elif at == "1":
    sys.exit(1)
""")
    t, run, lg = go(code, "python", settings={"max_retries": 1, "retry_delay_ms": 0})
    assert run["status"] == "completed" and run["attempt"] == 2, (run, lg)
    groups = expect(S.req("GET", P + "/logs?task=" + run["id"]), 200)["data"]
    assert [g["iteration"] for g in groups] == [1, 2, 1, 2], groups
    ids = [g["id"] for g in groups]
    assert len(set(ids)) == 4, ids
    # the first attempt's keep the ids they always had
    assert ids[:2] == [run["id"] + ":1", run["id"] + ":2"], ids
    assert [[x["message"] for x in g["items"]] for g in groups] == [
        ["attempt 1 iteration 1"], ["attempt 1 iteration 2"],
        ["attempt 2 iteration 1"], ["attempt 2 iteration 2"]], groups


def test_a_question_asked_in_a_later_iteration_shows_that_iteration():
    # the run's "iterations" moved only with log lines: a run asking in
    # iteration 2, its iterations silent, showed iterations 0 while it waited
    code = py(CTL_PY + r"""
if os.environ["QUERN_ITERATION"] == "1":
    ctl({"type": "continue", "data": {}})
else:
    ctl({"type": "input_request", "prompt": "it2"})
    sys.stdin.readline()
""")
    t = create(code, "python")
    run = wait_status(t, ["interaction_required"] + list(TERMINAL))
    assert run["status"] == "interaction_required" and run["interaction"]["prompt"] == "it2", run
    assert run["iterations"] == 2, run
    expect(S.req("POST", base_of(t, run) + "/interaction", {"response": 1}), 200)
    run = finish(t)
    assert run["status"] == "completed" and run["iterations"] == 2, run


def test_iterations_keep_scratch_and_renew_tmp():
    code = r"""
n=$(tr -dc 0-9 < "$QUERN_INPUT"); n=${n:-0}
echo "it=$QUERN_ITERATION scratch=[$(ls | tr '\n' ' ')] tmp=[$(ls -A /tmp | tr '\n' ' ')]"
echo x > "/tmp/t$n"; echo y > "./s$n"
[ "$n" -lt 2 ] && echo "{\"type\":\"continue\",\"data\":{\"n\":$((n+1))}}" >&3
true
"""
    t, run, lg = go(code)
    assert run["status"] == "completed" and run["iterations"] == 3, (run, lg)
    assert [x["message"] for x in lg] == ["it=1 scratch=[] tmp=[]", "it=2 scratch=[s0 ] tmp=[]",
                                          "it=3 scratch=[s0 s1 ] tmp=[]"], lg
    assert [x["iteration"] for x in lg] == [1, 2, 3], lg


def test_a_retry_does_not_keep_the_failed_attempts_question():
    t = C.create("echo '{\"type\":\"input_request\",\"prompt\":\"name?\"}' >&3; sleep 30",
                 settings={"timeout_ms": 1500, "max_retries": 1, "retry_delay_ms": 600000})
    C.wait_status(t, ("interaction_required",))
    # the wait times out: attempt 2 waits its delay, queued, with no question
    run = wait_for(lambda: (lambda r: r if r["attempt"] == 2 else None)(C.run_of(t)), 60, "a retry")
    assert run["status"] == "queued", run
    assert run.get("interaction") is None and not run.get("pending_interactions"), run
    expect(S.req("POST", P + "/tasks/%s/cancel" % t["id"]), 200)


def test_max_iterations():
    code = 'echo tick; echo \'{"type":"continue","data":{}}\' >&3'
    t, run, lg = go(code, settings={"max_iterations": 3})
    assert run["status"] == "failed" and run["error"]["code"] == "max_iterations", run
    assert run["iterations"] == 3, run
    assert [x["message"] for x in lg if x["type"] == "stdout"] == ["tick"] * 3, lg


def test_continue_then_failure_fails_the_run():
    code = 'echo \'{"type":"continue","data":{}}\' >&3; exit 4'
    t, run, _ = go(code)
    assert run["status"] == "failed" and run["exit_code"] == 4 and run["iterations"] == 1, run


def test_each_iterations_output_file_counts():
    # an iteration that continues had its QUERN_OUTPUT ignored: invalid JSON
    # there passed unseen, and a valid one was lost
    bad = ('[ "$QUERN_ITERATION" = 1 ] && { echo "{bad" > "$QUERN_OUTPUT"; '
           'echo \'{"type":"continue","data":{}}\' >&3; }; exit 0')
    good = ('[ "$QUERN_ITERATION" = 1 ] && { echo \'{"from": 1}\' > "$QUERN_OUTPUT"; '
            'echo \'{"type":"continue","data":{}}\' >&3; }; exit 0')
    (_, r1, _), (_, r2, _) = many([(bad, "sh", {}), (good, "sh", {})])
    assert r1["status"] == "failed" and r1["error"]["code"] == "invalid_output", r1
    assert r1["iterations"] == 1, r1
    assert r2["status"] == "completed" and r2["iterations"] == 2 and r2["output"] == {"from": 1}, r2


# ---- interactions, commands, cancel ----

def test_input_request_round_trip_python():
    code = py(CTL_PY + r"""
ctl({"type": "input_request", "prompt": "age?", "schema": {"type": "integer"}})
line = sys.stdin.readline()
print("got " + json.dumps(json.loads(line), sort_keys=True), flush=True)
ctl({"type": "output", "output": {"age": json.loads(line)["response"]}})
""")
    t = create(code, "python")
    run = wait_status(t, ["interaction_required"] + list(TERMINAL))
    assert run["status"] == "interaction_required", logs(t, run)
    assert run["interaction"]["prompt"] == "age?" and run["interaction"]["schema"] == {"type": "integer"}
    b = base_of(t, run)
    # the request's schema is the answer's contract (docs/RUNTIME.md)
    for bad in ("x", 4.5, None):
        r = S.req("POST", b + "/interaction", {"response": bad})
        assert r.status == 400 and r.json["error"]["param"] == "response", (bad, r)
    assert run_of(t)["status"] == "interaction_required"
    expect(S.req("POST", b + "/interaction", {"response": 42}), 200)
    assert S.req("POST", b + "/interaction", {"response": 43}).status in (409, 200)
    run = finish(t)
    assert run["status"] == "completed" and run["output"] == {"age": 42}, run
    assert 'got {"response": 42, "type": "interaction_response"}' in msgs(t, run)
    types = [e["type"] for e in events(t, run)]
    i = types.index("task_run.interaction_required")
    assert "task_run.completed" in types[i:], types


def test_input_request_schema_with_keywords_outside_the_subset_still_holds():
    # create refuses multipleOf, not, ... (docs/API.md); a question's schema
    # comes from the code, so such keywords are ignored there, not the whole
    # schema with them: "type" still holds
    code = py(CTL_PY + r"""
ctl({"type": "input_request", "prompt": "n?", "schema": {"type": "integer", "multipleOf": 2}})
line = sys.stdin.readline()
ctl({"type": "output", "output": {"n": json.loads(line)["response"]}})
""")
    t = create(code, "python")
    run = wait_status(t, ["interaction_required"] + list(TERMINAL))
    assert run["status"] == "interaction_required", logs(t, run)
    b = base_of(t, run)
    r = S.req("POST", b + "/interaction", {"response": "x"})
    assert r.status == 400 and r.json["error"]["code"] == "invalid_response", r
    expect(S.req("POST", b + "/interaction", {"response": 3}), 200)
    run = finish(t)
    assert run["status"] == "completed" and run["output"] == {"n": 3}, run


def test_questions_asked_back_to_back_are_asked_in_turn():
    # a second input_request before the first is answered was dropped: the
    # run went back to running and the code waited for an answer until its
    # timeout; it is queued and asked once the first is answered
    code = py(CTL_PY + r"""
ctl({"type": "input_request", "prompt": "q1"})
ctl({"type": "input_request", "prompt": "q2", "schema": {"type": "string"}})
a = json.loads(sys.stdin.readline())["response"]
b = json.loads(sys.stdin.readline())["response"]
ctl({"type": "output", "output": [a, b]})
""")
    t = create(code, "python", settings={"inactivity_timeout_ms": 500})
    run = wait_status(t, ["interaction_required"] + list(TERMINAL))
    assert run["status"] == "interaction_required" and run["interaction"]["prompt"] == "q1", run
    b = base_of(t, run)
    expect(S.req("POST", b + "/interaction", {"response": 1}), 200)
    # q2 is asked next: from the queue in the same write, or, when the answer
    # came before quernd had read q2 (a slow machine), as q2 arrives
    run = wait_for(lambda: (lambda r: r if r["status"] == "interaction_required" else None)(run_of(t)),
                   30, "q2 asked")
    assert run["interaction"]["prompt"] == "q2" and run["interaction"]["schema"] == {"type": "string"}
    assert run["pending_interactions"] == [], run
    time.sleep(1.0)    # over the inactivity limit, still waiting for a human
    assert S.req("POST", b + "/interaction", {"response": 2}).status == 400   # q2's schema
    expect(S.req("POST", b + "/interaction", {"response": "two"}), 200)
    run = finish(t)
    assert run["status"] == "completed" and run["output"] == [1, "two"], run
    assert run["interaction"] is None, run
    # a question left unanswered when the code ends is not shown as pending
    t, run, _ = go(py(CTL_PY + "ctl({'type': 'input_request', 'prompt': 'never'})\n"), "python")
    assert run["status"] == "completed" and run["interaction"] is None, run


def test_a_flood_of_questions_is_capped():
    # each waiting question was saved with the run, so 40 000 of them held
    # the store's writer (every project's writes) for minutes; at most 100
    # wait, the rest are dropped with one warning
    code = py(CTL_PY + r"""
for i in range(400):
    ctl({"type": "input_request", "prompt": "q%d" % i})
print(sys.stdin.readline().strip(), flush=True)
""")
    t = create(code, "python", settings={"timeout_ms": 60000})
    run = wait_status(t, ["interaction_required"] + list(TERMINAL))
    assert run["status"] == "interaction_required" and run["interaction"]["prompt"] == "q0", run
    run = wait_for(lambda: (lambda r: r if len(r["pending_interactions"]) == 99 else None)(run_of(t)),
                   30, "99 questions waiting")
    assert run["pending_interactions"][-1]["prompt"] == "q99", run["pending_interactions"][-1]
    warned = [m for m in msgs(t, run) if "input_request dropped" in m]
    assert len(warned) == 1, warned
    expect(S.req("POST", base_of(t, run) + "/cancel", {}), 200)
    run = finish(t)
    assert run["status"] == "canceled", run


def test_a_flood_of_progress_beside_a_big_run_is_stored_once_per_batch():
    # each progress message used to rewrite the whole run (here 1 MB of
    # checkpoint and output): 20 000 of them were 20 GB of writes
    code = py(CTL_PY + r"""
big = "x" * 500000
ctl({"type": "checkpoint", "data": {"blob": big}})
ctl({"type": "output", "output": {"blob": big}})
for i in range(1, 20001):
    ctl({"type": "progress", "progress": i / 20000})
    ctl({"type": "usage", "tokens_used": 1})
""")
    t, run, _ = go(code, "python", settings={"timeout_ms": 120000})
    assert run["status"] == "completed", run
    assert run["progress"] == 1.0 and run["tokens_used"] == 20000, (run["progress"], run["tokens_used"])
    assert len(run["output"]["blob"]) == 500000
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["progress"] == 1.0


def test_waiting_on_input_is_not_inactivity_but_counts_as_time():
    code = py(CTL_PY + "ctl({'type': 'input_request', 'prompt': 'x'})\nprint(sys.stdin.readline().strip())\n")
    t = create(code, "python", settings={"inactivity_timeout_ms": 300, "timeout_ms": 30000})
    run = wait_status(t, ["interaction_required"] + list(TERMINAL))
    assert run["status"] == "interaction_required", run
    time.sleep(1.0)    # over the inactivity limit, waiting for the answer
    expect(S.req("POST", base_of(t, run) + "/interaction", {"response": "late"}), 200)
    run = finish(t)
    assert run["status"] == "completed", run
    t = create(code, "python", settings={"timeout_ms": 800, "kill_grace_ms": 100})
    run = finish(t)
    assert run["status"] == "timed_out" and run["error"]["code"] == "timeout", run


def test_user_message_line_format_and_close():
    code = py(r"""
for line in sys.stdin:
    print("line " + json.dumps(json.loads(line), sort_keys=True), flush=True)
print("eof", flush=True)
""")
    t = create(code, "python")
    run = wait_status(t, ["running"] + list(TERMINAL))
    b = base_of(t, run)
    for i in range(3):
        r = S.req("POST", b + "/command", {"jsonrpc": "2.0", "method": "user_message",
                                           "params": {"text": "m%d" % i}, "id": i})
        assert r.status == 200 and r.json["jsonrpc"] == "2.0" and r.json["id"] == i, r
    expect(S.req("POST", b + "/command", {"jsonrpc": "2.0", "method": "close", "id": 9}), 200)
    run = finish(t)
    assert run["status"] == "completed", run
    assert msgs(t, run, "stdout") == ['line {"params": {"text": "m%d"}, "type": "user_message"}' % i
                                      for i in range(3)] + ["eof"]
    # a message after close is dropped, and the log says so (it vanished)
    code = py("print(sys.stdin.read() == '', flush=True)\nimport time\ntime.sleep(30)\n")
    t = create(code, "python", settings={"kill_grace_ms": 0})
    b = base_of(t, wait_status(t, ["running"] + list(TERMINAL)))
    expect(S.req("POST", b + "/command", {"jsonrpc": "2.0", "method": "close", "id": 1}), 200)
    wait_for(lambda: "True" in msgs(t, run_of(t)), 30, "the code to see EOF")
    expect(S.req("POST", b + "/command", {"jsonrpc": "2.0", "method": "user_message",
                                          "params": {"text": "late"}, "id": 2}), 200)
    wait_for(lambda: any("stdin was closed" in m for m in msgs(t, run_of(t))), 30, "the warning")
    expect(S.req("POST", b + "/cancel", {}), 200)
    assert finish(t)["status"] == "canceled"


def test_stdin_backlog_is_bounded():
    # code that never reads stdin: quernd keeps at most 16 MiB waiting for
    # it and drops (with a warning in the log) what comes on top
    t = create("echo ready; sleep 60", settings={"timeout_ms": 120000})
    wait_for(lambda: "ready" in msgs(t, run_of(t)), 60, "ready")
    b = base_of(t, run_of(t))
    big = "x" * (1 << 20)
    for i in range(20):
        expect(S.req("POST", b + "/command", {"jsonrpc": "2.0", "method": "user_message",
                                              "params": {"blob": big}, "id": i}), 200)
    wait_for(lambda: any("was dropped" in m for m in msgs(t, run_of(t))), 30, "the warning")
    expect(S.req("POST", b + "/cancel", {}), 200)
    assert finish(t)["status"] == "canceled"
    healthy()


def test_command_without_live_sandbox_is_400():
    t = create("echo held", settings={"require_approval": True})
    run = wait_status(t, ["interaction_required"])
    b = base_of(t, run)
    for m in ("user_message", "close", "cancel"):
        r = S.req("POST", b + "/command", {"jsonrpc": "2.0", "method": m, "params": {}, "id": 1})
        assert r.status == 400, (m, r)
    expect(S.req("POST", b + "/interaction", {"response": {"approved": False}}), 200)
    # an agent run (no sandbox at all)
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "rtaudit-nobody", "run": True}), 201)
    r = S.req("POST", base_of(t, run_of(t)) + "/command",
              {"jsonrpc": "2.0", "method": "user_message", "params": {}, "id": 1})
    assert r.status == 400, r
    S.req("POST", base_of(t, run_of(t)) + "/cancel", {})


def test_command_cancel_sigterm_then_canceled():
    code = "trap 'echo got-term; sleep 0.5; echo after-term; exit 0' TERM\necho ready\nwhile :; do sleep 0.05; done\n"
    t = create(code)
    wait_for(lambda: "ready" in msgs(t, run_of(t)), 60, "ready")
    run = run_of(t)
    r = expect(S.req("POST", base_of(t, run) + "/command",
                     {"jsonrpc": "2.0", "method": "cancel", "id": 1}), 200)
    assert r["id"] == 1 and "result" in r, r
    # at once canceling (the code is handling SIGTERM for 0.5 s), as POST .../cancel
    assert run_of(t)["status"] in ("canceling", "canceled")
    run = finish(t)
    assert run["status"] == "canceled", run      # exit 0 after SIGTERM is still canceled
    m = msgs(t, run)
    assert "got-term" in m, m
    types = [e["type"] for e in events(t, run)]
    assert types.index("task_run.canceling") < types.index("task_run.canceled"), types
    accounted(run)
    healthy()


def test_a_run_ended_from_outside_keeps_its_accounting():
    # a PATCH, a set_output that completes it or its task's deadline ends
    # a run whose code lives: cpu_ms, peak_memory_kb and wall_ms were never
    # recorded, and iterations stayed behind when the last ones logged nothing
    chain = ("if [ \"$QUERN_ITERATION\" -lt 3 ]; then echo '{\"type\":\"continue\",\"data\":{}}' >&3; "
             "exit 0; fi; %s sleep 30")
    for how, kw in (("patch", {}), ("set_output", {"output_schema": {"type": "object"}})):
        t = create(chain % "echo third;", settings={"kill_grace_ms": 100}, **kw)
        wait_for(lambda: "third" in msgs(t, run_of(t)), 60, "the third iteration")
        b = base_of(t, run_of(t))
        if how == "patch":
            expect(S.req("PATCH", b, {"status": "failed", "error_message": "enough"}), 200)
        else:
            expect(S.req("PATCH", b + "/set_output", {"output": {"ok": 1}}), 200)
        run = wait_for(lambda: (lambda x: x if "wall_ms" in x else None)(
            expect(S.req("GET", b), 200)), 60, "the accounting of " + how)
        assert run["status"] == ("failed" if how == "patch" else "completed"), (how, run)
        accounted(run)
        assert run["wall_ms"] > 0 and run["iterations"] == 3, (how, run)
    # silent iterations, ended by the deadline: they are counted all the same
    import datetime
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
            ).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    t = create(chain % "", settings={"kill_grace_ms": 100}, deadline=soon)
    b = base_of(t, run_of(t))
    run = wait_for(lambda: (lambda x: x if "wall_ms" in x else None)(
        expect(S.req("GET", b), 200)), 60, "the accounting of the deadline")
    assert run["error"]["code"] == "deadline_exceeded", run
    accounted(run)
    assert run["iterations"] >= 1, run


def test_a_completion_from_outside_waits_for_its_review():
    # with require_review, a PATCH to completed (or a set_output that
    # completes) moved the run to review_required but left its code
    # running: the code's own end then completed the run past the review,
    # with the code's output in place of the one given
    code = "echo ready; sleep 2; echo late; echo '{\"code\": 1}' > $QUERN_OUTPUT"
    for how in ("patch", "set_output"):
        kw = {"output_schema": {"type": "object"}} if how == "set_output" else {}
        t = create(code, settings={"require_review": True, "kill_grace_ms": 100}, **kw)
        wait_for(lambda: "ready" in msgs(t, run_of(t)), 60, "ready")
        b = base_of(t, run_of(t))
        if how == "patch":
            r = expect(S.req("PATCH", b, {"status": "completed", "output": {"api": 1}}), 200)
        else:
            r = expect(S.req("PATCH", b + "/set_output", {"output": {"api": 1}}), 200)
        assert r["status"] == "review_required", r
        # the code is stopped; its end (recorded once wall_ms is there) changes nothing
        run = wait_for(lambda: (lambda x: x if "wall_ms" in x else None)(
            expect(S.req("GET", b), 200)), 60, "the code's end")
        assert run["status"] == "review_required" and run["output"] == {"api": 1}, (how, run)
        assert "late" not in msgs(t, run), msgs(t, run)
        done = expect(S.req("POST", b + "/review", {"decision": "approve"}), 200)
        assert done["status"] == "completed" and done["output"] == {"api": 1}, done
        types = [e["type"] for e in events(t, done)]
        assert types.count("task_run.completed") == 1, types


def test_command_cancel_keeps_its_message():
    # the cancel command dropped params.message ("canceled by command"),
    # which POST .../cancel {message} keeps on the run
    t = create("echo ready; while :; do sleep 0.05; done")
    wait_for(lambda: "ready" in msgs(t, run_of(t)), 60, "ready")
    b = base_of(t, run_of(t))
    bad = S.req("POST", b + "/command", {"jsonrpc": "2.0", "method": "cancel",
                                        "params": {"message": 5}, "id": 1})
    assert bad.status == 400 and bad.json["error"]["param"] == "params.message", bad
    assert run_of(t)["status"] == "running"
    expect(S.req("POST", b + "/command", {"jsonrpc": "2.0", "method": "cancel",
                                         "params": {"message": "stop, please"}, "id": 2}), 200)
    run = finish(t, 30)
    assert run["status"] == "canceled" and run["cancel_message"] == "stop, please", run
    assert run["error"]["code"] == "canceled" and run["error"]["message"] == "stop, please", run
    # without one, as before
    t = create("echo ready; while :; do sleep 0.05; done")
    wait_for(lambda: "ready" in msgs(t, run_of(t)), 60, "ready")
    expect(S.req("POST", base_of(t, run_of(t)) + "/command",
                 {"jsonrpc": "2.0", "method": "cancel", "id": 3}), 200)
    run = finish(t, 30)
    assert run["cancel_message"] is None and run["error"]["message"] == "canceled by command", run


def test_cancel_of_code_ignoring_sigterm_kills_it():
    t = create("trap '' TERM; echo ready; while :; do sleep 0.05; done", settings={"kill_grace_ms": 300})
    wait_for(lambda: "ready" in msgs(t, run_of(t)), 60, "ready")
    r = expect(S.req("POST", base_of(t, run_of(t)) + "/cancel", {"message": "bye"}), 200)
    assert r["status"] in ("canceling", "canceled"), r
    run = finish(t, 30)
    assert run["status"] == "canceled" and run["cancel_message"] == "bye", run
    accounted(run)


def host_has(pattern):
    import subprocess
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.strip()


def test_cancel_while_waiting_on_input_kills_the_code():
    # a run waiting on its own input_request still has live code: cancel
    # (of the run, or of its task) must stop it, not leave it to its timeout
    for how in ("run", "task"):
        tag = "98%d.5" % (os.getpid() % 1000 + (how == "task"))
        code = py(CTL_PY + "import subprocess\np = subprocess.Popen(['sleep', '%s'])\n"
                           "ctl({'type': 'input_request', 'prompt': 'x'})\nsys.stdin.readline()\n" % tag)
        t = create(code, "python", settings={"timeout_ms": 600000})
        run = wait_status(t, ["interaction_required"] + list(TERMINAL))
        assert run["status"] == "interaction_required", logs(t, run)
        wait_for(lambda: host_has("sleep " + tag), 30, "the code's child")
        if how == "run":
            r = expect(S.req("POST", base_of(t, run) + "/cancel", {}), 200)
            assert r["status"] in ("canceling", "canceled"), r
        else:
            expect(S.req("POST", P + "/tasks/%s/cancel" % t["id"], {}), 200)
        assert finish(t)["status"] == "canceled"
        wait_for(lambda: not host_has("sleep " + tag), 30, "the code to be killed")
    healthy()


def test_ending_a_run_from_the_api_stops_its_code():
    # a PATCH {status} or a set_output that completes the run while its code
    # runs: the code must not outlive the run
    for how in ("patch", "set_output"):
        tag = "97%d.%d" % (os.getpid() % 1000, how == "patch")
        t = create("echo ready; sleep %s" % tag, output_schema={"type": "object"},
                   settings={"timeout_ms": 600000})
        wait_for(lambda: "ready" in msgs(t, run_of(t)), 60, "ready")
        wait_for(lambda: host_has("sleep " + tag), 30, "the code")
        b = base_of(t, run_of(t))
        if how == "patch":
            r = expect(S.req("PATCH", b, {"status": "failed", "error_message": "enough"}), 200)
        else:
            r = expect(S.req("PATCH", b + "/set_output", {"output": {"a": 1}}), 200)
        assert r["status"] in ("failed", "completed"), r
        wait_for(lambda: not host_has("sleep " + tag), 30, "the code to be stopped")
        assert run_of(t)["status"] == r["status"]
    healthy()


# ---- outcomes ----

def test_timeouts_and_inactivity():
    specs = [("trap '' TERM; while :; do sleep 0.05; done", "sh",
              {"settings": {"timeout_ms": 400, "kill_grace_ms": 200}}),
             ("echo start; sleep 100", "sh", {"settings": {"inactivity_timeout_ms": 500, "kill_grace_ms": 100}}),
             ("import time\nprint('x', flush=True)\ntime.sleep(100)\n", "python",
              {"settings": {"inactivity_timeout_ms": 500, "kill_grace_ms": 100}})]
    (t1, r1, _), (t2, r2, l2), (t3, r3, _) = many(specs)
    assert r1["status"] == "timed_out" and r1["error"]["code"] == "timeout", r1
    assert r2["status"] == "timed_out" and r2["error"]["code"] == "inactivity_timeout", r2
    assert "start" in [x["message"] for x in l2]
    assert r3["status"] == "timed_out" and r3["error"]["code"] == "inactivity_timeout", r3


def test_timeouts_send_sigterm_first():
    # API.md: timeouts and cancel send SIGTERM, then SIGKILL after kill_grace_ms
    code = "trap 'echo got-term; exit 0' TERM; echo start; while :; do sleep 0.05; done"
    specs = [(code, "sh", {"settings": {"timeout_ms": 500, "kill_grace_ms": 5000}}),
             (code, "sh", {"settings": {"inactivity_timeout_ms": 500, "kill_grace_ms": 5000}})]
    for (t, run, lg), code_ in zip(many(specs), ("timeout", "inactivity_timeout")):
        assert run["status"] == "timed_out" and run["error"]["code"] == code_, run
        assert "got-term" in [x["message"] for x in lg], lg


def test_kill_grace_zero_is_sigkill_at_once():
    # kill_grace_ms 0 is no grace: no SIGTERM for the code to catch (it was
    # read as "unset" and became 2 s, in which the trap ran)
    code = "trap 'echo got-term' TERM; echo start; while :; do sleep 0.05; done"
    t, run, lg = go(code, settings={"timeout_ms": 500, "kill_grace_ms": 0})
    assert run["status"] == "timed_out" and run["error"]["code"] == "timeout", run
    m = [x["message"] for x in lg]
    assert "start" in m and "got-term" not in m, m


def test_python_lines_are_logged_as_printed():
    # python writes to a pipe block-buffered unless told otherwise: what it
    # printed before a timeout was lost, and nothing showed while it ran
    code = "import sys, time\nprint('out-1')\nprint('err-1', file=sys.stderr)\nprint('out-2')\ntime.sleep(100)\n"
    t = create(code, "python", settings={"timeout_ms": 60000, "kill_grace_ms": 100})
    wait_for(lambda: len(msgs(t, run_of(t), "stdout")) == 2 or None, 30, "the lines while it runs")
    expect(S.req("POST", base_of(t, run_of(t)) + "/cancel", {}), 200)
    run = finish(t)
    assert run["status"] == "canceled", run
    assert msgs(t, run, "stdout") == ["out-1", "out-2"] and msgs(t, run, "stderr") == ["err-1"]


def test_heartbeats_keep_an_active_run_alive():
    # output on fd 3 and stdout both count as activity (upper bounds only:
    # each silence is 0.1 s against an inactivity limit of 1.5 s)
    code = py(CTL_PY + "import time\nfor i in range(30):\n    ctl({'type':'progress','progress':i/30})\n"
                       "    time.sleep(0.1)\n")
    t, run, _ = go(code, "python", settings={"inactivity_timeout_ms": 1500})
    assert run["status"] == "completed", run


def test_signal_names():
    specs = [("echo x; kill -KILL $$", "sh", {}),
             ("import signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "python", {}),
             ("process.kill(process.pid, 'SIGABRT');\nawait new Promise(r => setTimeout(r, 5000));\n", "node", {})]
    specs[1] = (py(specs[1][0]), "python", {})
    done = many(specs)
    for sig, (t, run, _) in zip(("SIGKILL", "SIGSEGV", "SIGABRT"), done):
        assert run["status"] == "failed" and run["error"]["code"] == "signal", run
        assert sig in run["error"]["message"], run


def test_retries_env_attempt_and_latest_checkpoint():
    code = r"""
echo "attempt=$QUERN_ATTEMPT ckpt=${QUERN_CHECKPOINT:+set}"
if [ -n "$QUERN_CHECKPOINT" ] && [ -f "$QUERN_CHECKPOINT" ]; then echo "from=$(tr -d '\n ' < "$QUERN_CHECKPOINT")"; fi
echo "{\"type\":\"checkpoint\",\"data\":{\"at\":$QUERN_ATTEMPT,\"first\":true}}" >&3
echo "{\"type\":\"checkpoint\",\"data\":{\"at\":$QUERN_ATTEMPT}}" >&3
[ "$QUERN_ATTEMPT" -ge 3 ] && exit 0
exit 1
"""
    t, run, lg = go(code, settings={"max_retries": 2, "retry_delay_ms": 0})
    assert run["status"] == "completed" and run["attempt"] == 3, (run, lg)
    m = [x["message"] for x in lg]
    assert "attempt=1 ckpt=" in m or run["attempt"] == 3, m
    assert "attempt=3 ckpt=set" in m and 'from={"at":2}' in m, m
    assert len([e for e in run["errors"] if e["code"] == "exit_code"]) == 2, run
    # what the run shows is its last attempt's: the earlier errors are history
    assert run["error"] is None and run["exit_code"] == 0, run
    ck = expect(S.req("GET", base_of(t, run) + "/checkpoints"), 200)
    ck = ck["data"] if isinstance(ck, dict) else ck
    assert len(ck) >= 2


def test_task_retry_resumes_from_the_last_runs_checkpoint():
    code = ('echo "attempt=$QUERN_ATTEMPT ck=$(cat "${QUERN_CHECKPOINT:-/nonexistent}" 2>/dev/null)"\n'
            'echo "{\\"type\\":\\"checkpoint\\",\\"data\\":{\\"a\\":$QUERN_ATTEMPT}}" >&3; exit 1')
    t, run, lg = go(code)
    assert run["status"] == "failed" and [x["message"] for x in lg] == ["attempt=1 ck="], lg
    expect(S.req("POST", P + "/tasks/%s/retry" % t["id"], {}), 201)
    run2 = wait_for(lambda: (lambda r: r if r["id"] != run["id"] and r["status"] in TERMINAL else None)(run_of(t)),
                    60, "the retry")
    assert run2["attempt"] == 2 and msgs(t, run2) == ['attempt=2 ck={"a":1}'], (run2, msgs(t, run2))


def test_first_attempt_has_no_checkpoint():
    t, run, lg = go('echo "ckpt=[${QUERN_CHECKPOINT:-}]"; [ -n "${QUERN_CHECKPOINT:-}" ] && [ -e "$QUERN_CHECKPOINT" ] && echo exists; true')
    assert "exists" not in [x["message"] for x in lg], lg


def test_usage_is_accounted():
    code = py(CTL_PY + "ctl({'type':'usage','tokens_used':12,'cost':0.01})\n"
                       "ctl({'type':'usage','tokens_used':30,'cost':0.02})\n")
    t, run, _ = go(code, "python")
    assert run["status"] == "completed"
    # usage messages accumulate (documented in docs/RUNTIME.md)
    assert run["tokens_used"] == 42 and abs(run["cost"] - 0.03) < 1e-9, run
    # the sums stop at the largest value they hold; they never wrap negative
    code = py(CTL_PY + "ctl({'type':'usage','tokens_used':2**63-1,'cost':1e308})\n"
                       "ctl({'type':'usage','tokens_used':1,'cost':1e308})\n")
    t, run, _ = go(code, "python")
    assert run["status"] == "completed", run
    assert run["tokens_used"] == 2**63 - 1 and run["cost"] >= 1e308, run


def test_require_review_and_reject():
    t = create("echo ok", settings={"require_review": True})
    run = wait_status(t, ["review_required"] + list(TERMINAL))
    assert run["status"] == "review_required", run
    accounted(run)
    r = expect(S.req("POST", base_of(t, run) + "/review", {"decision": "reject", "comment": "no"}), 200)
    assert r["status"] == "failed" and r["error"]["code"] == "review_rejected", r
    t, run, _ = go("exit 3", settings={"require_review": True})
    assert run["status"] == "failed", run           # only an exit 0 goes to review


def policy_now():
    """The project's policy as a PUT body (to put back after a test)."""
    pol = expect(S.req("GET", P + "/policy"), 200)
    return {k: v for k, v in pol.items() if k in ("allowed_runtimes", "max_timeout_ms", "max_memory_mb",
            "max_code_bytes", "network_allowed", "require_approval", "relay_webhook_url",
            "outbound_allow_private")}


def test_policy_limits_deny():
    keep = policy_now()
    try:
        expect(S.req("PUT", P + "/policy", dict(keep, max_timeout_ms=1000, max_memory_mb=64,
                                                max_code_bytes=100)), 200)
        specs = [("echo a > \"$QUERN_STORAGE_PROJECT/denied-1\"", "sh", {"settings": {"timeout_ms": 5000}}),
                 ("echo a > \"$QUERN_STORAGE_PROJECT/denied-2\"", "sh", {"settings": {"timeout_ms": 900, "memory_limit_mb": 128}}),
                 ("echo a > \"$QUERN_STORAGE_PROJECT/denied-3\" #" + "x" * 200, "sh", {"settings": {"timeout_ms": 900}})]
        ts = [create(c, rt, **kw) for c, rt, kw in specs]
        for t in ts:
            run = finish(t)
            assert run["status"] == "denied" and run["error"]["code"] == "policy_denied", run
            assert run["started_at"] is None and logs(t, run) == [], run
    finally:
        S.req("PUT", P + "/policy", keep)
    t, run, lg = go('ls "$QUERN_STORAGE_PROJECT"')
    assert not any(x["message"].startswith("denied-") for x in lg), lg   # nothing executed


def test_a_code_run_is_never_patched_to_running():
    """A PATCH {status: running} of a code run quernd had not started yet
    (held for approval, paused, queued) made the caller its worker: quernd
    never ran the code, and the run failed lease_expired once the lease ran
    out.  It is 409 code_started_by_quernd, the run left as it was; released
    (approved, resumed) it runs its code."""
    held = create("echo held-ran", "sh", settings={"require_approval": True})
    run = wait_status(held, ("interaction_required",))
    r = S.req("PATCH", base_of(held, run), {"status": "running"})
    assert r.status == 409 and r.json["error"]["code"] == "code_started_by_quernd", r
    assert "POST .../interaction" in r.json["error"]["message"], r
    assert expect(S.req("GET", base_of(held, run)), 200)["status"] == "interaction_required"
    expect(S.req("PATCH", base_of(held, run), {"status": "queued"}), 200)
    run = finish(held)
    assert run["status"] == "completed" and msgs(held, run, "stdout") == ["held-ran"], run
    assert run["worker_id"] is None, run
    paused = create("echo paused-ran", "sh", run=False)
    expect(S.req("POST", P + "/tasks/%s/pause" % paused["id"]), 200)
    run = expect(S.req("POST", P + "/tasks/%s/run" % paused["id"], {}), 201)
    assert run["status"] == "paused", run
    r = S.req("PATCH", base_of(paused, run), {"status": "running"})
    assert r.status == 409 and r.json["error"]["code"] == "code_started_by_quernd", r
    assert expect(S.req("GET", base_of(paused, run)), 200)["status"] == "paused"
    expect(S.req("POST", P + "/tasks/%s/resume" % paused["id"]), 200)
    run = finish(paused)
    assert run["status"] == "completed" and msgs(paused, run, "stdout") == ["paused-ran"], run
    # code that waits for the answer to its own question lives: running made
    # the caller its worker, the lease ran out under the live code and the
    # next attempt failed sandbox_error beside it
    asks = create('echo \'{"type":"input_request","prompt":"name?"}\' >&3; read l; echo "got $l"',
                  "sh", settings={"max_retries": 1, "retry_delay_ms": 0})
    run = wait_status(asks, ("interaction_required",))
    r = S.req("PATCH", base_of(asks, run), {"status": "running"})
    assert r.status == 409 and r.json["error"]["code"] == "code_running", r
    expect(S.req("POST", base_of(asks, run) + "/interaction", {"response": "bob"}), 200)
    run = finish(asks)
    assert run["status"] == "completed" and run["attempt"] == 1 and run["worker_id"] is None, run
    assert any("bob" in m for m in msgs(asks, run, "stdout")), msgs(asks, run)


def test_an_approval_is_checked_against_the_policy_of_then():
    """A run held for approval has run nothing: approved (by the interaction
    or a PATCH out of the hold), it is checked against the project's policy
    as it is then.  Tightened meanwhile, the run ends denied, policy_denied,
    nothing executed (it used to run under the policy of its creation)."""
    keep = policy_now()
    try:
        ts = [create('echo a > "$QUERN_STORAGE_PROJECT/held-%d"' % i, "sh",
                     settings={"require_approval": True, "timeout_ms": 5000}) for i in range(3)]
        runs = [wait_status(t, ("interaction_required",)) for t in ts]
        expect(S.req("PUT", P + "/policy", dict(keep, max_timeout_ms=1000)), 200)
        expect(S.req("POST", base_of(ts[0], runs[0]) + "/interaction", {"response": {"approved": True}}), 200)
        expect(S.req("PATCH", base_of(ts[1], runs[1]), {"status": "queued"}), 200)
        # a code run is started by quernd, never PATCHed to running (it made
        # the caller its worker: the code never ran, the lease ran out)
        r = S.req("PATCH", base_of(ts[2], runs[2]), {"status": "running"})
        assert r.status == 409 and r.json["error"]["code"] == "code_started_by_quernd", r
        expect(S.req("PATCH", base_of(ts[2], runs[2]), {"status": "queued"}), 200)
        for t in ts:
            run = finish(t)
            assert run["status"] == "denied" and run["error"]["code"] == "policy_denied", run
            assert run["error"]["message"].startswith("max_timeout_ms:"), run
            assert run["started_at"] is None and run["interaction"] is None and logs(t, run) == [], run
        # within the policy, the approval queues it as before
        expect(S.req("PUT", P + "/policy", dict(keep, max_timeout_ms=10000)), 200)
        t = create("echo ok", "sh", settings={"require_approval": True, "timeout_ms": 5000})
        run = wait_status(t, ("interaction_required",))
        expect(S.req("POST", base_of(t, run) + "/interaction", {"response": {"approved": True}}), 200)
        run = finish(t)
        assert run["status"] == "completed" and msgs(t, run, "stdout") == ["ok"], run
    finally:
        S.req("PUT", P + "/policy", keep)
    t, run, lg = go('ls "$QUERN_STORAGE_PROJECT"')
    assert not any(x["message"].startswith("held-") for x in lg), lg   # nothing executed


def test_policy_caps_the_default_limits():
    # RUNTIME.md: default limits are "capped by the project policy": a task
    # that sets no timeout runs under the project's maximum (it was denied,
    # its 30 s default being over it); one that sets more is still denied
    keep = policy_now()
    try:
        expect(S.req("PUT", P + "/policy", dict(keep, max_timeout_ms=1500, max_memory_mb=64)), 200)
        t1 = create("echo start; sleep 100", settings={"kill_grace_ms": 0})
        t2 = create(py("b = bytearray(100 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"),
                    "python", settings={"timeout_ms": 1000})
        t3 = create("echo no", settings={"timeout_ms": 2000})
        r1, r2, r3 = finish(t1), finish(t2), finish(t3)
    finally:
        S.req("PUT", P + "/policy", keep)
    assert r1["status"] == "timed_out" and r1["error"]["code"] == "timeout", r1
    assert r1["limits"] == {"timeout_ms": 1500, "memory_limit_mb": 64}, r1
    assert "start" in msgs(t1, r1)
    assert r2["status"] == "failed" and r2["error"]["code"] == "memory_limit_exceeded", r2
    assert r3["status"] == "denied" and r3["error"]["code"] == "policy_denied", r3
    assert "max_timeout_ms" in r3["error"]["message"], r3


def test_accounting_figures():
    code = py("import time\nb = bytearray(96 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"
              "t = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\ntime.sleep(0.2)\n")
    t, run, _ = go(code, "python")
    assert run["status"] == "completed" and run["exit_code"] == 0, run
    assert run["cpu_ms"] >= 250, run
    assert run["peak_memory_kb"] >= 90 * 1024, run
    assert run["wall_ms"] >= 450 and run["duration_ms"] >= run["wall_ms"] - 50, run


def test_peak_memory_is_the_runs_own():
    """peak_memory_kb counts what the run's box took, not page cache that
    earlier runs left charged to the same slot's cgroup: a `exit 0` in sh
    after a run that wrote 48 MiB into storage reported about 48 MiB.  A run
    that meets its memory limit reports the slot's whole peak (the kernel
    reclaimed that cache to make room)."""
    s = Server(extra_args=["--slots", "1"], env={"QUERN_WARM": "python=0,node=0,ts=0"})
    c = CodeTasks(s)

    def run(code, rt="sh", **kw):
        r = c.wait_status(c.create(code, rt, **kw), TERMINAL, 120)
        accounted(r)
        return r

    try:
        big = run("head -c 50331648 /dev/zero > /storage/project/big")
        assert big["status"] == "completed" and big["peak_memory_kb"] >= 40 * 1024, big
        small = run("exit 0")
        assert small["status"] == "completed", small
        assert small["peak_memory_kb"] < 16 * 1024, (small, big)
        p = run(py("b = bytearray(24 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"), "python")
        assert p["status"] == "completed" and 24 * 1024 <= p["peak_memory_kb"] < 40 * 1024, p
        oom = run(py("b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"),
                  "python", settings={"memory_limit_mb": 64})
        assert oom["error"]["code"] == "memory_limit_exceeded", oom
        assert oom["peak_memory_kb"] >= 56 * 1024, oom
        assert run("rm /storage/project/big")["status"] == "completed"
    finally:
        s.stop()


def test_peak_memory_without_a_memory_cgroup_is_the_largest_process():
    """Without a memory cgroup (or on cgroup v2 before Linux 6.12) the peak
    is the largest resident set among the box's processes, as quern-init
    reaped them: rusage of init itself also counts quernd's resident
    memory (the box shares it until init is executed), so `exit 0` in sh
    reported about 20 MiB."""
    s = Server(extra_args=["--slots", "1"], env={"QUERN_TEST_NO_MEMORY_CGROUP": "1"})
    c = CodeTasks(s)

    def run(code, rt="sh"):
        r = c.wait_status(c.create(code, rt), TERMINAL, 120)
        accounted(r)
        assert r["status"] == "completed", r
        return r

    try:
        with open(os.path.join(s.data, "stderr.log")) as f:
            assert "memory via unavailable" in f.read()
        small = run("exit 0")
        assert 0 < small["peak_memory_kb"] < 4 * 1024, small
        p = run(py("b = bytearray(48 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"), "python")
        assert p["peak_memory_kb"] >= 48 * 1024, p
        child = run("python3 -c 'b = bytearray(48 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1'")
        assert child["peak_memory_kb"] >= 48 * 1024, child
    finally:
        s.stop()


def test_default_memory_limit_is_256_mib():
    code = py("bs = []\nfor i in range(40):\n    b = bytearray(16 << 20)\n"
              "    for j in range(0, len(b), 4096): b[j] = 1\n    bs.append(b)\nprint('survived', flush=True)\n")
    node = ("const bufs = [];\nfor (let i = 0; i < 40; i++) bufs.push(Buffer.alloc(16 << 20, 1));\n"
            "console.log('survived');\n")
    for t, run, lg in many([(code, "python", {}), (node, "node", {})]):
        assert run["status"] == "failed" and run["error"]["code"] == "memory_limit_exceeded", (run, lg)
        assert "survived" not in [x["message"] for x in lg]


def test_a_child_killed_for_memory_keeps_the_codes_exit_status():
    # the kernel killed a child of the code, the code went on and exited by
    # itself: the run fails memory_limit_exceeded (memory went over) with the
    # code's own exit status, which was null as if the code had been killed
    hog = "python3 -c 'b = bytearray(300 << 20)'; echo rc=$?; exit %d"
    specs = [(hog % 0, "sh", {"settings": {"memory_limit_mb": 64}}),
             (hog % 3, "sh", {"settings": {"memory_limit_mb": 64}})]
    for (t, run, lg), want in zip(many(specs), (0, 3)):
        assert run["status"] == "failed" and run["error"]["code"] == "memory_limit_exceeded", (run, lg)
        assert "rc=137" in [x["message"] for x in lg], lg
        assert run["exit_code"] == want, run
    # the code itself killed: still null
    t, run, lg = go(py("b = bytearray(300 << 20)\nprint('survived')\n"), "python",
                    settings={"memory_limit_mb": 64})
    assert run["error"]["code"] == "memory_limit_exceeded" and run["exit_code"] is None, run


def test_output_limit_counts_fd3_logs_and_long_lines():
    specs = [(py(CTL_PY + "while True:\n    ctl({'type':'log','level':'info','message':'y'*500})\n"), "python",
              {"settings": {"max_output_bytes": 50000, "timeout_ms": 30000}}),
             ("head -c 300000 /dev/zero | tr '\\0' 'a'; sleep 1; echo tail", "sh",
              {"settings": {"max_output_bytes": 50000}})]
    for t, run, lg in many(specs):
        assert run["status"] == "failed" and run["error"]["code"] == "output_limit_exceeded", run
        kept = sum(len((x["message"] or "").encode()) for x in lg)
        assert 0 < kept <= 50000, kept


def test_control_floods_are_bounded_by_max_output_bytes():
    # checkpoints, progress, junk lines and log data are stored like log
    # lines: a flood of any of them ends output_limit_exceeded, it never
    # fills the store (docs/RUNTIME.md)
    floods = {
        "checkpoint": "json.dumps({'type': 'checkpoint', 'data': {'x': 'a' * 200000}})",
        "progress": "json.dumps({'type': 'progress', 'progress': 0.5})",
        "junk": "'not json at all'",
        "logdata": "json.dumps({'type': 'log', 'message': '', 'data': {'x': 'b' * 100000}})",
    }
    specs = [(py("line = (%s + '\\n').encode()\nfor i in range(2000000):\n    os.write(3, line)\n" % f),
              "python", {"settings": {"max_output_bytes": 300000, "timeout_ms": 60000}})
             for f in floods.values()]
    for kind, (t, run, lg) in zip(floods, many(specs)):
        assert run["status"] == "failed" and run["error"]["code"] == "output_limit_exceeded", (kind, run)
        assert run["checkpoints_count"] <= 2, (kind, run)
        ev = S.req("GET", base_of(t, run) + "/session_logs?limit=1")
        assert int(ev.header("X-Total-Count")) < 20000, (kind, ev.header("X-Total-Count"))


def test_limits_open_files_processes_file_size():
    code = py(r"""
import resource, errno, signal, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
print("nofile", soft, hard, flush=True)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except Exception as e:
    print("raise-nofile-refused", flush=True)
fs = []
try:
    for i in range(5000):
        fs.append(open("/dev/null"))
except OSError as e:
    print("open-stopped", e.errno == errno.EMFILE, flush=True)
print("opened", len(fs), flush=True)
for f in fs: f.close()
try:
    s, h = resource.getrlimit(resource.RLIMIT_NPROC)
    resource.setrlimit(resource.RLIMIT_NPROC, (h, h))
except Exception:
    pass
kids = []
for i in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print("forked", len(kids), flush=True)
for k in kids:
    os.kill(k, signal.SIGKILL)
    os.waitpid(k, 0)
f = open("big", "wb")
f.seek(64 << 20)
try:
    f.write(b"x"); f.flush()
    print("big-written", flush=True)
except OSError as e:
    print("big-refused", e.errno == errno.EFBIG, flush=True)
""")
    t, run, lg = go(code, "python")
    m = [x["message"] for x in lg if x["type"] == "stdout"]
    assert run["status"] == "completed", (run, lg)
    opened = int([x for x in m if x.startswith("opened ")][0].split()[1])
    forked = int([x for x in m if x.startswith("forked ")][0].split()[1])
    assert opened <= 256, m
    assert forked < 64, m
    assert "big-refused True" in m, m


def test_scratch_is_bounded_to_1_gib():
    # fallocate: blocks without writing data (fast); the run is stopped
    # once scratch and artifacts hold more than 1 GiB (docs/RUNTIME.md)
    code = ('i=0; while [ $i -lt 18 ]; do fallocate -l 60M "f$i" || break; i=$((i+1)); done; '
            'echo "made $i"; sleep 20; echo survived')
    t, run, lg = go(code, settings={"timeout_ms": 60000})
    assert run["status"] == "failed" and run["error"]["code"] == "disk_limit_exceeded", (run, lg)
    assert "survived" not in [x["message"] for x in lg]
    code = ('cd "$QUERN_ARTIFACTS"; i=0; while [ $i -lt 18 ]; do fallocate -l 60M "f$i" || break; '
            'i=$((i+1)); done; sleep 20; echo survived')
    t, run, lg = go(code, settings={"timeout_ms": 60000})
    assert run["status"] == "failed" and run["error"]["code"] == "disk_limit_exceeded", (run, lg)
    t, run, lg = go("fallocate -l 60M a && fallocate -l 60M b && sleep 1 && echo fine")
    assert run["status"] == "completed", (run, lg)


# ---- isolation ----

def host_ipv4():
    """The host's address on its default route, or None (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.connect(("10.255.255.255", 1))
            ip = u.getsockname()[0]
            return None if ip.startswith("127.") else ip
    except OSError:
        return None


def test_network_only_when_the_task_and_the_policy_allow_it():
    # a listener on every host address; the code tries the host's loopback
    # and its other address
    ls = socket.socket()
    ls.bind(("0.0.0.0", 0))
    ls.listen(8)
    ip = host_ipv4()
    hosts = ["127.0.0.1"] + ([ip] if ip else [])
    code = ("import socket\nfor h in %r:\n    try:\n"
            "        socket.create_connection((h, %d), timeout=5)\n        print(h, 'CONNECTED')\n"
            "    except OSError as e:\n        print(h, 'refused')\n" % (hosts, ls.getsockname()[1]))
    # with network, through slirp4netns (make deps installs it): the host's
    # other address, not its loopback (127.0.0.1 there is the box's own);
    # without it, the host's namespace, loopback and all
    slirp = os.access("/usr/bin/slirp4netns", os.X_OK) and os.path.exists("/dev/net/tun")
    want_on = ["127.0.0.1 " + ("refused" if slirp else "CONNECTED")] + (
        [ip + " CONNECTED"] if ip else [])
    keep = policy_now()
    try:
        (t1, r1, l1), (t2, r2, l2) = many([(code, "python", {"settings": {"network": True}}),
                                           (code, "python", {})])
        assert [x["message"] for x in l1] == want_on, (l1, slirp)
        assert [x["message"] for x in l2] == [h + " refused" for h in hosts], l2
        expect(S.req("PUT", P + "/policy", dict(keep, network_allowed=False)), 200)
        t, run, lg = go(code, "python", settings={"network": True})
        assert run["status"] == "denied" and run["error"]["code"] == "policy_denied", run
        assert lg == [], lg
    finally:
        S.req("PUT", P + "/policy", keep)
        ls.close()


def test_a_run_with_network_leaves_the_hosts_named_namespaces_alone():
    """slirp4netns (a run with network) pivots and detaches the old root in
    a mount namespace private only at its top: the detach reached the host's
    shared mounts, and every network namespace named by `ip netns` (bind
    mounts under /run/netns) was unmounted on the host."""
    import shutil
    import subprocess
    if not (shutil.which("ip") and os.access("/usr/bin/slirp4netns", os.X_OK)
            and os.path.exists("/dev/net/tun")):
        print("  (skipped: needs ip, slirp4netns and /dev/net/tun)")
        return
    ns = "qrt-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    s = None
    try:
        s = Server()   # a fresh quernd: its first run with network starts slirp4netns
        t = expect(s.req("POST", P + "/tasks", {"code": "echo with-net", "runtime_id": "sh",
                                                "settings": {"network": True},
                                                "wait_for_result": True}), 201)
        assert t["run"]["status"] == "completed", t["run"]
        p = subprocess.run(["ip", "-n", ns, "link", "show", "lo"], capture_output=True, text=True)
        assert p.returncode == 0 and "lo:" in p.stdout, (p.stdout, p.stderr)
    finally:
        if s:
            s.stop()
        subprocess.run(["ip", "netns", "del", ns])


def test_namespaces_pid1_and_hostname():
    host = {ns: os.readlink("/proc/self/ns/" + ns) for ns in ("user", "pid", "mnt", "net", "ipc", "uts")}
    code = ("for n in user pid mnt net ipc uts; do echo \"ns $n $(readlink /proc/self/ns/$n)\"; done\n"
            "echo \"pid=$$\"; echo \"host=$(hostname)\"; echo \"ifs=$(ls /sys/class/net 2>/dev/null | tr '\\n' ' ')\"\n"
            "echo \"procs=$(ls /proc | grep -c '^[0-9]')\"; echo \"init=$(tr '\\0' ' ' < /proc/1/cmdline)\"\n"
            "echo \"uidmap=$(tr -s ' ' < /proc/self/uid_map)\"")
    t, run, lg = go(code)
    m = [x["message"] for x in lg]
    for ns, link in host.items():
        inside = [x.split(" ", 2)[2] for x in m if x.startswith("ns %s " % ns)]
        assert inside and inside[0] != link, (ns, link, inside)
    assert "pid=1" not in m, m
    assert "init=" in "".join(m) and not any(x.startswith("init=/bin/sh") for x in m), m
    assert "host=%s" % socket.gethostname() not in m, m
    procs = int([x for x in m if x.startswith("procs=")][0][6:])
    assert procs < 10, m


def test_filesystem_view():
    marker = tempfile.NamedTemporaryFile(prefix="rtaudit-host-", dir="/tmp", delete=False)
    marker.write(b"host")
    marker.close()
    try:
        code = r"""
echo "tmp=[$(ls -A /tmp | tr '\n' ' ')]"
[ -e %s ] && echo SEE-HOST-TMP
[ -e %s ] && echo SEE-DATA
for p in /usr/x /bin/x /lib/x /etc/x /var/x /opt/x /root/x /home/x /x /sys/x /dev/x /run/x /boot/x /srv/x; do
  (echo hi > $p) 2>/dev/null && echo "WROTE $p"
done
for p in ./here /tmp/here "$QUERN_STORAGE_PROJECT/here" "$QUERN_STORAGE_ORG/here"; do
  (echo hi > "$p") 2>/dev/null && echo "ok $p"
done
[ -d /var/tmp ] && (echo hi > /var/tmp/x) 2>/dev/null && echo "WROTE /var/tmp"
echo shm > /dev/shm/rtaudit-shm 2>/dev/null; [ -e /tmp/rtaudit-shm ] && echo "shm-is-tmp"
echo done
""" % (marker.name, S.data)
        t, run, lg = go(code)
        m = [x["message"] for x in lg]
        assert run["status"] == "completed", lg
        assert "tmp=[]" in m, m
        assert "SEE-HOST-TMP" not in m and "SEE-DATA" not in m, m
        assert not [x for x in m if x.startswith("WROTE")], m
        assert len([x for x in m if x.startswith("ok ")]) == 4, m
        assert "shm-is-tmp" in m, m     # /dev/shm is the run's private /tmp (docs/RUNTIME.md)
    finally:
        os.unlink(marker.name)


TMP_LIST = {
    "sh": "ls -A /tmp | tr '\\n' ' '; echo '|'", "bash": "ls -A /tmp | tr '\\n' ' '; echo '|'",
    "python": "import os\nprint(' '.join(os.listdir('/tmp')) + '|')\n",
    "node": "import fs from 'fs';\nconsole.log(fs.readdirSync('/tmp').join(' ') + '|');\n",
    "ts": "import fs from 'fs';\nconst l: string[] = fs.readdirSync('/tmp');\nconsole.log(l.join(' ') + '|');\n",
}


def test_tmp_starts_empty_every_runtime():
    done = many([(TMP_LIST[rt], rt, {}) for rt in RUNTIMES])
    for rt, (t, run, lg) in zip(RUNTIMES, done):
        assert run["status"] == "completed" and [x["message"] for x in lg] == ["|"], (rt, lg)


def test_ts_errors_point_at_the_script_line():
    t, run, lg = go("const a: number = 1;\n\ninterface X { y: string }\nthrow new Error('line four ' + a);\n", "ts")
    err = "\n".join(x["message"] for x in lg if x["type"] == "stderr")
    assert run["status"] == "failed" and "line four 1" in err and ":4:" in err, err


def test_ts_with_a_hashbang_runs_as_node_runs_it():
    """node allows a hashbang line at the start of a module; ts put its
    self-removing import before it, a SyntaxError.  Line numbers stay the
    script's."""
    t, run, lg = go("#!/usr/bin/env node\nconst a: number = 1;\nconsole.log('hb', a);\n"
                    "throw new Error('line four');\n", "ts")
    err = "\n".join(x["message"] for x in lg if x["type"] == "stderr")
    assert run["status"] == "failed" and run["exit_code"] == 1, (run, lg)
    assert "hb 1" in [x["message"] for x in lg if x["type"] == "stdout"], lg
    assert "line four" in err and ":4:" in err and "SyntaxError" not in err, err


def test_ts_that_does_not_parse_says_where():
    """Code sucrase cannot parse fails as node fails a module that does not
    parse: path and line, the line, a caret, SyntaxError (it printed
    sucrase's stack trace, ten frames in /opt/quern/node_modules)."""
    t, run, lg = go("let a = 1;\n  let b: number = ;\nconsole.log(a);\n", "ts")
    err = [x["message"] for x in lg if x["type"] == "stderr"]
    assert run["status"] == "failed" and run["exit_code"] == 1, (run, err)
    assert err == ["/quern/script.ts:2", "  let b: number = ;", " " * 18 + "^", "",
                   "SyntaxError: Unexpected token (2:19)"], err


def test_ts_namespace_with_values_is_refused_not_dropped():
    """sucrase drops every namespace as if it held types only: the code then
    found its name undefined.  One holding values fails the run as a parse
    error does; one holding only types runs."""
    t, run, lg = go("const a: number = 1;\nnamespace Foo {\n  export const x = 1;\n}\nconsole.log(Foo.x);\n", "ts")
    err = [x["message"] for x in lg if x["type"] == "stderr"]
    assert run["status"] == "failed" and run["exit_code"] == 1, (run, err)
    assert err[:3] == ["/quern/script.ts:2", "namespace Foo {", "^"], err
    assert err[-1].startswith("SyntaxError: a TypeScript namespace that holds values"), err
    t, run, lg = go("namespace T { export interface P { a: number } }\nconst p: T.P = {a: 1};\n"
                    "console.log('typed', p.a);\n", "ts")
    assert run["status"] == "completed", (run, lg)
    assert [x["message"] for x in lg if x["type"] == "stdout"] == ["typed 1"], lg


def test_ts_namespace_check_ignores_comments_strings_and_templates():
    """The check read the raw text: a namespace with values inside a template
    literal or a block comment, or a "{" in a string (or "const" in a
    comment) inside a types-only namespace, failed these valid scripts."""
    scripts = [
        "const s = `\nnamespace Foo {\n  const x = 1;\n}\n`;\nconsole.log('ok', s.length);\n",
        "/*\nnamespace Foo {\n  const x = 1;\n}\n*/\nconsole.log('ok', 1);\n",
        "namespace T { export type A = \"{\"; }\nconst x: T.A = \"{\";\nconsole.log('ok', x);\n",
        "namespace T {\n  // a const, a class\n  export type A = number;\n}\n"
        "const y: T.A = 2;\nconsole.log('ok', y);\n",
        "const t = `a${ {k: '}'}.k }b`;\nnamespace U { export type B = string }\n"
        "const z: U.B = t;\nconsole.log('ok', z);\n",
    ]
    for t, run, lg in many([(s, "ts", {}) for s in scripts]):
        assert run["status"] == "completed", (run, lg)
        assert [x["message"].split()[0] for x in lg if x["type"] == "stdout"] == ["ok"], lg
    # one with values after such text is still refused, at its own line
    t, run, lg = go("const s = `namespace A { const q = 1 }`; // namespace B {\n"
                    "/* } */\nnamespace Foo {\n  export const x = 1;\n}\nconsole.log(Foo.x, s);\n", "ts")
    err = [x["message"] for x in lg if x["type"] == "stderr"]
    assert run["status"] == "failed" and err[:2] == ["/quern/script.ts:3", "namespace Foo {"], (run, err)
    assert err[-1].startswith("SyntaxError: a TypeScript namespace that holds values"), err


def test_sysv_ipc_is_private_per_run():
    made = "ipcmk -M 4096 >/dev/null && ipcmk -Q >/dev/null && ipcmk -S 1 >/dev/null && echo made; ipcs | grep -c '^0x'"
    t, r1, l1 = go(made)
    assert [x["message"] for x in l1] == ["made", "3"], l1
    # every later run (in any slot) starts with none of them
    for t, run, lg in many([("ipcs | grep -c '^0x'; true", "sh", {}) for _ in range(4)]):
        assert [x["message"] for x in lg] == ["0"], lg


def test_tmp_is_private_per_run():
    # each run's /tmp is its own: one run's file never shows in the next
    t, r1, _ = go("echo a > /tmp/rtaudit-private")
    t, r2, lg = go("cat /tmp/rtaudit-private 2>/dev/null && echo LEAKED; true")
    assert "LEAKED" not in [x["message"] for x in lg]


def test_seccomp_and_namespace_syscalls_refused():
    code = py(r"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    r = libc.syscall(nr, *args)
    e = ctypes.get_errno()
    print("%s %s" % (name, "ALLOWED" if r >= 0 else "refused"), flush=True)
call("mount", 165, b"none", b"/tmp", b"tmpfs", 0, None)
call("umount2", 166, b"/proc", 2)
call("ptrace", 101, 0, 0, 0, 0)
call("keyctl", 250, 0, 0, 0, 0, 0)
call("add_key", 248, b"user", b"k", b"v", 1, -2)
call("bpf", 321, 0, None, 0)
call("init_module", 175, None, 0, b"")
call("finit_module", 313, 0, b"", 0)
call("unshare_user", 272, 0x10000000)
call("unshare_mnt", 272, 0x00020000)
call("unshare_net", 272, 0x40000000)
fd = os.open("/proc/1/ns/mnt", os.O_RDONLY) if os.path.exists("/proc/1/ns/mnt") else -1
call("setns", 308, fd, 0)
call("chroot", 161, b"/tmp")
call("pivot_root", 155, b"/tmp", b"/tmp")
call("reboot", 169, 0xfee1dead, 672274793, 0x4321fedc, None)
call("perf_event_open", 298, None, 0, -1, -1, 0)
call("userfaultfd", 323, 0)
call("io_uring_setup", 425, 1, None)
call("open_by_handle_at", 304, 0, None, 0)
call("kexec_load", 246, 0, 0, None, 0)
call("fanotify_init", 300, 0, 0)
call("process_vm_readv", 310, 1, None, 0, None, 0, 0)
call("kcmp", 312, 1, 1, 0, 0, 0)
call("fsopen", 430, b"tmpfs", 0)
call("open_tree", 428, -100, b"/", 1)
call("syslog", 103, 3, None, 0)
call("setuid0", 105, 0)
""")
    t, run, lg = go(code, "python")
    m = [x["message"] for x in lg if x["type"] == "stdout"]
    assert run["status"] == "completed", lg
    assert len(m) == 27, m
    allowed = [x for x in m if x.endswith("ALLOWED")]
    assert allowed in ([], ["setuid0 ALLOWED"]), allowed


def test_unshare_tool_and_raised_rlimits():
    code = r"""
unshare -r true 2>/dev/null && echo UNSHARE-OK
unshare -m true 2>/dev/null && echo UNSHARE-M-OK
nsenter -t 1 -m true 2>/dev/null && echo NSENTER-OK
ulimit -n 100000 2>/dev/null && echo "RAISED-NOFILE $(ulimit -n)"
ulimit -u 100000 2>/dev/null && echo "RAISED-NPROC $(ulimit -u)"
ulimit -f unlimited 2>/dev/null && echo RAISED-FSIZE
echo done
"""
    t, run, lg = go(code, "bash")
    m = [x["message"] for x in lg]
    assert run["status"] == "completed" and "done" in m, lg
    bad = [x for x in m if x in ("UNSHARE-OK", "UNSHARE-M-OK", "NSENTER-OK", "RAISED-FSIZE")
           or x.startswith("RAISED-")]
    assert not bad, m


def test_proc_and_sys_writes_refused():
    code = r"""
for p in /proc/sys/kernel/hostname /proc/sys/vm/drop_caches /proc/sysrq-trigger /proc/self/oom_score_adj \
         /proc/self/setgroups /proc/self/uid_map /proc/sys/kernel/core_pattern /sys/kernel/mm/transparent_hugepage/enabled \
         /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max /proc/1/oom_score_adj; do
  if [ "$p" = /proc/self/oom_score_adj ] || [ "$p" = /proc/1/oom_score_adj ]; then v=-1000; else v=1; fi
  (echo $v > $p) 2>/dev/null && echo "WROTE $p"
done
echo done
"""
    t, run, lg = go(code)
    m = [x["message"] for x in lg]
    assert run["status"] == "completed" and "done" in m, lg
    assert not [x for x in m if x.startswith("WROTE")], m


def test_quernd_environment_not_readable():
    code = r"""
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do tr '\0' '\n' < $f 2>/dev/null; done
ls -la /proc/1/root/ /proc/1/cwd/ 2>/dev/null | head -5
for f in /proc/1/fd/*; do readlink $f 2>/dev/null; done
cat /proc/1/environ 2>/dev/null | tr '\0' '\n'
env
"""
    t, run, lg = go(code)
    text = "\n".join(x["message"] for x in lg)
    assert LEAK not in text and "QUERN_BOOTSTRAP_KEY" not in text and "qk_root" not in text, text[:2000]
    assert S.data not in text, text[:2000]


def test_two_runs_cannot_see_each_other():
    hold = ("echo \"where=$(pwd)|$QUERN_STORAGE_ACCOUNT\"; echo secret-a > ./mine-rtaudit; "
            "echo secret-a > \"$QUERN_STORAGE_ACCOUNT/mine-rtaudit\"; ipcmk -M 4096 > /dev/null; "
            "echo secret-a > /tmp/mine-rtaudit; echo hold; read x; echo released")
    a = create(hold, account_id="acct-rt-a")
    wait_for(lambda: "hold" in msgs(a, run_of(a)), 60, "a holds")
    where = [m for m in msgs(a, run_of(a)) if m.startswith("where=")][0][6:]
    scratch, store = where.split("|")
    probe = r"""
cat "%s/mine-rtaudit" 2>/dev/null && echo SAW-SCRATCH
cat "%s/mine-rtaudit" 2>/dev/null && echo SAW-STORAGE
find / -xdev -name mine-rtaudit 2>/dev/null | sed 's/^/found /'
find /tmp "$PWD/.." -name mine-rtaudit 2>/dev/null | sed 's/^/found /'
for p in /proc/[0-9]*/cwd; do ls "$p/" 2>/dev/null | grep -q mine-rtaudit && echo "SAW-PROC $p"; done
[ "$(ipcs -m | grep -c '^0x')" = 0 ] || echo SAW-IPC
cat /tmp/mine-rtaudit 2>/dev/null && echo SAW-TMP
echo probed
""" % (scratch, store)
    b, rb, lb = go(probe, account_id="acct-rt-b")
    m = [x["message"] for x in lb]
    assert "probed" in m, lb
    assert not [x for x in m if x.startswith(("SAW", "found"))], m
    ra = run_of(a)
    expect(S.req("POST", base_of(a, ra) + "/command", {"jsonrpc": "2.0", "method": "close", "id": 1}), 200)
    assert finish(a)["status"] == "completed"


def test_scratch_removed_after_run():
    name = "rtaudit-scratch-%d" % os.getpid()
    t, run, _ = go("echo x > %s; mkdir -p sub/deeper; echo y > sub/deeper/%s" % (name, name))
    assert run["status"] == "completed"
    for root, dirs, files in os.walk(S.data):
        assert name not in files, (root, files)


# ---- hostile output ----

def test_huge_line_without_newline():
    t, run, lg = go("head -c 3000000 /dev/zero | tr '\\0' 'z'")
    assert run["status"] == "completed", run
    total = sum(len(x["message"]) for x in lg if x["type"] == "stdout")
    assert total == 3000000 and all(set(x["message"]) <= {"z"} for x in lg), total


def test_binary_and_invalid_utf8_output():
    code = r"""
printf 'a\377\376b\n'
head -c 20000 /dev/urandom
printf '\n\000nul\000\n'
printf 'bad-fd3\377\n' >&3
printf '{"type":"log","level":"info","message":"x\377y"}\n' >&3
printf '\300\200\355\240\200 surrogate\n' >&2
echo end
"""
    t, run, lg = go(code)
    assert run["status"] == "completed", run
    m = [x["message"] for x in lg]
    assert "end" in m, m
    # no line is lost: bytes that are not UTF-8 (and NUL) become U+FFFD
    assert "a\ufffd\ufffdb" in m and "\ufffdnul\ufffd" in m, m
    assert any(x.endswith(" surrogate") for x in m), m
    # every API view of the run is valid JSON / JSONL
    r = S.req("GET", base_of(t, run) + "/logs")
    for line in [x for x in r.text.split("\n") if x]:
        json.loads(line)
    assert S.req("GET", base_of(t, run)).json is not None
    assert isinstance(events(t, run), list)
    assert S.req("GET", P + "/logs?task=" + run["id"]).json is not None


def test_malformed_control_messages():
    code = r"""
echo 'not json' >&3
echo '{"type":"progress","progress":"lots"}' >&3
echo '{"type":"progress","progress":7}' >&3
echo '{"type":"nope"}' >&3
echo '[1,2,3]' >&3
echo '{"type":"log","level":"shout","message":7}' >&3
echo '{"type":"log","level":"shout","message":"loud"}' >&3
echo '{"type":"output"}' >&3
echo '{"type":"checkpoint","data":"x"}' >&3
echo '{"type":"usage","tokens_used":-5,"cost":"free"}' >&3
echo '{"type":"continue","data":[1]}' >&3
echo '{"type":"input_request"}' >&3
printf '{"type":"log","message":"unterminated' >&3
exec 3>&-
echo '{"type":"log","message":"after close"}' >&3 2>/dev/null
echo still-here
"""
    t, run, lg = go(code, settings={"timeout_ms": 20000})
    assert run["status"] in TERMINAL, run
    assert "still-here" in [x["message"] for x in lg], lg
    assert run["progress"] is None or 0 <= run["progress"] <= 1, run
    levels = {x["level"] for x in lg if x["type"] == "log"}
    assert levels <= {"debug", "info", "warn", "warning", "error"}, levels   # as append_log


def test_control_fields_missing_or_of_the_wrong_type_are_ignored():
    """An output message without an output leaves the last one (it made the
    run's output null at exit, while the live run showed the earlier one);
    a prompt that is not a string is null on the interaction (it was kept
    as sent: an object where clients read a string)."""
    t = create("""
echo '{"type":"output","output":{"a":1}}' >&3
echo '{"type":"output"}' >&3
echo '{"type":"input_request","prompt":{"text":"rich?"}}' >&3
read -r answer
""", "sh")
    r = wait_status(t, ("interaction_required",))
    assert r["interaction"]["kind"] == "input" and r["interaction"]["prompt"] is None, r
    assert r["output"] == {"a": 1}, r
    expect(S.req("POST", base_of(t, r) + "/interaction", {"response": "ok"}), 200)
    r = finish(t)
    assert r["status"] == "completed" and r["output"] == {"a": 1}, r


def test_fd3_closed_early_and_stdout_closed():
    specs = [("exec 3>&-; echo fine; printf '{\"ok\":1}' > \"$QUERN_OUTPUT\"", "sh", {}),
             ("exec >&- ; sleep 0.3; echo via-stderr >&2; exit 0", "sh", {}),
             ("exec >&- 2>&- 3>&-; sleep 0.3; printf '{\"quiet\":1}' > \"$QUERN_OUTPUT\"", "sh", {}),
             ("exec 0<&-; echo no-stdin", "sh", {})]
    (t1, r1, l1), (t2, r2, l2), (t3, r3, _), (t4, r4, l4) = many(specs)
    assert r1["status"] == "completed" and r1["output"] == {"ok": 1}, r1
    assert r2["status"] == "completed" and "via-stderr" in [x["message"] for x in l2], (r2, l2)
    assert r3["status"] == "completed" and r3["output"] == {"quiet": 1}, r3
    assert r4["status"] == "completed", r4


def test_signals_to_init_and_everyone():
    specs = [("kill -KILL 1; kill -STOP 1; kill -KILL $PPID; echo survived", "sh", {}),
             ("kill -TERM $PPID; sleep 0.5; echo after", "sh", {}),
             # kill(-1) reaches every process of the box but the caller (and init)
             ("sleep 30 & kill -KILL -1; echo after-kill-all", "sh", {"settings": {"timeout_ms": 20000}}),
             ("kill -STOP $$", "sh", {"settings": {"timeout_ms": 1000, "kill_grace_ms": 200}})]
    (t1, r1, l1), (t2, r2, _), (t3, r3, l3), (t4, r4, _) = many(specs)
    assert r1["status"] == "completed" and "survived" in [x["message"] for x in l1], (r1, l1)
    # init forwards what it can catch to the code (docs/RUNTIME.md)
    assert r2["status"] == "failed" and r2["error"]["code"] == "signal", r2
    assert "SIGTERM" in r2["error"]["message"], r2
    assert r3["status"] == "completed" and "after-kill-all" in [x["message"] for x in l3], r3
    assert r4["status"] == "timed_out", r4


def test_artifacts_fifo_device_dir_symlink():
    code = r"""
cd "$QUERN_ARTIFACTS"
mkfifo fifo
mknod dev c 1 3 2>/dev/null
ln -s /dev/zero zero-link
ln -s /etc/hostname host-link
ln /etc/passwd hard 2>/dev/null
mkdir -p sub/deeper && printf 'nested' > sub/deeper/n.txt
mkdir emptydir
python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.bind('sock')"
printf 'plain' > plain.txt
echo done
"""
    t, run, lg = go(code, settings={"timeout_ms": 20000})
    assert run["status"] == "completed", (run, lg)
    names = sorted(a["name"] for a in run["artifacts"])
    assert "plain.txt" in names and not {"fifo", "dev", "zero-link", "host-link", "sock", "emptydir"} & set(names), names
    assert names in (["plain.txt", "sub/deeper/n.txt"], ["hard", "plain.txt", "sub/deeper/n.txt"]), names


def test_artifact_names_follow_the_upload_rules():
    # a file left by code is stored only under a name an upload could have
    # (docs/API.md: 1-255 printable bytes, no "..", no backslash)
    code = py(r"""
os.chdir(os.environ["QUERN_ARTIFACTS"])
for n in [b"new\r\nX-Evil: 1", b"tab\there", b"bad\xff\xfeutf", b"..dots", b"back\\slash", b"ok name.txt"]:
    open(n, "wb").write(b"v")
os.makedirs(b"y" * 200)
open(b"y" * 200 + b"/" + b"z" * 60, "wb").write(b"v")   # 261 bytes in all
os.makedirs(b"dir\nname")
open(b"dir\nname/f", "wb").write(b"v")
os.makedirs("fine/dir")
open("fine/dir/f.txt", "w").write("v")
""")
    t, run, lg = go(code, "python")
    assert run["status"] == "completed", lg
    assert sorted(a["name"] for a in run["artifacts"]) == ["fine/dir/f.txt", "ok name.txt"], run["artifacts"]


def test_output_symlink_and_fifo_not_followed():
    host = tempfile.NamedTemporaryFile(prefix="rtaudit-json-", suffix=".json", dir="/tmp", delete=False)
    host.write(b'{"host_secret": "from-the-host-82b1"}')
    host.close()
    try:
        specs = [('ln -sf /etc/shadow "$QUERN_OUTPUT"', "sh", {}),
                 ('ln -sf %s "$QUERN_OUTPUT"' % host.name, "sh", {}),
                 ('rm -f "$QUERN_OUTPUT"; mkfifo "$QUERN_OUTPUT"', "sh", {}),
                 ('rm -f "$QUERN_OUTPUT"; mkdir "$QUERN_OUTPUT"', "sh", {}),
                 ('echo \'{"a":1}\' > ./real.json; ln -sf "$PWD/real.json" "$QUERN_OUTPUT"', "sh", {})]
        done = many(specs)
        for (t, run, _) in done:
            txt = json.dumps(run)
            assert "root:" not in txt and "from-the-host-82b1" not in txt, run
        for t, run, _ in done:   # QUERN_OUTPUT must be a regular file (docs/RUNTIME.md)
            assert run["status"] == "failed" and run["error"]["code"] == "invalid_output", run
            assert run["output"] is None, run
    finally:
        os.unlink(host.name)


def test_input_file_tampering_does_not_change_the_run():
    t, run, _ = go('echo \'{"evil":1}\' > "$QUERN_INPUT" 2>/dev/null; true', input={"good": 1})
    assert run["status"] == "completed" and run["input"] == {"good": 1}, run


def test_tiny_lines_cost_at_least_64_bytes_each():
    # `yes`: 2-byte lines.  After a run's first 10000 entries each costs at
    # least 64 bytes of max_output_bytes (docs/RUNTIME.md), so a flood of
    # tiny lines stores 10000 + limit/64 entries, not limit/2 (at the
    # default 10 MiB: 174k rows rather than 5M)
    t, run, lg = go("yes", settings={"max_output_bytes": 1280000, "timeout_ms": 60000})
    assert run["status"] == "failed" and run["error"]["code"] == "output_limit_exceeded", run
    assert 10000 < len(lg) <= 10000 + 1280000 // 64, len(lg)


def test_many_log_lines_fast():
    n = 30000
    t, run, lg = go("seq 1 %d" % n, settings={"timeout_ms": 60000})
    assert run["status"] == "completed", run
    m = [x["message"] for x in lg if x["type"] == "stdout"]
    assert m == [str(i) for i in range(1, n + 1)], (len(m), m[:3], m[-3:])


def test_secrets_exact_bytes_and_redaction_everywhere():
    val = "s3cr3t-rtaudit-9f"
    expect(S.req("POST", P + "/secrets", {"name": "RT_AUDIT", "value": val}), 201)
    expect(S.req("POST", P + "/secrets", {"name": "RT_SHORT", "value": "ab"}), 201)
    code = py(CTL_PY + r"""
v = open("/run/secrets/RT_AUDIT", "rb").read()
import hashlib
print("len=%d eq=%s" % (len(v), hashlib.sha256(v).hexdigest() == "f611c9f5a6b70c9f7717b8e55ddaa9b000d8bcfe52396cb6abc69447b20d4295"), flush=True)
print("line " + v.decode(), flush=True)
print("err " + v.decode(), file=sys.stderr, flush=True)
print("short=" + open("/run/secrets/RT_SHORT").read(), flush=True)
print("env=%s" % ("RT_AUDIT" in os.environ), flush=True)
ctl({"type": "log", "level": "info", "message": "fd3 " + v.decode(), "data": {"k": "in " + v.decode()}})
ctl({"type": "progress", "progress": 0.5})
ctl({"type": "checkpoint", "data": {"c": v.decode(), "key-" + v.decode(): 1}})
ctl({"type": "log", "level": "info", "message": "keys", "data": {v.decode(): {v.decode(): 2}}})
os.write(3, b'{"type":"log","message":"' + v + b'\n')    # malformed: said, not quoted (secrets)
open(os.environ["QUERN_ARTIFACTS"] + "/report-" + v.decode() + ".txt", "w").write("r")
open(os.environ["QUERN_ARTIFACTS"] + "/report-***.txt", "w").write("plain")
json.dump({"o": "pre-" + v.decode() + "-post", "n": [v.decode()], v.decode(): 1, "***": 2},
          open(os.environ["QUERN_OUTPUT"], "w"))
""")
    t, run, lg = go(code, "python", secrets=["RT_AUDIT", "RT_SHORT"])
    assert run["status"] == "completed", (run, lg)
    m = [x["message"] for x in lg]
    assert "len=17 eq=True" in m and "env=False" in m and "short=ab" in m, m
    # in keys too; a key that becomes one already there keeps both members
    assert run["output"] == {"o": "pre-***-post", "n": ["***"], "***": 2, "*** (2)": 1}, run
    assert [x["data"] for x in lg if x["message"] == "keys"] == [{"***": {"***": 2}}], lg
    everything = json.dumps([lg, run, events(t, run),
                             S.req("GET", base_of(t, run) + "/checkpoints").text])
    assert val not in everything, everything[:3000]
    assert "line ***" in m and "err ***" in m and "fd3 ***" in m, m
    assert any("invalid control message" in x for x in m), m
    # a name that becomes another's once the secret is hidden keeps both files
    names = sorted(a["name"] for a in run["artifacts"])
    assert names == ["report-***.txt", "report-***.txt (2)"], run["artifacts"]
    for bad in ("lower", "1ABC", "A-B", "A" * 65):
        assert S.req("POST", P + "/secrets", {"name": bad, "value": "x"}).status == 400, bad
    # kept encrypted at rest under a generated key of mode 0600; never returned
    import stat
    assert stat.S_IMODE(os.stat(os.path.join(S.data, "secret.key")).st_mode) == 0o600
    listed = S.req("GET", P + "/secrets")
    assert listed.status == 200 and val not in listed.text and "RT_AUDIT" in listed.text, listed
    for fn in ("quern.db", "quern.db-wal"):
        if os.path.exists(os.path.join(S.data, fn)):
            with open(os.path.join(S.data, fn), "rb") as f:
                assert val.encode() not in f.read(), fn


def test_secret_in_error_message_is_redacted():
    val = "errsecret-rtaudit-77"
    expect(S.req("POST", P + "/secrets", {"name": "RT_ERR", "value": val}), 201)
    t, run, lg = go('printf "{\\"bad\\": \\"$(cat /run/secrets/RT_ERR)" > "$QUERN_OUTPUT"', secrets=["RT_ERR"])
    assert run["status"] == "failed", run
    assert val not in json.dumps([run, lg, events(t, run)])


def test_secret_printed_line_by_line_and_overlapping_secrets_are_redacted():
    """A secret holding newlines (a PEM key) printed whole reaches the log as
    its lines: each line of 4+ bytes is hidden too.  Two secrets that overlap
    in what is printed are hidden together (the first alone left the other's
    end in clear)."""
    pem = ("-----BEGIN TEST KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
           "AoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R\n-----END TEST KEY-----\n")
    expect(S.req("POST", P + "/secrets", {"name": "RT_PEM", "value": pem}), 201)
    expect(S.req("POST", P + "/secrets", {"name": "RT_OVL_A", "value": "ovl-head-mid"}), 201)
    expect(S.req("POST", P + "/secrets", {"name": "RT_OVL_B", "value": "head-mid-tail9"}), 201)
    code = ('cat /run/secrets/RT_PEM; cat /run/secrets/RT_PEM >&2; '
            'echo "x $(cat /run/secrets/RT_OVL_A)-tail9 y"; '
            'printf \'{"type":"output","output":{"k":"%s"}}\\n\' "$(cat /run/secrets/RT_OVL_B)" >&3')
    t, run, lg = go(code, secrets=["RT_PEM", "RT_OVL_A", "RT_OVL_B"])
    assert run["status"] == "completed", (run, lg)
    text = json.dumps([lg, run, events(t, run)])
    for line in ["-----BEGIN TEST KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
                 "AoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R", "-----END TEST KEY-----", "tail9", "head-mid"]:
        assert line not in text, (line, lg)
    m = [x["message"] for x in lg]
    assert [x.rstrip("\r") for x in m].count("***") == 8 and "x *** y" in m, m
    assert run["output"] == {"k": "***"}, run


def test_several_secrets_with_inner_newlines_are_all_redacted():
    """Secrets holding a newline but not ending with one have one line more
    than newlines: two such secrets overflowed the table of patterns sized
    by newlines (a heap overflow under ASan), and each of their lines must
    still be hidden."""
    vals = {"RT_NL_A": "nlsecA-1111\nnlsecA-2222", "RT_NL_B": "nlsecB-3333\nnlsecB-4444",
            "RT_NL_C": "nlsecC-5555\r\nnlsecC-6666"}
    for name, val in vals.items():
        expect(S.req("POST", P + "/secrets", {"name": name, "value": val}), 201)
    code = "".join('cat /run/secrets/%s; echo; ' % n for n in vals)
    t, run, lg = go(code, secrets=list(vals))
    assert run["status"] == "completed", (run, lg)
    text = json.dumps([lg, run, events(t, run)])
    assert "nlsec" not in text, lg
    assert [x["message"].rstrip("\r") for x in lg] == ["***"] * 6, lg


def test_secret_equal_to_a_control_word_keeps_the_message():
    """A secret whose value is a word of the fd-3 protocol ("output",
    "message", "checkpoint") hides that word in what the code sends, not in
    the message's own type and keys: the message still counts."""
    for name, val in (("RT_W_OUT", "output"), ("RT_W_MSG", "message"), ("RT_W_CKP", "checkpoint")):
        expect(S.req("POST", P + "/secrets", {"name": name, "value": val}), 201)
    code = py(CTL_PY + r"""
ctl({"type": "log", "level": "info", "message": "the output message", "data": {"output": 1}})
ctl({"type": "checkpoint", "data": {"step": "checkpoint 1"}})
ctl({"type": "output", "output": {"r": "my output", "n": 2}})
""")
    t, run, lg = go(code, "python", secrets=["RT_W_OUT", "RT_W_MSG", "RT_W_CKP"])
    assert run["status"] == "completed", (run, lg)
    assert run["output"] == {"r": "my ***", "n": 2}, run
    got = [(x["type"], x["message"], x["data"]) for x in lg]
    assert got == [("log", "the *** ***", {"***": 1})], got
    cps = expect(S.req("GET", base_of(t, run) + "/checkpoints"), 200)
    cps = cps["data"] if isinstance(cps, dict) else cps
    assert [c["data"] for c in cps] == [{"step": "*** 1"}], cps


def test_secret_in_a_line_cut_by_max_output_bytes_is_redacted():
    """A line cut at max_output_bytes is cut after its secrets are hidden:
    cut first, the part of a secret before the cut was stored in clear."""
    val = "cutleak-ABCDEFGHIJKLMNOP"
    expect(S.req("POST", P + "/secrets", {"name": "RT_CUT", "value": val}), 201)
    t, run, lg = go('printf "%s%s\\n" "$(head -c 1010 /dev/zero | tr "\\0" x)" "$(cat /run/secrets/RT_CUT)"',
                    secrets=["RT_CUT"], settings={"max_output_bytes": 1024})
    assert run["status"] == "failed" and run["error"]["code"] == "output_limit_exceeded", run
    text = json.dumps([lg, run, events(t, run)])
    assert "cutleak" not in text and "ABCDE" not in text, [x["message"][-40:] for x in lg]
    m = [x["message"] for x in lg if x["type"] == "stdout"]
    assert m == ["x" * 1010 + "***"], [x[-40:] for x in m]


def test_json_errors_do_not_quote_a_cut_secret():
    """jansson's error quotes the token near it, cut where its lexer stopped:
    an unquoted secret came out as its first bytes ("near 'LONGSECRET'"),
    which redacting does not recognise.  In a run with secrets the token is
    left out, of a malformed fd-3 message and of a malformed output file."""
    val = "LONGSECRET-" + "".join("%03d" % i for i in range(30))
    expect(S.req("POST", P + "/secrets", {"name": "RT_UNQUOTED", "value": val}), 201)
    code = py(r"""
v = open("/run/secrets/RT_UNQUOTED").read()
os.write(3, ('{"type":"log","message":' + v + '}\n').encode())
open(os.environ["QUERN_OUTPUT"], "w").write('{"a": ' + v + '}')
""")
    t, run, lg = go(code, "python", secrets=["RT_UNQUOTED"])
    assert run["status"] == "failed" and run["error"]["code"] == "invalid_output", run
    assert "LONGSECRET" not in json.dumps([lg, run, events(t, run)]), (run["error"], lg)
    assert [x["message"] for x in lg] == ["ignored an invalid control message (invalid token)"], lg



def test_secret_in_continue_data_prompt_schema_and_skipped_artifact_names():
    """Where else code can put a secret: the data of a `continue` (the next
    iteration's input: never stored nor shown, so handed on as written; it
    reached the next iteration as "***"), an input_request's prompt and
    schema (on the run while it waits), and the names of artifacts that are
    not stored (the warning names the first of each reason)."""
    val = "contsecret-bbrt-4242"
    expect(S.req("POST", P + "/secrets", {"name": "RT_CONT", "value": val}), 201)
    code = py(CTL_PY + r"""
s = open("/run/secrets/RT_CONT").read()
d = json.load(open(os.environ["QUERN_INPUT"]))
if not d.get("n"):
    ctl({"type": "continue", "data": {"n": 1, "s": s}})
    sys.exit(0)
a = os.environ["QUERN_ARTIFACTS"]
os.symlink("/etc/hostname", a + "/link-" + s)
os.mkfifo(a + "/fifo-" + s)
open(a + "/back\\" + s, "w").write("x")
print("next input as written:", d.get("s") == s, flush=True)
ctl({"type": "input_request", "prompt": "say " + s,
     "schema": {"type": "object", "description": s, "properties": {s: {"type": "string"}}}})
print(sys.stdin.readline().strip() != "", flush=True)
""")
    t = create(code, "python", secrets=["RT_CONT"])
    run = wait_status(t, ("interaction_required",) + TERMINAL)
    assert run["status"] == "interaction_required", run
    waiting = S.req("GET", base_of(t, run) + "?include=input,logs").text
    assert val not in waiting and "***" in waiting, waiting[:2000]
    expect(S.req("POST", base_of(t, run) + "/interaction", {"response": {}}), 200)
    run = finish(t)
    lg = logs(t, run)
    assert run["status"] == "completed" and run["iterations"] == 2, (run, lg)
    m = [x["message"] for x in lg]
    assert "next input as written: True" in m, m
    assert any(x.startswith("artifacts not stored") for x in m), m
    everything = json.dumps([lg, run, events(t, run), S.req("GET", P + "/logs?task=" + run["id"]).text,
                             S.req("GET", base_of(t, run) + "?include=input,logs").text])
    assert val not in everything, everything[:3000]


def test_runtime_unavailable():
    cfg = os.path.join(tempfile.mkdtemp(prefix="rtaudit-conf-", dir=os.environ.get("QUERN_TEST_TMP")), "quern.conf")
    with open(cfg, "w") as f:
        f.write("[runtime.python]\ninterpreter = /nonexistent/python3\n\n"
                "[runtime.ghost]\ninterpreter = /nonexistent/ghost\n")
    s = Server(extra_args=["--config", cfg])
    try:
        for rt in ("python", "ghost"):
            t = expect(s.req("POST", P + "/tasks", {"code": "print(1)", "runtime_id": rt,
                                                    "wait_for_result": True}), 201)
            run = t["run"]
            if run["status"] not in TERMINAL:
                run = wait_for(lambda: (lambda r: r if r["status"] in TERMINAL else None)(
                    expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 30, "end")
            assert run["status"] == "failed" and run["error"]["code"] == "runtime_unavailable", run
        t = expect(s.req("POST", P + "/tasks", {"code": "echo ok", "runtime_id": "sh",
                                                "wait_for_result": True}), 201)
        assert t["run"]["status"] == "completed"
        assert s.req("GET", "/healthz", key=None).status == 200
    finally:
        s.stop()


def test_waits_that_end_before_they_start_leave_no_timer():
    """A create with wait_for_result whose run ends before the wait is set up
    (a missing interpreter fails at once) answers at once, and the wait's
    timer goes with it: it used to stay armed and fire later on freed memory
    (seen by ASan at the timers' deadline and at SIGTERM's drain)."""
    cfg = os.path.join(tempfile.mkdtemp(prefix="rtaudit-conf-", dir=os.environ.get("QUERN_TEST_TMP")), "quern.conf")
    with open(cfg, "w") as f:
        f.write("[runtime.python]\ninterpreter = /nonexistent/python3\n")
    s = Server(extra_args=["--config", cfg])
    try:
        for _ in range(40):
            t = expect(s.req("POST", P + "/tasks", {"code": "print(1)", "runtime_id": "python",
                                                    "wait_for_result": 700}), 201)
            assert t["run"]["status"] in ("queued", "running", "failed"), t
        time.sleep(1.2)   # past every wait's deadline: a timer left armed fires now
        assert s.req("GET", "/healthz", key=None).status == 200
    finally:
        s.stop()   # exits 0: no sanitizer report, no crash at the drain


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
