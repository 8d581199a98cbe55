#!/usr/bin/env bash
# The main job on the embedded default: build Haven, create a local repository in ./demo, back up a
# demo folder, list snapshots, back up again (nothing changed), and restore.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release
HAVEN=.build/release/haven
mkdir -p demo
export HAVEN_REPOSITORY="$PWD/demo/repository"
export HAVEN_PASSWORD_FILE="$PWD/demo/password"
[ -f "$HAVEN_PASSWORD_FILE" ] || head -c 24 /dev/urandom | base64 > "$HAVEN_PASSWORD_FILE"
if [ ! -d demo/source ]; then
  mkdir -p demo/source/docs demo/source/photos
  echo "Haven keeps this safe." > demo/source/docs/hello.txt
  seq 1 200000 > demo/source/docs/numbers.txt
  head -c 3000000 /dev/urandom > demo/source/photos/picture.raw
fi
[ -f "$HAVEN_REPOSITORY/config" ] || $HAVEN init
$HAVEN backup demo/source --tag demo
$HAVEN backup demo/source --tag demo
$HAVEN snapshots
rm -rf demo/restored
$HAVEN restore latest --target demo/restored
$HAVEN check --read-data
diff -r demo/source "demo/restored$PWD/demo/source" && echo "restored copy in demo/restored matches demo/source"
