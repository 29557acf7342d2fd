"""The dashboard's browser tests (tests/browser/dashboard.test.mjs): Debian's
chromium driven by playwright-core against a real quernd.  This wrapper lets
tests/runner.py run them; it passes the node program's "N passed, M failed"
line through.  Skips (printing "0 passed, 0 failed") only when chromium is not
installed; playwright-core is installed from tests/browser/package-lock.json
when missing (npm registry only, never a browser download)."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
CHROMIUM = os.environ.get("QUERN_CHROMIUM", "/usr/bin/chromium")


def main():
    if not os.access(CHROMIUM, os.X_OK):
        print("SKIP test_dashboard: %s is not installed (apt-get install chromium)" % CHROMIUM)
        print("0 passed, 0 failed")
        return 0
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node:
        print("FAIL test_dashboard: node is not installed (apt-get install nodejs npm)")
        print("0 passed, 1 failed")
        return 1
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        if not npm:
            print("FAIL test_dashboard: playwright-core missing and npm not installed")
            print("0 passed, 1 failed")
            return 1
        env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
        r = subprocess.run([npm, "ci", "--prefix", BROWSER_DIR, "--no-audit", "--no-fund"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            print("FAIL test_dashboard: npm ci --prefix tests/browser failed")
            print("0 passed, 1 failed")
            return 1
    env = dict(os.environ)
    env.setdefault("QUERN_BUILD", os.environ.get("QUERN_BUILD", "build"))
    p = subprocess.run([node, os.path.join(BROWSER_DIR, "dashboard.test.mjs")], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    sys.stdout.write(p.stdout)
    sys.stdout.flush()
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
