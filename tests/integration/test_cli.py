"""The quern CLI against a real quernd: tables and --json, exit codes a
script can trust, errors shown plainly, run --wait streaming the log, logs,
keys, definitions, schedules, and its documentation (help, man, completion)."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from qlib import BUILD, ROOT_KEY, Server, expect, run_tests  # noqa: E402

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


def test_man_pages_in_the_tree_are_current():
    # man/ is what `make man` makes from the binaries' own text; an option
    # added without `make man` left man/quernd.8 behind
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    rc, out, _ = quern("man")
    assert rc == 0 and out == open(os.path.join(root, "man", "quern.1")).read(), "run make man"
    out = subprocess.run([os.path.join(BUILD, "quernd"), "--man"], capture_output=True, text=True).stdout
    assert out == open(os.path.join(root, "man", "quernd.8")).read(), "run make man"


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
