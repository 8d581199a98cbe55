#!/usr/bin/env bash
# The main job on the embedded default: build Haven, create a local repository and a demo folder in
# ./demo, and run the daemon on examples/demo.yml — it backs the folder up every 30 s and on every change,
# with the HTTP API on 127.0.0.1:8470. Ctrl-C stops it (a running backup resumes at the next start).
# DEMO_SECONDS=N stops it after N seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --static-swift-stdlib --product haven
HAVEN="$PWD/.build/release/haven"
export HAVEN_DEMO="$PWD/demo"
mkdir -p demo
[ -f demo/password ] || head -c 24 /dev/urandom | base64 > demo/password
if [ ! -d demo/source ]; then
  mkdir -p demo/source/docs demo/source/photos
  echo "Haven keeps this safe." > demo/source/docs/hello.txt
  seq 1 200000 > demo/source/docs/numbers.txt
  head -c 3000000 /dev/urandom > demo/source/photos/picture.raw
fi
[ -f demo/repository/config ] || "$HAVEN" init -r demo/repository --password-file demo/password
"$HAVEN" config check --config examples/demo.yml
"$HAVEN" daemon --config examples/demo.yml &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon' INT TERM EXIT
# Show the first backup through the API, as a supervisor would see it.
for _ in $(seq 1 60); do
  "$HAVEN" status --server http://127.0.0.1:8470 >/dev/null 2>&1 && break
  sleep 0.5
done
"$HAVEN" run demo-folder --server http://127.0.0.1:8470 || true
sleep 3
"$HAVEN" status --server http://127.0.0.1:8470
cat <<MSG

The daemon is running (pid $daemon). Try, in another terminal:
  echo hi > demo/source/docs/new.txt          # a backup follows within seconds
  $HAVEN status --server http://127.0.0.1:8470
  curl -s http://127.0.0.1:8470/metrics
  $HAVEN -r demo/repository --password-file demo/password snapshots
Ctrl-C stops it.
MSG
if [ -n "${DEMO_SECONDS:-}" ]; then sleep "$DEMO_SECONDS"; else wait $daemon; fi
