#!/usr/bin/env bash
# The DeepNode demo: a three-node devnet on this machine, in a throwaway home folder.
# `dn devnet up --nodes 3` runs three validators in one process, with funded devnet wallets; we
# send DN between those wallets through different nodes, show that the three nodes agree, verify
# a node's chain from genesis, and stop the devnet with Ctrl-C. Everything binds to 127.0.0.1.
set -euo pipefail

WORK="$(mktemp -d "${TMPDIR:-/tmp}/deepnode-demo.XXXXXX")"
export DN_HOME="$WORK/home"
export DN_PASSWORD=devnet  # the devnet wallets' published password: devnet use only
BASE="$(python3 - <<'PY'
import socket
for _ in range(50):  # three consecutive free ports on 127.0.0.1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    try:
        for port in range(base, base + 3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    except OSError:
        continue
    if base + 2 <= 65535:
        print(base)
        break
PY
)"
URLS=("http://127.0.0.1:$BASE" "http://127.0.0.1:$((BASE + 1))" "http://127.0.0.1:$((BASE + 2))")
export DN_NODE="${URLS[0]}"
DEVNET_PID=""

cleanup() {
  if [ -n "$DEVNET_PID" ] && kill -0 "$DEVNET_PID" 2>/dev/null; then
    kill -INT "$DEVNET_PID"; wait "$DEVNET_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }

step "dn devnet up --nodes 3: three validators in one process, three funded wallets"
dn --json devnet up --nodes 3 --port-base "$BASE" > "$WORK/devnet.out" 2> "$WORK/devnet.log" &
DEVNET_PID=$!
for _ in $(seq 1 300); do
  [ -s "$WORK/devnet.out" ] && break
  kill -0 "$DEVNET_PID" 2>/dev/null || { cat "$WORK/devnet.log"; exit 1; }
  sleep 0.1
done
[ -s "$WORK/devnet.out" ] || { echo "the devnet did not come up:"; cat "$WORK/devnet.log"; exit 1; }
cat "$WORK/devnet.log"

step "The devnet wallets are ordinary wallets in this DN_HOME (balances from node 0)"
dn wallet list --balances

step "alice pays bob 12.5 DN through node 1, bob pays carol 2 DN through node 2, carol pays alice 0.25 DN through node 0"
dn --node "${URLS[1]}" wallet send devnet-alice devnet-bob 12.5
dn --node "${URLS[2]}" wallet send devnet-bob devnet-carol 2
dn --node "${URLS[0]}" wallet send devnet-carol devnet-alice 0.25

step "The three nodes agree: same height, tip and state root (dn --json node status on each)"
python3 - "${URLS[@]}" <<'PY'
import json, subprocess, sys, time
from rich.console import Console
from rich.table import Table

def status(url):
    done = subprocess.run(["dn", "--json", "--node", url, "node", "status"],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout)

deadline = time.monotonic() + 20
while True:
    rows = [status(url) for url in sys.argv[1:]]
    agree = len({(r["height"], r["tip"], r["state_root"]) for r in rows}) == 1
    if agree or time.monotonic() > deadline:
        break
    time.sleep(0.2)
table = Table("node", "height", "tip", "state root", "final", "role")
for i, r in enumerate(rows):
    role = "validator" if r["validator"] else "full node"
    table.add_row(f"devnet-{i}", str(r["height"]), r["tip"][:16] + "…",
                  r["state_root"][:16] + "…", str(r["final_height"]), role)
Console().print(table)
print("all three agree" if agree else "the nodes do not agree!")
sys.exit(0 if agree else 1)
PY

step "Balances, now asked of node 2 (fees: part burned, the rest to the block's proposer)"
dn --node "${URLS[2]}" wallet list --balances

step "The last blocks: the validators take turns"
dn chain blocks --limit 6

step "A mistake is caught, not sent: a mistyped address"
BOB="$(dn --json wallet show devnet-bob | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')"
TYPO="${BOB%?}$( [ "${BOB: -1}" = q ] && echo p || echo q )"
dn wallet send devnet-alice "$TYPO" 1 || echo "(refused, as it should be)"

step "Verify node 1's chain from genesis (its store, read-only): links, signatures, state roots, supply"
dn chain verify --name devnet-1
dn --node "${URLS[1]}" chain info

step "Ctrl-C the devnet"
kill -INT "$DEVNET_PID"
if wait "$DEVNET_PID"; then echo "devnet stopped cleanly (exit 0)"; else echo "devnet exit $?"; exit 1; fi
DEVNET_PID=""
