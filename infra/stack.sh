#!/usr/bin/env bash
# The local stack's services: moto server (AWS) and localstripe (Stripe), on loopback.
#   infra/stack.sh start   start what is not running yet, wait until it answers
#   infra/stack.sh stop    stop what `start` started (by pid)
#   infra/stack.sh status  say what runs
#   infra/stack.sh functions   start `cargo lambda watch --only-lambda-apis` (the Lambda invoke API,
#                              Runtime API and Function URLs), two processes of every function
#                              binary behind it, and the local event-source mapper; needs `make up`
#   infra/stack.sh run CMD...  start what is missing, run CMD, then stop only what was started
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
MOTO_PORT=${MOTO_PORT:-4599}
STRIPE_PORT=${STRIPE_PORT:-8420}
LAMBDA_PORT=${LAMBDA_PORT:-9001}
# Pid files and logs; a stack on other ports keeps its own, so stopping one never stops another.
RUN=.local/run
if [ "$MOTO_PORT:$STRIPE_PORT:$LAMBDA_PORT" != "4599:8420:9001" ]; then
  RUN=.local/run/$MOTO_PORT-$STRIPE_PORT-$LAMBDA_PORT
fi
mkdir -p "$RUN"

answers() { curl -s -o /dev/null --max-time 2 "$1"; }
moto_url="http://127.0.0.1:${MOTO_PORT}/moto-api/"
stripe_url="http://127.0.0.1:${STRIPE_PORT}/v1/customers"

wait_for() { # name url pidfile
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null --max-time 2 -u sk_test_wait: "$2"; then return 0; fi
    if [ -f "$3" ] && ! kill -0 "$(cat "$3")" 2>/dev/null; then
      echo "$1 exited during start; see $RUN/$1.log" >&2; tail -20 "$RUN/$1.log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "$1 did not answer at $2 within 20 s; see $RUN/$1.log" >&2
  return 1
}

start_one() { # name url cmd...
  local name=$1 url=$2; shift 2
  if curl -s -o /dev/null --max-time 2 -u sk_test_wait: "$url"; then
    echo "$name already answers at $url"
    return 0
  fi
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  echo "started $name (pid $!)"
  wait_for "$name" "$url" "$RUN/$name.pid"
  echo "$name" >>"$RUN/started"
}

stop_one() { # name
  local pidfile="$RUN/$1.pid"
  if [ -f "$pidfile" ]; then
    local pid; pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      echo "stopped $1 (pid $pid)"
    fi
    rm -f "$pidfile"
  fi
}

start() {
  [ -x "$BIN/moto_server" ] || { echo "dev tools missing: run 'make setup'" >&2; exit 1; }
  # moto with Query reading one partition, as DynamoDB does (infra/moto_server.py).
  start_one moto "$moto_url" "$BIN/python3" infra/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT"
  # --from-scratch: never load a state file an earlier (possibly killed) run left behind.
  # localstripe with the Checkout Sessions it lacks (infra/localstripe_checkout.py).
  start_one localstripe "$stripe_url" "$BIN/python3" infra/localstripe_checkout.py --port "$STRIPE_PORT" --from-scratch
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

functions() {
  [ -f .local/stack.json ] || { echo ".local/stack.json missing: run 'make up' first" >&2; exit 1; }
  # The binaries `make test` builds (one feature set, nothing compiled twice); each function then
  # runs as its own processes against the Runtime API that `cargo lambda watch` serves.
  cargo build --quiet --workspace --bins --tests
  local lambda_url="http://127.0.0.1:${LAMBDA_PORT}"
  if ! listening "$LAMBDA_PORT"; then
    nohup "$BIN/cargo-lambda" lambda watch --only-lambda-apis -A 127.0.0.1 -P "$LAMBDA_PORT" \
      >"$RUN/lambda-watch.log" 2>&1 &
    echo $! >"$RUN/lambda-watch.pid"
    echo "started cargo lambda watch (Lambda API only) on $lambda_url (pid $!, log $RUN/lambda-watch.log)"
    for _ in $(seq 1 150); do listening "$LAMBDA_PORT" && break; sleep 0.2; done
  fi
  for dir in functions/*/; do
    local name; name=$(basename "$dir")
    for i in 1 2; do
      local pidfile="$RUN/fn-$name-$i.pid"
      if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then continue; fi
      (
        while IFS= read -r kv; do export "${kv?}"; done < <(target/debug/blapi-local env "$name")
        export AWS_LAMBDA_RUNTIME_API="$lambda_url/.rt/$name" AWS_LAMBDA_FUNCTION_NAME="$name" \
          AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256
        exec "target/debug/$name"
      ) >>"$RUN/functions.log" 2>&1 &
      echo $! >"$pidfile"
    done
    echo "started $name (2 processes, log $RUN/functions.log)"
  done
  if ! { [ -f "$RUN/mapper.pid" ] && kill -0 "$(cat "$RUN/mapper.pid")" 2>/dev/null; }; then
    nohup target/debug/blapi-local map --lambda "$lambda_url" >"$RUN/mapper.log" 2>&1 &
    echo $! >"$RUN/mapper.pid"
    echo "started the event-source mapper (pid $!, log $RUN/mapper.log)"
  fi
}

stop() {
  for pidfile in "$RUN"/fn-*.pid; do [ -e "$pidfile" ] && stop_one "$(basename "$pidfile" .pid)"; done
  for name in lambda-watch mapper localstripe moto; do stop_one "$name"; done
  rm -f "$RUN/started"
}

case "${1:-}" in
  start) start ;;
  functions) functions ;;
  stop) stop ;;
  status)
    answers "$moto_url" && echo "moto: up at http://127.0.0.1:${MOTO_PORT}" || echo "moto: down"
    curl -s -o /dev/null --max-time 2 -u sk_test_x: "$stripe_url" && echo "localstripe: up at http://127.0.0.1:${STRIPE_PORT}" || echo "localstripe: down"
    ;;
  run)
    shift
    rm -f "$RUN/started"
    start
    started=$(cat "$RUN/started" 2>/dev/null || true)
    cleanup() { for name in $started; do stop_one "$name"; done; }
    trap cleanup EXIT
    "$@"
    ;;
  *) echo "usage: $0 start|stop|status|run CMD..." >&2; exit 2 ;;
esac
