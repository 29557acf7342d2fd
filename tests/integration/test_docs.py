"""The documents' examples, run as written against a real quernd.

A fenced block right after a `<!-- docs-test: NAME -->` line in README.md or
docs/*.md is run here: the README's tour (its `run_…` and `task_…` standing
for the ids the commands before it printed), HOOKS.md's shell and Python
signature examples, and contrib/quern.conf, whose every key must be one
quernd takes (and every key quernd takes must be in it).  An example that
stops working fails this test, not a new user."""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from qlib import BUILD, ROOT_KEY, Receiver, Server, expect, run_tests, wait_for  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
S = Server()
P = "/api/projects/default"
URL = "http://%s:%d" % (S.host, S.port)


def blocks(doc):
    """{name: text} of the fenced blocks marked `<!-- docs-test: name -->` in doc."""
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    found = {}
    for m in re.finditer(r"<!-- docs-test: ([\w-]+) -->\n```\w*\n(.*?)\n```", text, re.S):
        found[m.group(1)] = m.group(2)
    return found


def commands(block):
    """The block's shell commands: comment lines dropped, continuations joined."""
    out, cur = [], ""
    for line in block.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    return out


def sh(cmd, env=None):
    e = dict(os.environ, QUERN_URL=URL, QUERN_KEY=ROOT_KEY, NO_COLOR="1")
    e.update(env or {})
    # the documents say build/quern: the binary under test, wherever it is built
    cmd = cmd.replace("build/quern ", os.path.join(os.path.abspath(BUILD), "quern") + " ")
    p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, env=e,
                       timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_readme_tour():
    cmds = commands(blocks("README.md")["tour"])
    # the first sets the server and key of `make run`; here they are the test server's
    assert cmds[0].startswith("export QUERN_URL=http://127.0.0.1:7070 QUERN_KEY="), cmds[0]
    run_id = task_id = None
    outs = []
    for cmd in cmds[1:]:
        if "run_…" in cmd:
            assert run_id, cmd
            cmd = cmd.replace("run_…", run_id)
        if "task_…" in cmd:
            assert task_id, cmd
            cmd = cmd.replace("task_…", task_id)
        rc, out, err = sh(cmd)
        assert rc == 0, (cmd, rc, out, err)
        outs.append((cmd, out, err))
        if "/workers/lease" in cmd:
            run_id = json.loads(out)["data"][0]["id"]
        m = re.match(r"task (task_\w+) created", out)
        if m:
            task_id = m.group(1)
    # python's print, streamed
    assert any("hello from the sandbox" in o for c, o, e in outs if " run " in c)
    # the HTTP task with code completes with the output its code wrote
    waited = [json.loads(o) for c, o, e in outs if "wait_for_result" in c][0]
    assert waited["status"] == "completed" and waited["run"]["output"] == {"ok": True}, waited
    report = [json.loads(o) for c, o, e in outs if "/workers/report" in c][0]
    assert report["data"][0]["ok"] is True, report
    sched = [o for c, o, e in outs if "tasks schedule" in c][0]
    assert sched.splitlines()[0].split() == ["AT", "LOCAL"] and "02:30:00+0" in sched, sched


def test_hooks_trigger_from_a_shell():
    task = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "docs-hook", "run": False}), 201)
    trg = expect(S.req("POST", P + "/triggers", {"task_id": task["id"]}), 201)
    rc, out, err = sh(blocks("docs/HOOKS.md")["trigger-sh"],
                      {"SECRET": trg["secret"], "TRIGGER_ID": trg["id"]})
    assert rc == 0, (out, err)
    fired = json.loads(out)
    assert fired["trigger_id"] == trg["id"] and fired["run_id"].startswith("run_"), fired
    run = expect(S.req("GET", P + "/task-runs/" + fired["run_id"] + "?include=input"), 200)
    assert run["input"] == {"customer": 42}, run


def test_hooks_python_sign_and_verify():
    ns = {}
    exec(blocks("docs/HOOKS.md")["signature-py"], ns)
    sign, verify = ns["sign"], ns["verify"]
    # sign() fires a trigger
    task = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "docs-py", "run": False}), 201)
    trg = expect(S.req("POST", P + "/triggers", {"task_id": task["id"]}), 201)
    body = b'{"from":"python"}'
    r = S.req("POST", trg["url"], key=None, raw=body,
              headers={"X-Quern-Signature": sign(trg["secret"], body)})
    assert r.status == 202, r
    # verify() accepts what quernd sends a webhook, and nothing altered
    rec = Receiver()
    try:
        expect(S.req("PUT", P + "/policy", {"outbound_allow_private": True}), 200)
        wh = expect(S.req("POST", P + "/webhooks", {
            "url": rec.url, "events": ["task.created"]}), 201)
        expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "docs-py", "run": False}), 201)
        headers, b = wait_for(rec.got, what="a webhook delivery")[0]
        header = {k.lower(): v for k, v in headers.items()}["x-quern-signature"]
        assert verify(wh["secret"], b, header), header
        assert not verify(wh["secret"], b + b" ", header)
        assert not verify("whsec_other", b, header)
    finally:
        rec.close()
        S.req("DELETE", P + "/webhooks/" + wh["id"])
        S.req("PUT", P + "/policy", {})


