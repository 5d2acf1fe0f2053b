"""Chain ingest and CLI start-up, each as a ratio to a baseline timed in the same run.

Ingest: signed transfers are submitted over HTTP to a real `dn node start` process, one per
request and in batches (POST /dn/v1/txs takes a JSON list), and counted once the node's own block
producer has put them in blocks. The baseline is a bare PyNaCl `VerifyKey.verify` loop over the
same signing bytes on one core: signature checking is the one cost a node cannot avoid, so the
ratio says how much of the machine the rest of the node (HTTP, parsing, state, SQLite) leaves.
Target: batches at >= 0.25 of the verify loop.

Start-up: wall time of `dn --help` and `dn wallet list` against a two-command Typer app that does
nothing, run by the same interpreter. Target: <= 1.5x, which holds only while heavy imports
(FastAPI, uvicorn, llama_cpp, zeroconf) stay out of start-up.

Numbers are printed, never asserted: the script exits 0 whether targets are met or not.

    .venv/bin/python bench/chain_ingest.py [--single N] [--batch-total N] [--batch-size N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from nacl.signing import VerifyKey

from dn.chain.genesis import default_params
from dn.chain.types import Tx
from dn.client.http import NodeClient
from dn.encoding import pubkey_from_address
from dn.node.node import Node, NodeHome
from dn.node.setup import init_dev_chain
from dn.wallet.keys import Keypair
from dn.wallet.keystore import KDF_FAST, Keystore

T = TypeVar("T")

INGEST_TARGET = 0.25  # batch tx/s over verify/s, at least
STARTUP_TARGET = 1.5  # dn wall time over the bare Typer app's, at most
HEAVY_MODULES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "llama_cpp",
    "zeroconf",
    "httpx",
    "pydantic",
    "numpy",
    "sqlite_utils",
)
FEE = 1_000
AMOUNT = 1
NODE_NAME = "bench"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- a node process ---------------------------------------------------------------------------
# A few lines in the manner of tests/functional/harness.py, kept here so bench/ does not import
# the test tree.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, interval: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - a node still starting raises; keep polling
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}: {last_error}")


class NodeProcess:
    """`dn node start` as a child process in its own session, killed by its pid."""

    def __init__(self, dn_home: Path, name: str) -> None:
        self.dn_home = dn_home
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = dn_home / f"node-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "DN_HOME": str(self.dn_home), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dn",
                    "node",
                    "start",
                    "--name",
                    self.name,
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with NodeClient(self.url, timeout=5) as client:
            wait_until(lambda: self.check() and client.status(), timeout, 0.1, f"{self.url} up")

    def check(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the node exited early:\n{self.log_tail()}")
        return True

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


# --- transactions -----------------------------------------------------------------------------


@dataclass
class Workload:
    senders: list[Keypair]
    recipient: str
    chain_id: str


def sign_transfers(work: Workload, next_nonce: dict[str, int], count: int) -> list[Tx]:
    """`count` transfers, round-robin over the senders, each at its sender's next nonce.

    Round-robin keeps each sender's chain of nonces short within any prefix of the list, and
    `next_nonce` (updated here) carries on from an earlier list without a gap, so the mempool
    (which refuses nonce gaps) accepts every transfer in the order it is sent.
    """
    txs = []
    for i in range(count):
        sender = work.senders[i % len(work.senders)]
        nonce = next_nonce.get(sender.address, 0)
        next_nonce[sender.address] = nonce + 1
        txs.append(
            Tx.create(
                sender,
                chain_id=work.chain_id,
                kind="transfer",
                nonce=nonce,
                fee=FEE,
                payload={"to": work.recipient, "amount": AMOUNT},
            )
        )
    return txs


def verify_loop(txs: list[Tx], runs: int = 3, seconds: float = 0.5) -> list[float]:
    """Verifies per second of a bare `VerifyKey.verify` loop on one core, `runs` times."""
    keys = {tx.sender: VerifyKey(pubkey_from_address(tx.sender)) for tx in txs}
    items = [(keys[tx.sender], tx.signing_bytes(), tx.sig) for tx in txs]
    saved: set[int] = set()
    if hasattr(os, "sched_getaffinity"):
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(saved)})
    try:
        rates = []
        for _ in range(runs):
            done = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                for key, message, sig in items:
                    key.verify(message, sig)
                done += len(items)
            rates.append(done / (time.perf_counter() - start))
    finally:
        if saved:
            os.sched_setaffinity(0, saved)
    return rates


# --- ingest -----------------------------------------------------------------------------------


def wait_included(client: NodeClient, last_id: str, timeout: float) -> float:
    """Poll until the mempool is empty and `last_id` is in a block; the time that happened."""

    def done() -> bool:
        if client.status()["mempool"]:
            return False
        return bool(client.tx(last_id)["status"] == "included")

    wait_until(done, timeout, 0.05, f"transaction {last_id[:12]} to be included")
    return time.perf_counter()


def ingest(
    node: NodeProcess,
    txs: list[Tx],
    batch_size: int | None,
    timeout: float,
) -> dict[str, Any]:
    """Submit `txs` one per request (batch_size None) or in lists; time until all are in blocks."""
    if batch_size is None:
        bodies = [json.dumps(tx.to_json()).encode() for tx in txs]
    else:
        bodies = [
            json.dumps([tx.to_json() for tx in txs[i : i + batch_size]]).encode()
            for i in range(0, len(txs), batch_size)
        ]
    headers = {"content-type": "application/json"}
    accepted = 0
    last_accepted = ""
    reasons: dict[str, int] = {}
    with (
        httpx.Client(base_url=node.url, timeout=120) as http,
        NodeClient(node.url, timeout=30) as client,
    ):
        height_before = client.status()["height"]
        start = time.perf_counter()
        for body in bodies:
            response = http.post("/dn/v1/txs", content=body, headers=headers)
            if response.status_code >= 500:
                node.check()
                raise RuntimeError(f"node answered {response.status_code}: {response.text[:300]}")
            data = response.json()
            if batch_size is None:
                if response.status_code == 200 and data.get("id"):
                    accepted += 1
                    last_accepted = data["id"]
                else:
                    reason = str(data.get("reason"))
                    reasons[reason] = reasons.get(reason, 0) + 1
            else:
                accepted += int(data["accepted"])
                for result in data["results"]:
                    if result["accepted"]:
                        last_accepted = result["id"]
                    else:
                        reason = str(result.get("reason"))
                        reasons[reason] = reasons.get(reason, 0) + 1
        submitted = time.perf_counter()
        if not last_accepted:
            raise RuntimeError(f"the node accepted none of {len(txs)} transfers: {reasons}")
        finished = wait_included(client, last_accepted, timeout)
        height_after = client.status()["height"]
    elapsed = finished - start
    return {
        "txs": len(txs),
        "requests": len(bodies),
        "batch_size": batch_size or 1,
        "accepted": accepted,
        "rejected": reasons,
        "submit_s": submitted - start,
        "elapsed_s": elapsed,
        "submit_tx_per_s": accepted / (submitted - start),
        "included_tx_per_s": accepted / elapsed,
        "blocks": height_after - height_before,
    }


def confirmed_nonces(node: NodeProcess, senders: list[Keypair]) -> int:
    """Transactions from `senders` in blocks at the tip: the sum of their account nonces."""
    with NodeClient(node.url, timeout=30) as client:
        return sum(client.account(k.address)["nonce"] for k in senders)


def run_ingest(args: argparse.Namespace, dn_home: Path) -> dict[str, Any]:
    senders = [Keypair.generate() for _ in range(args.senders)]
    recipient = Keypair.generate().address
    rounds = -(-(args.single + args.batch_total) // args.senders)
    funds = (FEE + AMOUNT) * (rounds + 1)
    home = NodeHome.named(NODE_NAME, dn_home)
    genesis = init_dev_chain(
        home,
        {k.address: funds for k in senders},
        params=default_params(block_time_ms=args.block_time_ms),
    )
    Node(home, genesis).close()  # creates the store with block 0
    work = Workload(senders, recipient, genesis.chain_id)

    log(f"signing {args.single + args.batch_total} transfers from {args.senders} senders ...")
    t0 = time.perf_counter()
    next_nonce: dict[str, int] = {}
    single_txs = sign_transfers(work, next_nonce, args.single)
    batch_txs = sign_transfers(work, next_nonce, args.batch_total)
    sign_s = time.perf_counter() - t0

    # The baseline is timed before and after the node runs, so drift in the machine's load
    # weighs on both sides of the ratio.
    sample = batch_txs[:2000]
    log("verify baseline (bare PyNaCl loop, one core) ...")
    rates = verify_loop(sample)

    node = NodeProcess(dn_home, NODE_NAME)
    results: dict[str, Any] = {
        "senders": args.senders,
        "block_time_ms": args.block_time_ms,
        "sign_s": sign_s,
    }
    try:
        log(f"starting node on {node.url} ...")
        node.start()
        log(f"single: {len(single_txs)} transfers, one per request ...")
        results["single"] = ingest(node, single_txs, None, args.timeout)
        log(f"batch: {len(batch_txs)} transfers in lists of {args.batch_size} ...")
        results["batch"] = ingest(node, batch_txs, args.batch_size, args.timeout)
        results["confirmed"] = confirmed_nonces(node, senders)
        results["expected_confirmed"] = len(single_txs) + len(batch_txs)
    except Exception:
        log(node.log_tail())
        raise
    finally:
        node.stop()
    log("verify baseline again ...")
    rates += verify_loop(sample)
    baseline = results["baseline"] = {
        "verifies_per_s": statistics.median(rates),
        "runs": [round(r) for r in rates],
        "message_bytes": round(statistics.mean(len(tx.signing_bytes()) for tx in sample)),
        "one_core": hasattr(os, "sched_setaffinity"),
    }
    verify_rate = baseline["verifies_per_s"]
    for mode in ("single", "batch"):
        results[mode]["ratio"] = results[mode]["included_tx_per_s"] / verify_rate
        results[mode]["submit_ratio"] = results[mode]["submit_tx_per_s"] / verify_rate
    results["batch"]["target"] = INGEST_TARGET
    results["batch"]["meets_target"] = results["batch"]["ratio"] >= INGEST_TARGET
    return results


# --- start-up ---------------------------------------------------------------------------------

BARE_APP = textwrap.dedent(
    """
    import typer

    app = typer.Typer(add_completion=False)


    @app.command()
    def hello() -> None:
        pass


    @app.command()
    def bye() -> None:
        pass


    if __name__ == "__main__":
        app()
    """
)

# Runs an entry point in-process, then reports which heavy modules it pulled in.
IMPORT_PROBE = textwrap.dedent(
    """
    import runpy, sys
    heavy = {heavy!r}
    sys.argv = {argv!r}
    try:
        if {script!r}:
            runpy.run_path({script!r}, run_name="__main__")
        else:
            from dn.cli.main import main
            main()
    except SystemExit:
        pass
    loaded = sorted(m for m in heavy if m in sys.modules)
    sys.stderr.write("HEAVY:" + ",".join(loaded) + "\\n")
    """
)


def dn_command() -> list[str]:
    script = Path(sys.executable).parent / "dn"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dn"]


def time_command(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def heavy_imports(argv: list[str], script: str, env: dict[str, str]) -> list[str]:
    """Heavy modules loaded by `argv` run as the dn CLI (script "") or as `script`."""
    probe = IMPORT_PROBE.format(heavy=list(HEAVY_MODULES), argv=argv, script=script)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    for line in done.stderr.splitlines():
        if line.startswith("HEAVY:"):
            return [m for m in line[len("HEAVY:") :].split(",") if m]
    raise RuntimeError(f"import probe failed: {done.stderr[-500:]}")


def run_startup(args: argparse.Namespace, dn_home: Path, work_dir: Path) -> dict[str, Any]:
    store = Keystore(dn_home / "wallets")
    for name in ("alice", "bob"):
        if not store.exists(name):
            store.create(name, "bench-password", KDF_FAST)
    app_file = work_dir / "bare_typer_app.py"
    app_file.write_text(BARE_APP)
    env = {**os.environ, "DN_HOME": str(dn_home)}
    dn = dn_command()
    cases = {
        "dn --help": (dn + ["--help"], [sys.executable, str(app_file), "--help"]),
        "dn wallet list": (dn + ["wallet", "list"], [sys.executable, str(app_file), "hello"]),
    }
    log(f"start-up: {args.runs} runs of each command (plus one warm-up) ...")
    out: dict[str, Any] = {"command": dn, "runs": args.runs, "target": STARTUP_TARGET}
    for label, (dn_argv, bare_argv) in cases.items():
        time_command(dn_argv, env)
        time_command(bare_argv, env)
        dn_times, bare_times = [], []
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            dn_times.append(time_command(dn_argv, env))
            bare_times.append(time_command(bare_argv, env))
        dn_s, bare_s = statistics.median(dn_times), statistics.median(bare_times)
        dn_heavy = heavy_imports(["dn"] + dn_argv[len(dn) :], "", env)
        bare_heavy = heavy_imports(bare_argv[1:], str(app_file), env)
        out[label] = {
            "dn_s": dn_s,
            "bare_s": bare_s,
            "bare_command": " ".join(["bare app"] + bare_argv[2:]),
            "ratio": dn_s / bare_s,
            "meets_target": dn_s / bare_s <= STARTUP_TARGET,
            "dn_s_runs": dn_times,
            "bare_s_runs": bare_times,
            "heavy_imports": dn_heavy,
            "baseline_heavy_imports": bare_heavy,
            "extra_heavy_imports": [m for m in dn_heavy if m not in bare_heavy],
        }
    return out


# --- report -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    ingest_results = results.get("ingest")
    if ingest_results:
        base = ingest_results["baseline"]
        batch = ingest_results["batch"]
        needed = batch["target"] * base["verifies_per_s"]
        lines += [
            "Chain ingest: a real node process, HTTP on 127.0.0.1 "
            f"({ingest_results['senders']} senders, block_time_ms "
            f"{ingest_results['block_time_ms']})",
            "",
            f"  baseline  bare PyNaCl VerifyKey.verify loop on one core, {base['message_bytes']} B "
            "messages, timed before and after",
            f"{'':12}{base['verifies_per_s']:,.0f} verify/s (median of {len(base['runs'])} "
            f"runs, {min(base['runs']):,} to {max(base['runs']):,})",
            "",
            f"  {'mode':<22}{'txs':>7}{'accepted':>10}{'blocks':>8}"
            f"{'submit tx/s':>13}{'in-block tx/s':>15}{'ratio':>8}",
        ]
        for mode in ("single", "batch"):
            r = ingest_results[mode]
            name = f"{mode} ({r['batch_size']}/request)"
            lines.append(
                f"  {name:<22}{r['txs']:>7}{r['accepted']:>10}{r['blocks']:>8}"
                f"{r['submit_tx_per_s']:>13,.0f}{r['included_tx_per_s']:>15,.0f}"
                f"{r['ratio']:>8.3f}"
            )
            if r["rejected"]:
                lines.append(f"    rejected: {r['rejected']}")
        lines += [
            "",
            "  ratio = accepted tx/s, first submit to last one in a block, over the baseline",
            f"  confirmed at the tip: {ingest_results['confirmed']:,} of "
            f"{ingest_results['expected_confirmed']:,} signed",
            "",
            f"  target  {'batch ratio':<16}>= {batch['target']}   {batch['ratio']:.3f}   "
            f"{verdict(batch['meets_target'])}   (>= {needed:,.0f} tx/s here)",
        ]
    startup = results.get("startup")
    if startup:
        if lines:
            lines.append("")
        lines += [
            f"CLI start-up (median of {startup['runs']} runs; baseline: a two-command Typer app "
            "that does nothing, same interpreter)",
            "",
            f"  {'command':<16}{'wall':>8}   {'baseline':<16}{'wall':>8}{'ratio':>8}"
            "   heavy imports beyond the baseline's",
        ]
        for label in ("dn --help", "dn wallet list"):
            s = startup[label]
            lines.append(
                f"  {label:<16}{s['dn_s'] * 1000:>6.0f}ms   {s['bare_command']:<16}"
                f"{s['bare_s'] * 1000:>6.0f}ms{s['ratio']:>8.2f}   "
                f"{', '.join(s['extra_heavy_imports']) or 'none'}"
            )
        lines.append("")
        for label in ("dn --help", "dn wallet list"):
            s = startup[label]
            lines.append(
                f"  target  {label:<16}<= {startup['target']}x   {s['ratio']:.2f}   "
                f"{verdict(s['meets_target'])}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=1000, help="transfers, one per request")
    parser.add_argument("--batch-total", type=int, default=20_000, help="transfers sent in lists")
    parser.add_argument("--batch-size", type=int, default=1000, help="transfers per list")
    parser.add_argument("--senders", type=int, default=200, help="funded sender keys")
    parser.add_argument("--block-time-ms", type=int, default=200, help="the chain's block time")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per start-up command")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for blocks")
    parser.add_argument("--skip-ingest", action="store_true", help="only time start-up")
    parser.add_argument("--skip-startup", action="store_true", help="only time ingest")
    parser.add_argument("--keep", action="store_true", help="keep the temporary DN_HOME")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 10_000:
        parser.error("--batch-size must be from 1 to 10,000 (the API's limit per request)")
    if args.single < 1 or args.batch_total < 1 or args.senders < 1:
        parser.error("--single, --batch-total and --senders must be at least 1")
    return args


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so `finally` stops the node and removes the temp folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    work_dir = Path(tempfile.mkdtemp(prefix="dn-bench-"))
    dn_home = work_dir / "home"
    dn_home.mkdir()
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        if not args.skip_ingest:
            results["ingest"] = run_ingest(args, dn_home)
        if not args.skip_startup:
            results["startup"] = run_startup(args, dn_home, work_dir)
    finally:
        if args.keep:
            log(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
