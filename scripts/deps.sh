#!/bin/sh
# Installs every Debian package quern's build, tests and `make run` need.
# Idempotent: when everything is present it does nothing (and needs no network).
set -e
PKGS="build-essential pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev
libssl-dev libcurl4-openssl-dev libseccomp-dev libpq-dev python3 curl
postgresql tzdata"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
