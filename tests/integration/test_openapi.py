"""GET /openapi.json is valid OpenAPI 3.1 (checked by swagger-parser from npm,
installed by make deps into tests/openapi) and describes every route of the
server, with the main objects' schemas."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests  # noqa: E402

S = Server(extra_args=["--slots", "-1"])
HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "..", "openapi")


def test_document_is_valid_openapi_31():
    doc = expect(S.req("GET", "/openapi.json", key=None), 200)
    assert doc["openapi"] == "3.1.0"
    if not os.path.isdir(os.path.join(CHECKER, "node_modules", "@apidevtools")):
        subprocess.run(["npm", "ci", "--prefix", CHECKER, "--no-audit", "--no-fund"], check=True,
                       capture_output=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(doc, f)
    p = subprocess.run([shutil.which("node") or "node", os.path.join(CHECKER, "validate.mjs"), f.name],
                       capture_output=True, text=True, timeout=120)
    os.unlink(f.name)
    assert p.returncode == 0 and p.stdout.startswith("valid 3.1"), p.stdout + p.stderr


def test_every_route_and_the_main_schemas():
    doc = expect(S.req("GET", "/openapi.json", key=None), 200)
    paths = doc["paths"]
    for path, method in [("/api/projects/{project_id}/tasks", "post"),
                         ("/api/projects/{project_id}/tasks/batch", "post"),
                         ("/api/projects/{project_id}/tasks/{task_id}/runs/{id}/stream", "get"),
                         ("/api/projects/{project_id}/workers/lease", "post"),
                         ("/api/projects/{project_id}/webhooks", "post"),
                         ("/hooks/{trigger_id}", "post"),
                         ("/healthz", "get")]:
        assert method in paths.get(path, {}), (path, method)
    create = paths["/api/projects/{project_id}/tasks"]["post"]["responses"]["201"]
    assert create["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Task"
    lst = paths["/api/projects/{project_id}/tasks"]["get"]["responses"]["200"]
    assert lst["content"]["application/json"]["schema"]["properties"]["data"]["items"]["$ref"].endswith("/Task")
    for name in ("Task", "Run", "Event", "Error", "Project", "ApiKey", "Definition"):
        assert name in doc["components"]["schemas"], name
    assert paths["/healthz"]["get"]["security"] == []


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
