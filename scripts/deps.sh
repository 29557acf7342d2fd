#!/bin/sh
# Installs every Debian package quern's build, tests and `make run` need.
# Idempotent: when everything is present it does nothing (and needs no network).
# slirp4netns: the user-mode NAT of code runs with network (src/sandbox.c).
# clang, libclang-rt-dev: the libFuzzer targets (tests/fuzz/, `make test-fuzz`).
# openssl: the command, for the signed-trigger example of docs/HOOKS.md (test_docs.py).
set -e
PKGS="build-essential pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev
libssl-dev libcurl4-openssl-dev libseccomp-dev libpq-dev libjemalloc-dev python3 curl
postgresql tzdata chromium slirp4netns clang libclang-rt-dev openssl"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# The ts runtime strips types with sucrase (pure JS; node 20 has no
# --experimental-strip-types).  Installed into vendor/, mounted read-only in
# the sandbox.  Needs node and npm (the machine's, or Debian's nodejs/npm).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "deps: installing nodejs npm"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -d vendor/node_modules/sucrase ]; then
    echo "deps: npm install sucrase into vendor/"
    npm install --prefix vendor --no-save --no-audit --no-fund --loglevel=error sucrase@3 >/dev/null
fi

# The dashboard's browser tests drive Debian's chromium with playwright-core
# (the npm package only: it never downloads a browser).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "deps: npm ci playwright-core into tests/browser/"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
fi
# The OpenAPI document is validated by swagger-parser (npm) in the tests, and
# ajv is the reference the JSON Schema validator is checked against
# (tests/schema/ajv_cases.mjs, make test-schema-ajv).
if [ ! -d tests/openapi/node_modules/@apidevtools/swagger-parser ] || [ ! -d tests/openapi/node_modules/ajv ]; then
    echo "deps: npm ci swagger-parser and ajv into tests/openapi/"
    npm ci --prefix tests/openapi --no-audit --no-fund --loglevel=error >/dev/null
fi
