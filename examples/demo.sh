#!/usr/bin/env bash
# The DeepNode demo: a real single-validator chain on this machine, in a throwaway home folder.
# Creates two wallets, funds one at genesis, sends DN between them, shows balances and blocks,
# verifies the chain from genesis, and stops the node. Everything binds to 127.0.0.1.
set -euo pipefail

export DN_HOME="$(mktemp -d "${TMPDIR:-/tmp}/deepnode-demo.XXXXXX")"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export DN_NODE="http://127.0.0.1:$PORT"
PWFILE="$DN_HOME/demo-password"
NODE_PID=""

cleanup() {
  if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -INT "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$DN_HOME"
}
trap cleanup EXIT

step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }

mkdir -p "$DN_HOME" && printf 'demo-password\n' > "$PWFILE" && chmod 600 "$PWFILE"

step "Two wallets (devnet KDF setting, password from a file)"
dn wallet create alice --kdf fast --password-file "$PWFILE"
dn wallet create bob --kdf fast --password-file "$PWFILE"

step "A dev chain: this node is the only validator; alice gets 1000 DN at genesis"
dn chain init --dev --alloc alice=1000 --block-time-ms 500

step "Start the node on 127.0.0.1:$PORT"
dn node start --port "$PORT" 2> "$DN_HOME/node.log" &
NODE_PID=$!
for _ in $(seq 1 100); do
  dn node status >/dev/null 2>&1 && break
  sleep 0.1
done
dn node status

step "alice sends bob 12.5 DN, then 0.25 DN; bob sends 1 DN back"
dn wallet send alice bob 12.5 --password-file "$PWFILE"
dn wallet send alice bob 0.25 --password-file "$PWFILE"
dn wallet send bob alice 1 --password-file "$PWFILE"

step "Balances (fees: part burned, the rest to the block proposer)"
dn wallet list --balances

step "The last blocks"
dn chain blocks --limit 5

step "A mistake is caught, not sent: a mistyped address"
BOB="$(dn --json wallet show bob | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')"
TYPO="${BOB%?}$( [ "${BOB: -1}" = q ] && echo p || echo q )"
dn wallet send alice "$TYPO" 1 --password-file "$PWFILE" || echo "(refused, as it should be)"

step "Verify the whole chain from genesis: links, signatures, state roots, supply"
dn chain verify
dn chain info

step "Stop the node"
kill -INT "$NODE_PID"; wait "$NODE_PID" && echo "node stopped cleanly"
NODE_PID=""
