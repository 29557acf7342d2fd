#!/bin/sh
# `make run`: starts quernd on 127.0.0.1:7070 with ./quern-data and says how to use it.
set -e
KEY_FILE=quern-data/root.key
mkdir -p quern-data
if [ ! -f "$KEY_FILE" ] && [ ! -f quern-data/quern.db ]; then
    # the key file alone is made under umask 077 (a subshell: quernd keeps the caller's)
    (umask 077 && printf 'qk_%s\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > "$KEY_FILE")
fi
KEY=$(cat "$KEY_FILE" 2>/dev/null || echo "(the key printed when quern-data was first created)")
cat <<TXT
quern is starting on http://127.0.0.1:7070 (data in ./quern-data, Ctrl-C to stop).

Root API key: $KEY   (also in $KEY_FILE, mode 0600)
Dashboard:    http://127.0.0.1:7070/  (sign in with the key)

Try:
  export QUERN_URL=http://127.0.0.1:7070 QUERN_KEY=$KEY
  curl -s -H "Authorization: Bearer \$QUERN_KEY" -d '{"name":"hello","assigned_agent_id":"me","run":true}' \\
       \$QUERN_URL/api/projects/default/tasks
  build/quern run --runtime python --code 'print("hello")' --wait
  build/quern tasks list
  build/quern --help
TXT
QUERN_BOOTSTRAP_KEY="$KEY" exec build/quernd --listen 127.0.0.1:7070 --data quern-data
