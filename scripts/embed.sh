#!/bin/sh
# Emits a C file embedding the dashboard's files (web/*) as byte arrays, so the
# binary serves its dashboard with no files beside it.  Uses od from coreutils.
echo '#include "web.h"'
i=0
for f in "$@"; do
    echo "static const unsigned char web_f$i[] = {"
    od -An -v -tx1 "$f" | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'
    echo "0};"
    i=$((i+1))
done
echo "const struct web_asset web_assets[] = {"
i=0
for f in "$@"; do
    n=$(basename "$f"); sz=$(wc -c < "$f" | tr -d ' ')
    echo "  {\"/$n\", web_f$i, $sz},"
    i=$((i+1))
done
echo "  {0, 0, 0}"
echo "};"
