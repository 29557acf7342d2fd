"""Artifacts: byte-exact round trips (base64, text, raw upload), the manifest,
authenticated download, presigned URLs (no key; tamper and expiry → 403),
and files left by code in QUERN_ARTIFACTS."""
import base64
import hashlib
import json
import os
import sys
import time
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests, wait_for  # noqa: E402

S = Server()
P = "/api/projects/default"


def run_base():
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "art", "run": True}), 201)
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    return P + "/tasks/%s/runs/%s" % (t["id"], run["id"])


def get_raw(path, key=True):
    c = S.conn()
    h = {"Authorization": "Bearer qk_root_test_key_0123456789"} if key else {}
    c.request("GET", path, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data, r


def test_base64_roundtrip_is_byte_exact():
    base = run_base()
    blob = bytes(range(256)) * 300
    out = expect(S.req("POST", base + "/artifacts", {"artifacts": [
        {"name": "bin.dat", "content_base64": base64.b64encode(blob).decode()},
        {"name": "notes/readme.txt", "content": "héllo\n", "content_type": "text/plain"}]}), 200)
    m = {a["name"]: a for a in out["data"]}
    assert m["bin.dat"]["size"] == len(blob)
    assert m["bin.dat"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert m["bin.dat"]["storage_path"].endswith("/bin.dat")
    st, data, _ = get_raw(base + "/artifacts/content?name=bin.dat")
    assert st == 200 and data == blob
    st, data, r = get_raw(base + "/artifacts/content?name=notes%2Freadme.txt")
    assert st == 200 and data == "héllo\n".encode() and r.getheader("Content-Type") == "text/plain"
    run = expect(S.req("GET", base), 200)
    assert sorted(a["name"] for a in run["artifacts"]) == ["bin.dat", "notes/readme.txt"]
    lst = expect(S.req("GET", base + "/artifacts"), 200)["data"]
    assert len(lst) == 2
    # a list like every list: newest first, paged, with has_more and total
    page = expect(S.req("GET", base + "/artifacts?limit=1"), 200)
    assert [a["name"] for a in page["data"]] == ["notes/readme.txt"], page
    assert page["has_more"] is True and page["total"] == 2, page
    page = expect(S.req("GET", base + "/artifacts?limit=1&offset=1"), 200)
    assert [a["name"] for a in page["data"]] == ["bin.dat"] and page["has_more"] is False, page
    assert S.req("GET", base + "/artifacts?offset=-1").status == 400


def test_raw_upload():
    base = run_base()
    payload = os.urandom(100000)
    c = S.conn()
    c.request("POST", base + "/artifacts?name=raw.bin", body=payload,
              headers={"Authorization": "Bearer qk_root_test_key_0123456789",
                       "Content-Type": "application/octet-stream"})
    r = c.getresponse()
    assert r.status == 200, r.read()
    r.read()
    st, data, _ = get_raw(base + "/artifacts/content?name=raw.bin")
    assert data == payload


def test_bad_artifacts_are_400():
    base = run_base()
    for arts, param in [([{"name": "../x", "content": "a"}], "artifacts[0].name"),
                        ([{"name": "a"}], "artifacts[0].content"),
                        ([{"name": "a", "content": "x", "content_base64": "eA=="}], "artifacts[0].content"),
                        ([{"name": "a", "content_base64": "!!"}], "artifacts[0].content_base64"),
                        # a content type is a header when served: a line break
                        # in it was stored in the manifest as given
                        ([{"name": "a", "content": "x", "content_type": "text/plain\r\nX-Evil: 1"}],
                         "artifacts[0].content_type"),
                        ([{"name": "a", "content": "x", "content_type": ""}], "artifacts[0].content_type"),
                        ([], "artifacts")]:
        r = S.req("POST", base + "/artifacts", {"artifacts": arts})
        assert r.status == 400 and r.json["error"]["param"] == param, (arts, r)
    assert expect(S.req("GET", base + "/artifacts"), 200)["total"] == 0
    ok = expect(S.req("POST", base + "/artifacts", {"artifacts": [
        {"name": "a", "content": "x", "content_type": "text/plain; charset=utf-8"}]}), 200)
    assert ok["data"][0]["content_type"] == "text/plain; charset=utf-8", ok


def raw_upload(base, name, body, ctype):
    c = S.conn()
    h = {"Authorization": "Bearer qk_root_test_key_0123456789"}
    if ctype is not None:
        h["Content-Type"] = ctype
    c.request("POST", base + "/artifacts?name=" + name, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def test_raw_upload_content_type_follows_the_json_rule():
    # a raw upload's Content-Type became the artifact's as sent (a control
    # character included, served back as a header; an empty one stored as "")
    base = run_base()
    st, data = raw_upload(base, "r.html", b"<b>x</b>", "text/html\x01x")
    assert st == 400, data
    err = json.loads(data)["error"]
    assert err["code"] == "invalid_value" and err["param"] == "Content-Type", err
    st, data = raw_upload(base, "r.html", b"<b>x</b>", "")
    assert st == 200, data
    assert expect(S.req("GET", base), 200)["artifacts"][0]["content_type"] == "text/html"
    st, data = raw_upload(base, "r.bin", b"x", "application/x-thing; v=1")
    assert st == 200, data
    assert [a["content_type"] for a in expect(S.req("GET", base), 200)["artifacts"]] == [
        "text/html", "application/x-thing; v=1"]


def test_a_name_given_again_replaces_and_counts_once():
    # a name given again replaces its artifact (the last of one request wins);
    # the limit of 1000 counted the artifact being replaced as one more, so
    # a run at the limit could not replace any of its artifacts
    base = run_base()
    out = expect(S.req("POST", base + "/artifacts", {"artifacts": [
        {"name": "d", "content": "one"}, {"name": "d", "content": "two"}]}), 200)
    assert [(a["name"], a["size"]) for a in out["data"]] == [("d", 3)], out
    st, data, _ = get_raw(base + "/artifacts/content?name=d")
    assert data == b"two"
    for k in range(10):
        expect(S.req("POST", base + "/artifacts", {"artifacts": [
            {"name": "n%d-%d" % (k, i), "content": "x"} for i in range(100 - (k == 0))]}), 200)
    assert expect(S.req("GET", base + "/artifacts"), 200)["total"] == 1000
    expect(S.req("POST", base + "/artifacts", {"artifacts": [{"name": "d", "content": "three"},
                                                              {"name": "n5-5", "content": "yy"}]}), 200)
    st, data, _ = get_raw(base + "/artifacts/content?name=d")
    assert data == b"three"
    r = S.req("POST", base + "/artifacts", {"artifacts": [{"name": "one-more", "content": "x"}]})
    assert r.status == 400 and r.json["error"]["code"] == "artifact_limit", r
    assert expect(S.req("GET", base + "/artifacts"), 200)["total"] == 1000


def test_every_artifact_has_an_art_id_kept_when_replaced():
    # API.md lists art_ among the id prefixes; the manifest entries had no id
    base = run_base()
    out = expect(S.req("POST", base + "/artifacts", {"artifacts": [
        {"name": "a.txt", "content": "one"}, {"name": "b.txt", "content": "two"}]}), 200)
    ids = {a["name"]: a["id"] for a in out["data"]}
    assert all(i.startswith("art_") for i in ids.values()) and len(set(ids.values())) == 2, out
    run = expect(S.req("GET", base), 200)
    assert {a["name"]: a["id"] for a in run["artifacts"]} == ids, run["artifacts"]
    assert {a["name"]: a["id"] for a in expect(S.req("GET", base + "/artifacts"), 200)["data"]} == ids
    # a name given again is the same artifact with new bytes: it keeps its id
    again = expect(S.req("POST", base + "/artifacts", {"artifacts": [{"name": "a.txt", "content": "1"}]}), 200)
    assert {a["name"]: (a["id"], a["size"]) for a in again["data"]} == {
        "a.txt": (ids["a.txt"], 1), "b.txt": (ids["b.txt"], 3)}, again
    # files left by code get one too, and the artifact event carries it
    t = expect(S.req("POST", P + "/tasks", {"code": 'printf x > "$QUERN_ARTIFACTS/c.txt"',
                                            "wait_for_result": True}), 201)
    art = t["run"]["artifacts"][0]
    assert art["id"].startswith("art_"), art
    evs = expect(S.req("GET", P + "/tasks/%s/runs/%s/session_logs?event_types=task_run.artifact"
                       % (t["id"], t["run"]["id"])), 200)
    assert [e["data"]["id"] for e in evs] == [art["id"]], evs


def test_presigned_url_needs_no_key_and_refuses_tampering():
    base = run_base()
    expect(S.req("POST", base + "/artifacts", {"artifacts": [{"name": "p.txt", "content": "secret"}]}), 200)
    path = expect(S.req("GET", base), 200)["artifacts"][0]["storage_path"]
    ps = expect(S.req("POST", base + "/artifacts/presign", {"storage_path": path, "expires_in": 60}), 200)
    assert ps["url"].startswith("/artifacts/") and ps["expires_at"]
    st, data, _ = get_raw(ps["url"], key=False)
    assert st == 200 and data == b"secret"
    for bad in (ps["url"].replace("p.txt", "q.txt"),
                ps["url"][:-1] + ("0" if not ps["url"].endswith("0") else "1"),
                ps["url"].replace("expires=", "expires=9")):
        st, _, _ = get_raw(bad, key=False)
        assert st == 403, bad
    assert S.req("POST", base + "/artifacts/presign", {"storage_path": path, "expires_in": 8 * 86400}).status == 400
    assert S.req("POST", base + "/artifacts/presign", {"storage_path": "runs/x/none"}).status == 404
    short = expect(S.req("POST", base + "/artifacts/presign", {"storage_path": path, "expires_in": 1}), 200)
    time.sleep(2.1)   # let the one-second link expire
    st, _, _ = get_raw(short["url"], key=False)
    assert st == 403


def test_a_presigned_url_dies_with_the_key_that_made_it():
    base = run_base()
    expect(S.req("POST", base + "/artifacts", {"artifacts": [{"name": "k.txt", "content": "kept"}]}), 200)
    path = expect(S.req("GET", base), 200)["artifacts"][0]["storage_path"]
    k = expect(S.req("POST", P + "/api_keys", {"name": "linker", "scopes": ["task:write"]}), 201)
    ps = expect(S.req("POST", base + "/artifacts/presign", {"storage_path": path}, key=k["key"]), 200)
    st, data, _ = get_raw(ps["url"], key=False)
    assert st == 200 and data == b"kept"
    # naming another key (or dropping it) breaks the signature
    for bad in (ps["url"].replace("key=" + k["id"], "key=key_other"),
                ps["url"].replace("&key=" + k["id"], "").replace("&kp=default", "")):
        st, _, _ = get_raw(bad, key=False)
        assert st == 403, bad
    expect(S.req("DELETE", P + "/api_keys/" + k["id"]), 200)
    st, data, r = get_raw(ps["url"], key=False)
    assert st == 403 and b"link_revoked" in data, (st, data)
    # a root key's link works as any other
    ps = expect(S.req("POST", base + "/artifacts/presign", {"storage_path": path}), 200)
    assert get_raw(ps["url"], key=False)[0] == 200


def test_code_artifacts_land_in_the_store():
    t = expect(S.req("POST", P + "/tasks", {
        "code": 'printf "abc" > "$QUERN_ARTIFACTS/out.txt"; ln -s /etc/passwd "$QUERN_ARTIFACTS/link"',
        "wait_for_result": True}), 201)
    run = t["run"]
    assert run["status"] == "completed", run
    names = [a["name"] for a in run["artifacts"]]
    assert names == ["out.txt"], names          # the symlink was not followed
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    st, data, _ = get_raw(base + "/artifacts/content?name=out.txt")
    assert data == b"abc"


def test_retries_keep_earlier_artifacts_within_the_run_limit():
    # a retry runs in the same run, which keeps the earlier attempts'
    # artifacts; each attempt was held to 1000 files alone, so two attempts
    # of 600 files each left 1200 on one run
    t = expect(S.req("POST", P + "/tasks", {"settings": {"max_retries": 1, "retry_delay_ms": 10,
                                                         "timeout_ms": 120000}, "code": """
cd "$QUERN_ARTIFACTS" && for i in $(seq 1 600); do echo "$QUERN_ATTEMPT" > "a$QUERN_ATTEMPT-$i"; done
echo "$QUERN_ATTEMPT" > same.txt
exit 1"""}), 201)
    base = P + "/tasks/%s/runs/" % t["id"]
    run = wait_for(lambda: [r for r in expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]
                            if r["status"] == "failed"], 120, "the second attempt to fail")[0]
    assert run["attempt"] == 2, run["attempt"]
    names = {a["name"] for a in run["artifacts"]}
    assert len(names) == 1000, len(names)
    assert sum(n.startswith("a1-") for n in names) == 600 and "same.txt" in names, sorted(names)[:5]
    assert sum(n.startswith("a2-") for n in names) == 399, sorted(names)[-5:]
    st, data, _ = get_raw(base + run["id"] + "/artifacts/content?name=same.txt")
    assert data == b"2\n", data
    warns = [json.loads(x)["message"] for x in
             S.req("GET", base + run["id"] + "/logs").text.split("\n") if x]
    warns = [m for m in warns if m.startswith("artifacts not stored")]
    assert len(warns) == 1 and "201 files" in warns[0], warns


def test_a_code_artifact_name_not_utf8_is_skipped_with_a_warning():
    # such a name passed the name check, then could not be put in the
    # manifest: the file was dropped without the warning the others get
    t = expect(S.req("POST", P + "/tasks", {"wait_for_result": True, "code":
        'printf x > "$QUERN_ARTIFACTS/$(printf \'bad\\377name\')"; printf y > "$QUERN_ARTIFACTS/ok.txt"'}), 201)
    run = t["run"]
    assert run["status"] == "completed" and [a["name"] for a in run["artifacts"]] == ["ok.txt"], run
    msgs = [json.loads(x)["message"] for x in S.req(
        "GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], run["id"])).text.split("\n") if x]
    assert any(m.startswith("artifacts not stored: 1 names an upload could not have") for m in msgs), msgs


def test_downloads_are_inert_and_name_their_file():
    # by key and by presigned URL: nosniff, a sandbox CSP and attachment, so
    # an HTML or SVG artifact never runs script in quernd's origin; the file
    # name is the name's last part, quoted so that a hostile name cannot end
    # the parameter (it was a bare "attachment": the browser saved
    # "content" or the run id)
    base = run_base()
    name = 'dir/q"x y;\u00e9.html'
    expect(S.req("POST", base + "/artifacts", {"artifacts": [
        {"name": name, "content": "<script>alert(1)</script>", "content_type": "text/html"}]}), 200)
    path = expect(S.req("GET", base), 200)["artifacts"][0]["storage_path"]
    url = expect(S.req("POST", base + "/artifacts/presign", {"storage_path": path}), 200)["url"]
    for target, key in ((base + "/artifacts/content?name=" + quote(name, safe=""), True), (url, False)):
        st, data, r = get_raw(target, key=key)
        assert st == 200 and data == b"<script>alert(1)</script>", (st, data)
        assert r.getheader("X-Content-Type-Options") == "nosniff"
        assert r.getheader("Content-Security-Policy") == "sandbox"
        assert r.getheader("Content-Type") == "text/html"
        assert r.getheader("Content-Disposition") == (
            "attachment; filename=\"q_x y;__.html\"; filename*=UTF-8''q%22x%20y%3B%C3%A9.html"), \
            r.getheader("Content-Disposition")


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
