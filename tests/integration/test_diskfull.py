"""A full disk under quernd's data directory (a small tmpfs mounted by the
test; SQLite store): writes are refused with 507 `storage_full` and write
nothing, a run whose end could not be stored is not left `running` for ever
(its end is tried again and lands once space is freed), and quernd goes on.
Needs root to mount; without it the test says so and does nothing."""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests, wait_for  # noqa: E402

P = "/api/projects/default"


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_full_disk_refuses_writes_and_loses_no_run():
    mnt = tempfile.mkdtemp(prefix="quern-full-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt]).returncode != 0:
        print("  (not run: mounting a tmpfs needs root)")
        os.rmdir(mnt)
        return
    S = None
    try:
        data = os.path.join(mnt, "data")
        os.mkdir(data)
        S = Server(data=data, extra_args=["--store", "sqlite:" + os.path.join(data, "quern.db")])
        filler = expect(S.req("POST", P + "/tasks", {
            "code": 'dd if=/dev/zero of="$QUERN_STORAGE_PROJECT/fill" bs=1M count=100 2>&1 | tail -1',
            "runtime_id": "sh"}), 201)
        # full, not filling: below 1 MiB a create (~34 WAL pages) could still
        # fit while dd went on writing (a CI run got 201 there)
        wait_for(lambda: free_bytes(mnt) < (16 << 10), 60, "the disk to fill")
        r = S.req("POST", P + "/tasks", {"code": "echo hi", "runtime_id": "sh"})
        assert r.status == 507 and r.json["error"]["code"] == "storage_full", r
        assert r.json["error"]["type"] == "internal" and r.header("Retry-After"), r
        assert S.req("GET", "/healthz", key=None).status == 200
        # space comes back: the filler's end, refused while the disk was
        # full, is stored; the refused create wrote nothing
        for f in glob.glob(os.path.join(data, "storage", "**", "fill"), recursive=True):
            os.unlink(f)
        run = wait_for(lambda: (lambda x: x if x["status"] not in ("queued", "running") else None)(
            expect(S.req("GET", P + "/tasks/%s/runs" % filler["id"]), 200)["data"][0]), 60,
            "the filler's end to be stored")
        assert run["status"] == "completed", run
        assert [t["id"] for t in expect(S.req("GET", P + "/tasks"), 200)["data"]] == [filler["id"]]
        t = expect(S.req("POST", P + "/tasks", {"code": "echo after", "runtime_id": "sh",
                                                "wait_for_result": True}), 201)
        assert t["run"]["status"] == "completed", t
    finally:
        if S:
            S.stop()
        subprocess.run(["umount", mnt])
        shutil.rmtree(mnt, ignore_errors=True)


if __name__ == "__main__":
    run_tests(dict(globals()))
