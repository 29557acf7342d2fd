"""The quern CLI against a real quernd: tables and --json, exit codes a
script can trust, errors shown plainly, run --wait streaming the log, logs,
keys, definitions, schedules, and its documentation (help, man, completion)."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from qlib import BUILD, ROOT_KEY, Server, expect, run_tests, wait_for  # noqa: E402

S = Server()
P = "/api/projects/default"


def quern(*args, key=ROOT_KEY, input_=None, env=None):
    e = dict(os.environ, QUERN_URL="http://%s:%d" % (S.host, S.port), QUERN_KEY=key or "",
             NO_COLOR="1")
    e.update(env or {})
    p = subprocess.run([os.path.join(BUILD, "quern")] + list(args), capture_output=True, text=True,
                       env=e, input=input_, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_projects_and_json():
    rc, out, err = quern("projects", "list")
    assert rc == 0 and "default" in out, (out, err)
    rc, out, _ = quern("--json", "projects", "create", "cli-proj")
    assert rc == 0 and json.loads(out)["name"] == "cli-proj"


def test_agent_tasks_and_paging_after_an_id():
    ids = []
    for i in range(5):
        rc, out, err = quern("--json", "tasks", "create", "--name", "pg%d" % i, "--agent", "cli-pager")
        assert rc == 0, err
        t = json.loads(out)
        # work for an agent is queued for it at once
        assert t["assigned_agent_id"] == "cli-pager" and t["status"] == "queued", t
        ids.append(t["id"])
    rc, out, err = quern("tasks", "list", "--limit", "2")
    assert rc == 0 and "the next page: --after " in err, err
    seen, after = [], None
    while True:
        args = ["--json", "tasks", "list", "--limit", "2"] + (["--after", after] if after else [])
        rc, out, err = quern(*args)
        assert rc == 0, err
        page = json.loads(out)
        seen += [t["id"] for t in page["data"] if t["id"] in ids]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids[::-1], (seen, ids)
    rc, out, err = quern("projects", "list", "--after", "x")
    assert rc == 2 and "unknown option --after" in err, err


def test_keys_scopes_and_exit_codes():
    rc, out, err = quern("--json", "keys", "create", "ro", "--scope", "task:read")
    assert rc == 0, err
    k = json.loads(out)
    rc, out, err = quern("tasks", "list", key=k["key"])
    assert rc == 0, err
    rc, out, err = quern("tasks", "create", "--name", "x", "--code", "true", key=k["key"])
    assert rc == 1 and "403" in err, (rc, err)
    rc, _, err = quern("keys", "revoke", k["id"])
    assert rc == 0, err
    rc, _, err = quern("tasks", "list", key=k["key"])
    assert rc == 1 and "401" in err


def test_run_wait_streams_and_exit_code():
    rc, out, err = quern("run", "--runtime", "sh", "--code", "echo hello-cli; echo oops >&2", "--wait")
    assert rc == 0 and "hello-cli" in out and "oops" in err, (rc, out, err)
    rc, out, err = quern("run", "--runtime", "sh", "--code", "exit 3", "--wait")
    assert rc == 1, (rc, out, err)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write("import json, os\nprint(json.load(open(os.environ['QUERN_INPUT']))['n'] * 2)\n")
    rc, out, err = quern("run", "-f", f.name, "--input", '{"n": 21}', "--wait")
    os.unlink(f.name)
    assert rc == 0 and "42" in out, (rc, out, err)
    rc, out, err = quern("--json", "run", "--runtime", "sh", "--code", "echo '{\"v\":1}' > $QUERN_OUTPUT", "--wait")
    assert rc == 0 and json.loads(out)["status"] == "completed", (out, err)


def test_logs_output_and_get():
    rc, out, err = quern("--json", "tasks", "create", "--code", 'echo line1; echo \'{"k":2}\' > "$QUERN_OUTPUT"', "--wait")
    assert rc == 0, err
    t = json.loads(out)
    rid = t["run"]["id"] if "run" in t else t["id"]
    rc, out, err = quern("runs", "logs", rid)
    assert rc == 0 and "line1" in out, (out, err)
    rc, out, err = quern("runs", "output", rid)
    assert rc == 0 and json.loads(out) == {"k": 2}, (out, err)
    # reals exact and in the fewest digits (jansson's 15 digits showed 0.1 + 0.2 as 0.3)
    rc, out, err = quern("--json", "tasks", "create", "--code",
                         'echo \'{"a":0.30000000000000004,"b":0.3,"c":[]}\' > "$QUERN_OUTPUT"', "--wait")
    assert rc == 0, err
    t = json.loads(out)
    rc, out, err = quern("runs", "output", t["run"]["id"] if "run" in t else t["id"])
    assert rc == 0 and json.loads(out) == {"a": 0.1 + 0.2, "b": 0.3, "c": []}, (out, err)
    assert '"b": 0.3,' in out and '"c": []' in out and out.endswith('}\n'), out
    rc, out, _ = quern("runs", "get", rid)
    assert rc == 0 and "completed" in out


def test_errors_and_usage():
    rc, out, err = quern("tasks", "get", "task_missing")
    assert rc == 1 and "404" in err and "not_found" in err, err
    rc, out, err = quern("tasks", "create", "--code", "true", "--input", "{bad")
    assert rc == 2 and "--input" in err, err
    rc, out, err = quern("tasks", "frobnicate")
    assert rc == 2
    # an unknown subcommand is named, with the group's commands (it said
    # "tasks needs a subcommand", as if none had been given)
    assert "unknown tasks command 'frobnicate'" in err, err
    assert "one of: create, list, get, update, delete, run," in err, err
    assert "needs a subcommand" not in err, err
    rc, out, err = quern("runs", "nope", "run_x")
    assert rc == 2 and "unknown runs command 'nope'" in err and "logs" in err, err
    rc, out, err = quern("tasks")
    assert rc == 2 and "tasks needs a subcommand" in err and "quern tasks create" in err, err
    rc, out, err = quern("tasks", "list", env={"QUERN_URL": "http://127.0.0.1:1"})
    assert rc == 3, (rc, err)
    # usage errors (2), not a request the server refuses (1): the usage
    # line's --scope is required, and schedule's --count is the server's 1-100
    rc, out, err = quern("keys", "create", "noscope")
    assert rc == 2 and "--scope" in err, (rc, err)
    rc, out, err = quern("tasks", "schedule", "task_x", "--count", "101")
    assert rc == 2 and "--count" in err, (rc, err)


def test_tasks_table_and_schedule():
    rc, out, err = quern("tasks", "create", "--name", "sched-cli", "--code", "true", "--schedule", "@hourly", "--no-run")
    assert rc == 0, err
    rc, out, _ = quern("--json", "tasks", "list", "--limit", "5")
    data = json.loads(out)
    assert "data" in data and "total" in data
    tid = [t for t in data["data"] if t["name"] == "sched-cli"][0]["id"]
    rc, out, err = quern("tasks", "schedule", tid, "--count", "3")
    assert rc == 0 and out.count(":00:00") >= 3, (out, err)
    # a table of the fire times, UTC and local (each was printed as a JSON object)
    lines = out.splitlines()
    assert lines[0].split() == ["AT", "LOCAL"] and len(lines) == 4 and "{" not in out, out
    rc, out, _ = quern("tasks", "list")
    assert out.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"] or "ID" in out.splitlines()[0]


def test_definitions():
    rc, out, err = quern("definitions", "create", "--id", "cli-def", "--title", "Echo", "--code", "echo def-ran")
    assert rc == 0, err
    rc, out, err = quern("definitions", "trigger", "cli-def", "--wait")
    assert rc == 0 and "def-ran" in out, (out, err)
    rc, out, _ = quern("definitions", "list")
    assert "cli-def" in out
    assert quern("definitions", "delete", "cli-def")[0] == 0


def test_docs():
    rc, out, _ = quern("--help")
    assert rc == 0 and "tasks create" in out and "exit" in out.lower()
    rc, out, _ = quern("man")
    assert rc == 0 and ".TH QUERN 1" in out.splitlines()[1]
    rc, out, _ = quern("completion", "bash")
    assert rc == 0
    p = subprocess.run(["bash", "-n"], input=out, text=True, capture_output=True)
    assert p.returncode == 0, p.stderr
    rc, out, _ = quern("watch")
    assert rc == 0


def test_every_option_is_described():
    # --agent and --after were in the parser but not in the glossary: their
    # help read "--agent VALUE" with nothing beside it, in the man page too
    rc, out, _ = quern("--help")
    cmds = [l[2:34].strip() for l in out.split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()]
    cmds = [" ".join(w for w in c.split() if not w.isupper() and "|" not in w) for c in cmds]
    assert "tasks create" in cmds and "runs list" in cmds, cmds
    for c in cmds:
        rc, out, _ = quern("help", *c.split())
        assert rc == 0, c
        opts = out.split("Options:\n", 1)[1].split("\n\n", 1)[0].splitlines() if "Options:" in out else []
        for line in opts:
            assert " VALUE" not in line and len(line) > 26 and line[26:].strip(), (c, line)
    rc, out, _ = quern("man")
    assert rc == 0 and "VALUE" not in out


def test_man_pages_in_the_tree_are_current():
    # man/ is what `make man` makes from the binaries' own text; an option
    # added without `make man` left man/quernd.8 behind
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    rc, out, _ = quern("man")
    assert rc == 0 and out == open(os.path.join(root, "man", "quern.1")).read(), "run make man"
    out = subprocess.run([os.path.join(BUILD, "quernd"), "--man"], capture_output=True, text=True).stdout
    assert out == open(os.path.join(root, "man", "quernd.8")).read(), "run make man"


def test_server_text_cannot_drive_the_terminal():
    # an error message quoting a stored or given value, a project's name and
    # a run's error: control characters show as '?', C0 and C1 alike
    rc, out, err = quern("tasks", "get", "x\x1b[2Jy\u009b31m")
    assert rc == 1 and "not_found" in err and "\x1b" not in err and "\u009b" not in err, repr(err)
    assert "x?[2Jy?31m" in err, repr(err)
    rc, out, err = quern("projects", "create", "p\x1b]0;title\x07q")
    assert rc == 0 and "\x1b" not in out and "\x07" not in out and "p?]0;title?q" in out, repr(out)
    rc, out, err = quern("tasks", "create", "--name", "c1\u009b2Jname", "--code", "true", "--no-run")
    assert rc == 0, err
    rc, out, err = quern("tasks", "list", "--limit", "5")
    assert rc == 0 and "c1 2Jname" in out and "\u009b" not in out, repr(out)


def test_follow_stops_when_stdout_goes_away():
    # `quern run --wait | head -1`: SIGPIPE is ignored (libcurl), so the
    # follow kept streaming into the closed pipe until the run ended, exit 0
    e = dict(os.environ, QUERN_URL="http://%s:%d" % (S.host, S.port), QUERN_KEY=ROOT_KEY, NO_COLOR="1")
    p = subprocess.Popen([os.path.join(BUILD, "quern"), "run", "--name", "pipe-follow", "--code",
                          "for i in $(seq 1 3000); do echo line$i; sleep 0.1; done", "--wait"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    import select
    ready = select.select([p.stdout], [], [], 60)[0]   # a guard against a hang, not a timing
    assert ready and p.stdout.readline() == b"line1\n", "no log line came"
    p.stdout.close()
    rc = p.wait(120)
    p.stderr.close()
    assert rc == 141, rc
    rc, out, err = quern("--json", "runs", "list", "--status", "running")
    assert rc == 0, err
    running = json.loads(out)["data"]
    assert running, "quern returned only once the run had ended"
    for r in running:
        quern("runs", "cancel", r["id"])


def test_write_errors_fail_the_command():
    with open("/dev/full", "w") as full:
        p = subprocess.run([os.path.join(BUILD, "quern"), "--json", "projects", "list"],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                           env=dict(os.environ, QUERN_URL="http://%s:%d" % (S.host, S.port),
                                    QUERN_KEY=ROOT_KEY))
    assert p.returncode == 1 and "No space left on device" in p.stderr, (p.returncode, p.stderr)


def test_code_and_values_must_be_utf8():
    # jansson refuses a string that is not UTF-8 and the field was left out:
    # the server answered "a task needs one of code ..." (exit 1)
    e = dict(os.environ, QUERN_URL="http://%s:%d" % (S.host, S.port), QUERN_KEY=ROOT_KEY, NO_COLOR="1")
    q = os.path.join(BUILD, "quern")
    p = subprocess.run([q, "run", "-f", "-"], input=b"echo \xff\xfe", capture_output=True, env=e, timeout=60)
    assert p.returncode == 2 and b"not UTF-8" in p.stderr, (p.returncode, p.stderr)
    p = subprocess.run([q, "run", "-f", "-"], input=b"echo a\x00b", capture_output=True, env=e, timeout=60)
    assert p.returncode == 2 and b"not UTF-8" in p.stderr, (p.returncode, p.stderr)
    p = subprocess.run([q, "tasks", "create", "--code", "true", "--name", b"bad\xffname"],
                       capture_output=True, env=e, timeout=60)
    assert p.returncode == 2 and b"--name" in p.stderr, (p.returncode, p.stderr)


def test_transport_errors_name_the_cause_and_hide_passwords():
    rc, out, err = quern("tasks", "list", env={"QUERN_URL": "http://user:s3cretpw@127.0.0.1:1/"})
    assert rc == 3 and "s3cretpw" not in err and "127.0.0.1" in err and "port 1" in err, err
    # a server that accepts and never answers: QUERN_TIMEOUT, not a hang
    import socket
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    try:
        rc, out, err = quern("--project", "p", "tasks", "list",
                             env={"QUERN_URL": "http://127.0.0.1:%d" % ls.getsockname()[1],
                                  "QUERN_TIMEOUT": "1"})
    finally:
        ls.close()
    assert rc == 3 and "sent nothing for 1 s" in err, (rc, err)
    rc, out, err = quern("tasks", "list", env={"QUERN_TIMEOUT": "soon"})
    assert rc == 2 and "QUERN_TIMEOUT" in err, (rc, err)


def test_https_names_the_certificate_problem_and_trusts_QUERN_CACERT():
    import ssl
    import threading
    import http.server
    d = tempfile.mkdtemp(prefix="quern-tls-")
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"data": [], "total": 0, "has_more": false}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "https://127.0.0.1:%d" % srv.server_address[1]
    try:
        rc, out, err = quern("--project", "p", "tasks", "list", env={"QUERN_URL": url})
        assert rc == 3 and "self-signed certificate" in err, (rc, err)
        rc, out, err = quern("--project", "p", "tasks", "list", env={"QUERN_URL": url, "QUERN_CACERT": cert})
        assert rc == 0 and "No tasks" in err, (rc, out, err)
    finally:
        srv.shutdown()


def _run_of(task_id):
    rc, out, err = quern("--json", "runs", "list", "--task", task_id)
    assert rc == 0, err
    return json.loads(out)["data"][0]["id"]


def test_runs_respond_and_review():
    # a run waiting for a person could be followed but not answered: there
    # was no command for POST .../interaction or .../review
    e = dict(os.environ, QUERN_URL="http://%s:%d" % (S.host, S.port), QUERN_KEY=ROOT_KEY, NO_COLOR="1")
    t = expect(S.req("POST", P + "/tasks", {"code": "echo approved-ran", "run": True,
                                             "settings": {"require_approval": True}}), 201)
    rid = _run_of(t["id"])
    follow = subprocess.Popen([os.path.join(BUILD, "quern"), "logs", "-f", rid], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=e)
    import select
    assert select.select([follow.stderr], [], [], 60)[0], "the follow said nothing"
    hint = follow.stderr.readline()
    assert "waits for an answer" in hint and "quern runs respond %s" % rid in hint, hint
    rc, out, err = quern("runs", "respond", rid)
    assert rc == 2 and "--approve" in err, (rc, err)
    rc, out, err = quern("runs", "respond", rid, "--approve", "--deny")
    assert rc == 2, (rc, err)
    rc, out, err = quern("runs", "respond", rid, "--approve")
    assert rc == 0 and "queued" in out, (rc, out, err)
    out, err = follow.communicate(timeout=120)
    assert follow.returncode == 0 and "approved-ran" in out, (follow.returncode, out, err)
    rc, out, err = quern("runs", "respond", rid, "--response", '{"x": 1}')
    assert rc == 1 and "409" in err and "no_interaction" in err, (rc, err)
    # a code's own question (fd 3) takes any JSON answer, on its stdin
    t = expect(S.req("POST", P + "/tasks", {"runtime_id": "sh", "run": True, "code":
                                             'echo \'{"type":"input_request","prompt":"name?"}\' >&3; '
                                             'read -r line; echo "got $line"'}), 201)
    rid = _run_of(t["id"])
    wait_for(lambda: '"interaction_required"' in quern("--json", "runs", "get", rid)[1],
             what="interaction_required")
    rc, out, err = quern("runs", "respond", rid, "--response", '"Ada"')
    assert rc == 0 and "running" in out, (rc, out, err)
    rc, out, err = quern("logs", "-f", rid)
    assert rc == 0 and '"response":"Ada"' in out.replace(" ", ""), (rc, out, err)
    # review: the result waits for a decision
    t = expect(S.req("POST", P + "/tasks", {"code": "echo reviewed", "run": True,
                                             "settings": {"require_review": True}}), 201)
    rid = _run_of(t["id"])
    rc, out, err = quern("runs", "review", rid)
    assert rc == 2, (rc, err)
    wait_for(lambda: '"review_required"' in quern("--json", "runs", "get", rid)[1], what="review_required")
    rc, out, err = quern("runs", "review", rid, "--reject", "--comment", "not good")
    assert rc == 0 and "failed" in out, (rc, out, err)
    rc, out, err = quern("--json", "runs", "get", rid)
    assert json.loads(out)["status"] == "failed" and "not good" in out, out


def test_runs_artifacts_and_download():
    # a run's files could not be listed or fetched from the CLI
    rc, out, err = quern("--json", "run", "--code",
                         'printf "a\\000b\\377" > "$QUERN_ARTIFACTS/bin.dat"; echo hi > "$QUERN_ARTIFACTS/n m.txt"',
                         "--wait")
    assert rc == 0, err
    rid = json.loads(out)["id"]
    rc, out, err = quern("runs", "artifacts", rid)
    assert rc == 0 and "bin.dat" in out and "n m.txt" in out and out.startswith("NAME"), (out, err)
    e = dict(os.environ, QUERN_URL="http://%s:%d" % (S.host, S.port), QUERN_KEY=ROOT_KEY)
    p = subprocess.run([os.path.join(BUILD, "quern"), "runs", "download", rid, "bin.dat"],
                       capture_output=True, env=e, timeout=60)
    assert p.returncode == 0 and p.stdout == b"a\x00b\xff", p
    d = tempfile.mkdtemp(prefix="quern-dl-")
    rc, out, err = quern("runs", "download", rid, "n m.txt", "-o", os.path.join(d, "f"))
    assert rc == 0 and open(os.path.join(d, "f")).read() == "hi\n", (rc, err)
    rc, out, err = quern("runs", "download", rid, "nope", "-o", os.path.join(d, "g"))
    assert rc == 1 and "404" in err and not os.path.exists(os.path.join(d, "g")), (rc, err)
    # a write that fails: exit 1, and what is not a regular file is left alone
    rc, out, err = quern("runs", "download", rid, "n m.txt", "-o", "/dev/full")
    assert rc == 1 and "No space left" in err and "removed" not in err, (rc, err)
    assert os.path.exists("/dev/full")


def test_secrets_triggers_webhooks():
    # none of them had a command; a secret's value is read from stdin or a
    # file, never an argument (ps shows arguments)
    rc, out, err = quern("secrets", "set", "CLI_TOKEN", input_="tok-\u00e9\n")
    assert rc == 0 and "created" in out, (rc, out, err)
    rc, out, err = quern("secrets", "set", "CLI_TOKEN", input_="tok-2")
    assert rc == 0 and "replaced" in out, (rc, out, err)
    rc, out, err = quern("secrets", "list")
    assert rc == 0 and "CLI_TOKEN" in out and "tok-2" not in out, out
    rc, out, err = quern("secrets", "set", "bad-name", input_="x")
    assert rc == 1 and "invalid_secret_name" in err, (rc, err)
    tid = expect(S.req("POST", P + "/tasks", {"code": "cat /run/secrets/CLI_TOKEN", "run": False,
                                              "secrets": ["CLI_TOKEN"]}), 201)["id"]
    rc, out, err = quern("tasks", "run", tid, "--wait")
    assert rc == 0 and "***" in out and "tok-2" not in out, (rc, out, err)
    rc, out, err = quern("triggers", "create", tid)
    assert rc == 0 and "/hooks/trg_" in out and "http://%s:%d/hooks/" % (S.host, S.port) in out, out
    assert out.splitlines()[1].startswith("whsec_"), out
    rc, out, err = quern("triggers", "list", "--task", tid)
    assert rc == 0 and tid in out, out
    trg = out.splitlines()[1].split()[0]
    assert quern("triggers", "delete", trg)[0] == 0
    rc, out, err = quern("--json", "webhooks", "create", "http://127.0.0.1:9/h", "--event",
                         "task_run.completed", "--event", "task.created")
    assert rc == 0, err
    w = json.loads(out)
    assert w["events"] == ["task_run.completed", "task.created"] and w["secret"], w
    rc, out, err = quern("webhooks", "list")
    assert rc == 0 and w["id"] in out, out
    rc, out, err = quern("webhooks", "deliveries", w["id"])
    assert rc == 0, err
    rc, out, err = quern("webhooks", "create", "ftp://x")
    assert rc == 1 and "invalid_url" in err, (rc, err)
    assert quern("webhooks", "delete", w["id"])[0] == 0
    assert quern("secrets", "delete", "CLI_TOKEN")[0] == 0


def test_an_empty_id_is_a_usage_error():
    # quern tasks get "$ID" with ID unset named the collection: it listed the
    # tasks and exited 0 (webhooks get, definitions get too); a delete got 405
    for args in (["tasks", "get", ""], ["webhooks", "get", ""], ["definitions", "get", ""],
                 ["tasks", "delete", ""], ["runs", "cancel", ""], ["runs", "download", "run_x", ""]):
        rc, out, err = quern(*args)
        assert rc == 2 and out == "" and "is empty" in err, (args, rc, out, err)


def test_keys_list_pages_and_shows_revoked_keys():
    # past the server's default page of 50 the other keys could not be listed
    # (keys list took no --limit/--offset, yet its hint offered them), and a
    # revoked key looked like a working one
    ids = []
    for i in range(52):
        rc, out, err = quern("--json", "keys", "create", "page-%d" % i, "--scope", "task:read")
        assert rc == 0, err
        ids.append(json.loads(out)["id"])
    rc, out, err = quern("keys", "revoke", ids[0])
    assert rc == 0, err
    rc, out, err = quern("keys", "list")
    assert rc == 0 and "--offset/--limit" in err, err
    seen = set()
    for off in (0, 40):
        rc, out, err = quern("--json", "keys", "list", "--limit", "40", "--offset", str(off))
        assert rc == 0, err
        seen |= {k["id"] for k in json.loads(out)["data"]}
    assert set(ids) <= seen, set(ids) - seen
    rc, out, err = quern("keys", "list", "--limit", "500")
    assert rc == 0 and out.splitlines()[0].split()[-1] == "REVOKED", out
    rows = {l.split()[0]: l.split()[-1] for l in out.splitlines()[1:]}
    assert rows[ids[0]].endswith("ago") and rows[ids[1]] == "-", (rows[ids[0]], rows[ids[1]])
    # the server's limits are 1-500: 0 was let through, then refused (exit 1)
    rc, out, err = quern("tasks", "list", "--limit", "0")
    assert rc == 2 and "--limit" in err, (rc, err)
    for k in ids[1:]:
        quern("keys", "revoke", k)


def test_run_json_prints_the_run():
    # quern --json run printed the task, with no run id in it: a script could
    # not follow what the text mode names ("run run_... started")
    rc, out, err = quern("--json", "run", "--code", "echo json-run")
    assert rc == 0, err
    r = json.loads(out)
    assert r["id"].startswith("run_") and r["task_id"].startswith("task_"), r
    rc, out, err = quern("logs", "-f", r["id"])
    assert rc == 0 and "json-run" in out, (rc, out, err)
    # tasks create --json is still the task
    rc, out, err = quern("--json", "tasks", "create", "--code", "true")
    assert rc == 0 and json.loads(out)["id"].startswith("task_"), out


class _Proxy:
    """A TCP proxy to quernd that can cut every connection and refuse new
    ones (a restart, a balancer, the network), then come back."""

    def __init__(self):
        import socket
        import threading
        self.lock = threading.Lock()
        self.conns, self.down, self.refused = [], False, 0
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.url = "http://127.0.0.1:%d" % self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                a, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                if self.down:
                    self.refused += 1
                    a.close()
                    continue
                b = socket.create_connection((S.host, S.port))
                self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    def _pump(self, x, y):
        import socket
        try:
            while True:
                d = x.recv(65536)
                if not d:
                    break
                y.sendall(d)
        except OSError:
            pass
        for s in (x, y):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        import socket
        with self.lock:
            self.down = True
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def up(self):
        with self.lock:
            self.down = False

    def close(self):
        self.ls.close()


def test_follow_survives_a_cut_stream():
    # the follow tried the stream once: when it was cut (quernd restarted, a
    # balancer), the look at the run that came next failed too and quern
    # exited 3 at once, though the run went on
    import select
    px = _Proxy()
    try:
        t = expect(S.req("POST", P + "/tasks", {"runtime_id": "sh", "run": True, "code":
                                                 'echo before-cut; '
                                                 'echo \'{"type":"input_request","prompt":"go?"}\' >&3; '
                                                 'read -r line; echo after-cut'}), 201)
        rid = _run_of(t["id"])
        e = dict(os.environ, QUERN_URL=px.url, QUERN_KEY=ROOT_KEY, NO_COLOR="1")
        follow = subprocess.Popen([os.path.join(BUILD, "quern"), "logs", "-f", rid],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        assert select.select([follow.stdout], [], [], 60)[0], "the follow printed nothing"
        assert follow.stdout.readline() == "before-cut\n"
        px.cut()
        wait_for(lambda: px.refused >= 1 or follow.poll() is not None, what="a reconnect")
        px.up()
        wait_for(lambda: '"interaction_required"' in quern("--json", "runs", "get", rid)[1],
                 what="interaction_required")
        rc, out, err = quern("runs", "respond", rid, "--response", '"go"')
        assert rc == 0, err
        out, err = follow.communicate(timeout=120)
        assert follow.returncode == 0 and "after-cut" in out, (follow.returncode, out, err)
        assert "before-cut" not in out, out    # the reconnect goes on from the last event
    finally:
        px.close()


def test_store_copy_refuses_a_missing_or_live_source():
    # a FROM that did not exist was created as an empty database and
    # "copied" (0 rows, exit 0); a store its quernd still wrote was copied
    # as it went, though docs/MULTINODE.md says to stop quernd first
    d = tempfile.mkdtemp(prefix="quern-copy-cli-")
    to = os.path.join(d, "to.db")
    rc, out, err = quern("store", "copy", os.path.join(d, "missing.db"), "sqlite:" + to)
    assert rc == 1 and "No such file" in err, (rc, out, err)
    assert sorted(os.listdir(d)) == [], os.listdir(d)
    src = os.path.join(d, "from.db")
    open(src, "w").close()
    rc, out, err = quern("store", "copy", "--data", S.data, "sqlite:" + src, "sqlite:" + to)
    assert rc == 1 and "is running on " + S.data in err and "stop it first" in err, (rc, out, err)
    assert not os.path.exists(to)
    if os.path.exists(os.path.join(S.data, "quern.db")):     # SQLite: DATA/quern.db
        rc, out, err = quern("store", "copy", os.path.join(S.data, "quern.db"), to)
        assert rc == 1 and "stop it first" in err, (rc, out, err)
        assert not os.path.exists(to)


def test_schedule_of_a_paused_task_says_so():
    # the table of fire times looked the same paused or not: none of them fires
    rc, out, err = quern("--json", "tasks", "create", "--name", "paused-cron", "--code", "true",
                         "--schedule", "*/5 * * * *")
    assert rc == 0, err
    tid = json.loads(out)["id"]
    rc, out, err = quern("tasks", "schedule", tid, "--count", "2")
    assert rc == 0 and len(out.splitlines()) == 3 and "paused" not in err, (out, err)
    assert quern("tasks", "pause", tid)[0] == 0
    rc, out, err = quern("tasks", "schedule", tid, "--count", "2")
    assert rc == 0 and len(out.splitlines()) == 3, out
    assert "is paused" in err and "quern tasks resume " + tid in err, err
    assert quern("tasks", "delete", tid)[0] == 0


def test_a_url_that_cannot_be_the_servers_is_a_usage_error():
    # the paths are appended to --url: a query swallowed them (the dashboard's
    # HTML came back: "the server sent invalid JSON", exit 3), and a blank
    # from a pasted line or a URL without a host failed as if the server
    # were down (exit 3)
    base = "http://%s:%d" % (S.host, S.port)
    for url in (base + "?x=1", base + "#top", base + " ", base + "\r", "http://", "http://user:pw@/"):
        rc, out, err = quern("projects", "list", env={"QUERN_URL": url})
        assert rc == 2 and "--url (or QUERN_URL)" in err and "pw" not in err, (url, rc, err)
    rc, out, err = quern("projects", "list", env={"QUERN_URL": base + "/"})
    assert rc == 0, err
    # a server that answers but is not quernd (HTML with 200) is named
    import http.server
    import threading

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>not quern</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d" % srv.server_address[1]
        rc, out, err = quern("--project", "default", "tasks", "list", env={"QUERN_URL": url})
        assert rc == 3 and "is not JSON" in err and url in err and "QUERN_URL" in err, (rc, err)
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_key_with_blanks_around_it_works_and_one_with_a_newline_is_refused():
    # QUERN_KEY=$(cat key.txt) of a file with CRLF, or a pasted key with a
    # space: the server answered "the API key is not valid"; a newline inside
    # went into the Authorization header as is and made a header of its own
    for k in (ROOT_KEY + "\r", " " + ROOT_KEY + " \t", ROOT_KEY + "\r\n"):
        rc, out, err = quern("projects", "list", key=k)
        assert rc == 0 and "default" in out, (repr(k), rc, err)
    rc, out, err = quern("projects", "list", key=ROOT_KEY + "\nX-Injected: 1")
    assert rc == 2 and "--key (or QUERN_KEY)" in err and ROOT_KEY not in err, (rc, err)


def test_a_closed_stdout_is_a_write_error():
    # quern projects list >&-: libcurl's wake-up pipe took fd 1, the table
    # went into it, and quern exited 0 having printed nothing
    e = dict(os.environ, QUERN_URL="http://%s:%d" % (S.host, S.port), QUERN_KEY=ROOT_KEY)
    p = subprocess.run([os.path.join(BUILD, "quern"), "projects", "list"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=e, timeout=60, preexec_fn=lambda: os.close(1))
    assert p.returncode == 1 and b"cannot write the output" in p.stderr, (p.returncode, p.stderr)


def test_help_of_no_command_names_every_word():
    # "help tasks create x" said "no such command: tasks create", which exists
    rc, out, err = quern("help", "tasks", "create", "x")
    assert rc == 2 and "no such command: tasks create x\n" in err, err
    rc, out, err = quern("help", "tasks", "bogus")
    assert rc == 2 and "no such command: tasks bogus\n" in err, err


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