def conf_keys_in_code():
    """(section, key) pairs quernd's quern.conf parser takes, read from its source."""
    src = open(os.path.join(ROOT, "src", "quernd.c")).read()
    body = src[src.index("static int conf_setting("):]
    body = body[:body.index("\n}\n")]
    keys = set()
    section = None
    for line in body.splitlines():
        m = re.search(r'!strcmp\(section, "(\w+)"\)', line)
        if m:
            section = m.group(1)
        for k in re.findall(r'strcmp\(key, "(\w+)"\)|\{"(\w+)", offsetof', line):
            keys.add((section, k[0] or k[1]))
    rt = open(os.path.join(ROOT, "src", "runtime.c")).read()
    rt = rt[rt.index("runtime_config_set("):]
    rt = rt[:rt.index("\n}\n")]
    keys |= {("runtime", k) for k in re.findall(r'!strcmp\(key, "(\w+)"\)', rt)}
    return keys


def test_quern_conf_documents_every_key_and_only_those():
    conf = open(os.path.join(ROOT, "contrib", "quern.conf")).read()
    documented = set()
    section = None
    runtime_list = False
    for line in conf.splitlines():
        runtime_list = runtime_list or line.startswith("# Runtimes:")
        m = re.match(r"#? ?\[([\w.]+)\]", line)
        if m:
            section = m.group(1).split(".")[0]
            continue
        m = re.match(r"#? ?(\w+) = ", line)
        if m:
            documented.add((section, m.group(1)))
        m = re.match(r"#   (\w+) ", line)   # the runtime keys' list
        if m and runtime_list:
            documented.add(("runtime", m.group(1)))
    code = conf_keys_in_code()
    assert len(code) > 20, code
    assert code - documented == set(), ("keys quernd takes that contrib/quern.conf leaves out", code - documented)
    assert documented - code == set(), ("keys contrib/quern.conf shows that quernd refuses", documented - code)


def test_quernd_help_names_every_environment_variable_it_reads():
    # QUERN_RETENTION_EVERY_MS, QUERN_WARM, the webhook timings... were read
    # but named by no help text; the CLI's own (src/cli*.c) are in quern --help
    # and the fault injection of the tests (QUERN_PG_FAULT_*, QUERN_TEST_*) in MULTINODE.md
    # or RUNTIME.md
    names = set()
    for f in os.listdir(os.path.join(ROOT, "src")):
        if not f.endswith(".c") or f.startswith("cli"):
            continue
        text = open(os.path.join(ROOT, "src", f)).read()
        names |= set(re.findall(r'getenv\("(QUERN_\w+|\w+_MS)"\)', text))
        names |= set(re.findall(r'\{"(QUERN_\w+|\w+_TIMEOUT_MS)", ', text))
        names |= set(re.findall(r'env_ms\("(QUERN_\w+)"', text))
    test_only = {n for n in names if n.startswith(("QUERN_PG_FAULT_", "QUERN_TEST_"))}
    docs = "".join(open(os.path.join(ROOT, "docs", f)).read() for f in ("MULTINODE.md", "RUNTIME.md"))
    undocumented = {n for n in test_only if n not in docs}
    assert undocumented == set(), ("test-only variables neither MULTINODE.md nor RUNTIME.md names",
                                   undocumented)
    names -= test_only
    assert "QUERN_LEASE_MS" in names and "QUERN_WEBHOOK_TIMEOUT_MS" in names, names
    out = subprocess.run([os.path.join(BUILD, "quernd"), "--help"], capture_output=True,
                         text=True).stdout
    helped = set(re.findall(r"[A-Z][A-Z_]+[A-Z]", out.split("environment:", 1)[1]))
    assert names - helped == set(), names - helped


def test_quern_conf_as_shipped_and_uncommented_starts():
    # every commented example uncommented (but the PostgreSQL store) is a
    # configuration quernd takes
    text = open(os.path.join(ROOT, "contrib", "quern.conf")).read()
    lines = []
    for line in text.splitlines():
        m = re.match(r"# ?(\[[\w.]+\]|\w+ = .*)$", line)
        if m and not m.group(1).startswith("store ="):
            line = m.group(1)
        lines.append(line)
    d = tempfile.mkdtemp(prefix="quern-docs-conf-")
    for name, conf in (("shipped.conf", text), ("all.conf", "\n".join(lines) + "\n")):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(conf.replace("/etc/quern/secrets.key", os.path.join(d, "secrets.key")))
        s = Server(extra_args=["--config", path])
        try:
            expect(s.req("GET", "/readyz", key=None), 200)
        finally:
            s.stop()


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
