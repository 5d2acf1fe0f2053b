"""`dn chain explain ADDRESS`: every credit and debit of an address's balance, each traced to its
cause, and a check that they account for every unit (DESIGN.md section 8).

The chain is replayed from genesis with the real rules (`apply_block`, as `dn chain verify`
does), so each block's balance change for the address is what the chain computed: balance after
the block minus balance before. Independently, the effects of the block on the address are
re-derived from what caused them, reading the state just before each step:

    genesis         the allocation (height 0)
    begin_block     `unlock:<h>` payouts (a miner's bond after `miner.exit`, funds after
                    `unstake`, with the height they were locked at), escrow withdrawals that
                    finished unlocking (escrow.py), then the PoWR epoch close
                    (the `credits` of `powr:<e>:result`: epoch, reason, model)
    each tx         the fee (sender) and the proposer's share of it; a transfer's amount; the
                    bond a `miner.register` locks (`bond` minus what the miner held); a `stake`;
                    an `escrow.deposit`; a `task.settle`'s split (creator, generator, checker,
                    backers: `market.payout` at that moment; the consumer's price comes out of
                    its escrow, not its balance: a `query-paid` entry of 0 names the task);
                    a `task.verdict`'s refund to the consumer of a bad answer

`miner.exit`, `unstake` and a verdict that takes a miner out of service move nothing from the
balance until the unlock height. Whatever part of a block's balance change the derived entries do
not cover is reported as an `unexplained` entry; on a chain that follows these rules there is none.

Locked funds (a live miner's bond, stakes, funds unbonding under `unlock:`, a query escrow) are
not in the balance; `Explanation.locked` lists them as they stand at the tip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dn.chain import disputes, escrow, powr_rules, staking, validators
from dn.chain.epochs import Epoch
from dn.chain.genesis import Genesis
from dn.chain.ledger import MINER, MODEL, TASK, UNLOCK, DictState, Overlay, StateReader, account
from dn.chain.market import payout
from dn.chain.models import is_model
from dn.chain.state import apply_block, apply_tx, begin_block, genesis_block, genesis_state
from dn.chain.store import Store
from dn.chain.tasks import CONFIRMED, price_of, task_id
from dn.chain.types import Block, Tx
from dn.encoding import BPS, format_dn
from dn.errors import ChainError, DNError

UNEXPLAINED = "unexplained"
_SHARE_KINDS = {
    "creator": "creator-share",
    "generator": "generator-share",
    "checker": "checker-share",
}


@dataclass(frozen=True)
class Entry:
    """One change of the balance: `amount` signed units, `tx` the transaction id (None for
    genesis and the start of a block), `kind` a short code, `cause` a sentence for people; `task`,
    `epoch`, `model`, `target` and `locked_at` only where they say what earned or took it."""

    height: int
    block: str
    tx: str | None
    kind: str
    cause: str
    amount: int
    task: str | None = None
    epoch: int | None = None
    model: str | None = None
    target: str | None = None
    locked_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "height": self.height,
            "block": self.block,
            "tx": self.tx,
            "kind": self.kind,
            "cause": self.cause,
            "amount": self.amount,
        }
        for name in ("task", "epoch", "model", "target", "locked_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class Explanation:
    """`entries` from height `start` on; `opening` is the balance before `start` (0 from
    genesis), so opening + received − spent + unexplained == balance."""

    address: str
    start: int
    height: int
    tip: str
    opening: int
    balance: int
    entries: tuple[Entry, ...]
    locked: tuple[dict[str, Any], ...] = field(default=())

    @property
    def received(self) -> int:
        return sum(e.amount for e in self.entries if e.amount > 0 and e.kind != UNEXPLAINED)

    @property
    def spent(self) -> int:
        return -sum(e.amount for e in self.entries if e.amount < 0 and e.kind != UNEXPLAINED)

    @property
    def unexplained(self) -> int:
        return sum(e.amount for e in self.entries if e.kind == UNEXPLAINED)

    def totals(self) -> dict[str, int]:
        return {
            "opening": self.opening,
            "received": self.received,
            "spent": self.spent,
            "unexplained": self.unexplained,
            "balance": self.balance,
            "locked": sum(item["amount"] for item in self.locked),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "from": self.start,
            "height": self.height,
            "tip": self.tip,
            "entries": [e.to_json() for e in self.entries],
            "locked": list(self.locked),
            "totals": self.totals(),
        }


@dataclass(frozen=True)
class _Lock:
    """Why an `unlock:` entry of the address exists: what was locked, at which height."""

    what: str  # "bond" | "validator-bond" | "stake"
    height: int
    tx: str
    target: str | None = None


class _Tracer:
    """Derives the entries of one address, block by block, remembering its pending unlocks."""

    def __init__(self, genesis: Genesis, address: str) -> None:
        self.genesis = genesis
        self.address = address
        self.pending: dict[int, list[_Lock]] = {}  # unlock height -> locks in append order

    def block_entries(self, state: StateReader, block: Block) -> list[Entry]:
        """The address's entries for `block`, replaying it with the real rules on an overlay of
        the state before it (the block was checked already)."""
        height, proposer = block.header.height, block.header.proposer
        out: list[Entry] = []

        def add(tx: str | None, kind: str, cause: str, amount: int, **extra: Any) -> None:
            out.append(Entry(height, block.hash, tx, kind, cause, amount, **extra))

        overlay = Overlay(state)
        for n, entry in enumerate(overlay.get(UNLOCK + str(height)) or []):
            if entry["address"] != self.address:
                continue
            locks = self.pending.get(height) or []
            lock = locks.pop(0) if locks else None
            if lock is None:
                add(None, "unlock", f"unlock #{n} due at block {height}", entry["amount"])
            elif lock.what == "bond":
                cause = f"miner bond returned (exited at block {lock.height})"
                add(lock.tx, "bond-returned", cause, entry["amount"], locked_at=lock.height)
            elif lock.what == "validator-bond":
                cause = f"validator bond returned (unbonded at block {lock.height})"
                add(lock.tx, "bond-returned", cause, entry["amount"], locked_at=lock.height)
            else:
                cause = f"stake on {_name(state, lock.target)} returned (unstaked at block "
                cause += f"{lock.height})"
                add(
                    lock.tx,
                    "stake-returned",
                    cause,
                    entry["amount"],
                    locked_at=lock.height,
                    target=lock.target,
                )
        self.pending.pop(height, None)
        back = escrow.releases(overlay, height).get(self.address)
        if back:
            add(None, "escrow-returned", f"escrow withdrawal unlocked at block {height}", back)
        begin_block(overlay, height, self.genesis, block.header.prev)
        epoch = Epoch.closed_at(height, self.genesis.param("epoch_blocks"))
        if epoch is not None:
            record = overlay.get(powr_rules.result_key(epoch))
            for credit in record["credits"]:
                if credit["address"] == self.address:
                    model = credit["model"]
                    on = f" for {_name(overlay, model)}" if model else ""
                    if credit.get("validator"):
                        on = f" of validator {credit['validator']}"
                    cause = f"PoWR epoch {epoch} reward: {credit['reason']}{on}"
                    add(None, "powr-reward", cause, credit["amount"], epoch=epoch, model=model)
            for credit in record.get("pool", {}).get("credits", []):
                if credit["address"] == self.address:
                    of = f" of validator {credit['validator']}" if credit.get("validator") else ""
                    cause = f"validator pool paid at the close of epoch {epoch}{of}"
                    add(None, "pool-share", cause, credit["amount"], epoch=epoch)
        for tx in block.txs:
            for kind, cause, amount, extra in self._tx_effects(overlay, tx, height, proposer):
                add(tx.id, kind, cause, amount, **extra)
            apply_tx(overlay, tx, self.genesis, proposer, height=height)
        return out

    def _tx_effects(
        self, state: StateReader, tx: Tx, height: int, proposer: str
    ) -> list[tuple[str, str, int, dict[str, Any]]]:
        """(kind, cause, signed amount, extra fields) of `tx` on the address, from the state
        just before it."""
        me, p = self.address, tx.payload
        out: list[tuple[str, str, int, dict[str, Any]]] = []
        if tx.sender == me:
            out.append(("fee", f"fee of {tx.kind}", -tx.fee, {}))
        if proposer == me:
            share = tx.fee - tx.fee * self.genesis.param("fee_burn_share") // BPS
            cause = f"proposer's share of the fee of {tx.kind}"
            out.append(("proposer-fee", cause, share, {}))
        if tx.kind == "transfer":
            if tx.sender == me:
                out.append(("transfer-out", f"transfer to {p['to']}", -p["amount"], {}))
            if p["to"] == me:
                out.append(("transfer-in", f"transfer from {tx.sender}", p["amount"], {}))
        elif tx.kind == "miner.register" and tx.sender == me:
            current = state.get(MINER + me)
            held = current["bond"] if current is not None and current["exited"] is None else 0
            if p["bond"] > held:
                cause = f"miner bond locked ({format_dn(p['bond'])} DN in all)"
                out.append(("bond", cause, held - p["bond"], {}))
        elif tx.kind == "miner.exit" and tx.sender == me:
            due = height + self.genesis.param("unbonding_blocks")
            self.pending.setdefault(due, []).append(_Lock("bond", height, tx.id))
        elif tx.kind == "validator.bond" and tx.sender == me:
            cause = "validator bond locked"
            out.append(("validator-bond", cause, -p["amount"], {}))
        elif tx.kind == "validator.unbond" and tx.sender == me:
            due = height + self.genesis.param("unbonding_blocks")
            self.pending.setdefault(due, []).append(_Lock("validator-bond", height, tx.id))
        elif tx.kind == "stake" and tx.sender == me:
            target = p["target"]
            cause = f"staked on {_name(state, target)}"
            out.append(("stake", cause, -p["amount"], {"target": target}))
        elif tx.kind == "unstake" and tx.sender == me:
            due = height + self.genesis.param("unbonding_blocks")
            self.pending.setdefault(due, []).append(_Lock("stake", height, tx.id, p["target"]))
        elif tx.kind == "escrow.deposit" and tx.sender == me:
            out.append(("escrow-deposit", "deposited into the query escrow", -p["amount"], {}))
        elif tx.kind == "task.settle":
            out += self._settle_effects(state, tx)
        elif tx.kind == "task.verdict":
            ruling = disputes.outcome(state, tx, self.genesis, height)
            task = p["task"]
            if ruling.refund and state.get(TASK + task)["consumer"] == me:
                cause = f"refund for task {task[:12]}…: a validator found the answer invalid"
                out.append(("refund", cause, ruling.refund, {"task": task}))
            if me in ruling.forfeited:
                cause = f"share of task {task[:12]}… forfeited: a validator found it at fault"
                out.append(("forfeit", cause, -ruling.forfeited[me], {"task": task}))
            if me in ruling.exits:
                due = height + self.genesis.param("unbonding_blocks")
                self.pending.setdefault(due, []).append(_Lock("bond", height, tx.id))
        return out

    def _settle_effects(
        self, state: StateReader, tx: Tx
    ) -> list[tuple[str, str, int, dict[str, Any]]]:
        ticket, gen, chk = tx.payload["ticket"], tx.payload["generator"], tx.payload["checker"]
        if chk["verdict"] != CONFIRMED:
            return []  # a rejected answer is recorded, not paid
        sha = ticket["model"]
        model = state.get(MODEL + sha)
        paid = price_of(model["price"], gen["tokens"])
        task = task_id(self.genesis.chain_id, ticket)
        about = {"task": task, "model": sha}
        what = f"task {task[:12]}… on {_name(state, sha)}"
        out: list[tuple[str, str, int, dict[str, Any]]] = []
        if ticket["consumer"] == self.address and paid:  # from the escrow: the balance stays
            cause = f"paid for {what} out of the query escrow ({format_dn(paid)} DN)"
            out.append(("query-paid", cause, 0, about))
        shares = payout(state, self.genesis, paid, sha)
        for role, payee in (
            ("creator", model["creator"]),
            ("generator", gen["miner"]),
            ("checker", chk["miner"]),
        ):
            if payee == self.address and shares[role]:
                out.append((_SHARE_KINDS[role], f"{role}'s share of {what}", shares[role], about))
        part = shares["backers"].get(self.address, 0)
        if part:
            out.append(("backer-share", f"backer's share of {what}", part, about))
        return out


def _name(state: StateReader, target: str | None) -> str:
    """A model's name (and short id), or the address a stake names."""
    if target is None:
        return "?"
    if is_model(target):
        found = state.get(MODEL + target)
        return f"model {found['name']} ({target[:12]}…)" if found else f"model {target[:12]}…"
    return f"validator {target}"


def locked_funds(state: DictState, address: str) -> list[dict[str, Any]]:
    """What `address` holds outside its balance: a live miner bond, stakes (with the model's
    name for a model), funds unbonding (with the height they come back at)."""
    out: list[dict[str, Any]] = []
    for key, value in sorted(state.items()):
        if key == MINER + address and value["bond"]:
            out.append({"kind": "bond", "amount": value["bond"]})
        elif key == validators.VALIDATOR + address and value["bond"]:
            out.append({"kind": "validator-bond", "amount": value["bond"]})
        elif key.startswith(staking.STAKE) and key.endswith(":" + address):
            target = key[len(staking.STAKE) : -len(address) - 1]
            item = {"kind": "stake", "amount": value["amount"], "target": target}
            model = state.get(MODEL + target) if is_model(target) else None
            out.append({**item, "name": model["name"]} if model else item)
        elif key == escrow.ESCROW + address:
            out.append({"kind": "escrow", **escrow.summary(state, address)})
        elif key.startswith(UNLOCK):
            due = int(key[len(UNLOCK) :])
            for entry in value:
                if entry["address"] == address:
                    out.append({"kind": "unbonding", "amount": entry["amount"], "due": due})
    return sorted(out, key=lambda item: (item["kind"], item.get("due", 0)))


Progress = Callable[[int, int], None]


def explain_blocks(
    genesis: Genesis,
    blocks: Iterable[Block],
    address: str,
    start: int = 0,
    progress: Progress | None = None,
    tip_height: int = 0,
) -> Explanation:
    """Explain `address` over the canonical `blocks` after genesis (heights 1, 2, … in order),
    listing the entries from height `start` on. Each block is checked with `apply_block` (a
    ChainError names the first that fails); `progress(height, tip_height)` follows the replay."""
    state = DictState(genesis_state(genesis))
    parent = genesis_block(genesis)
    entries: list[Entry] = []
    allocated = genesis.allocations.get(address, 0)
    opening = allocated if start > 0 else 0
    if allocated and start <= 0:
        entries.append(Entry(0, parent.hash, None, "genesis", "genesis allocation", allocated))
    tracer = _Tracer(genesis, address)
    for block in blocks:
        try:
            changes = apply_block(state, parent.header, parent.hash, block, genesis).changes
        except DNError as exc:
            raise ChainError(f"block {block.height} ({block.hash[:12]}…): {exc.message}") from None
        # A block that wrote no key naming the address changed neither its balance nor its
        # locks (a bond or stake it locks or unbonds is under a key that names it).
        touched = any(address in k for k in changes)
        if touched:
            before = account(state, address)["balance"]
            derived = tracer.block_entries(state, block)
            after = Overlay(state)
            after.changes.update(changes)
            delta = account(after, address)["balance"] - before
            gap = delta - sum(e.amount for e in derived)
            if gap:
                cause = f"the balance changed by {delta}; the entries above explain {delta - gap}"
                derived.append(Entry(block.height, block.hash, None, UNEXPLAINED, cause, gap))
            if block.height >= start:
                entries += derived
            else:
                opening = before + delta
        state.update(changes)
        parent = block
        if progress is not None:
            progress(block.height, max(tip_height, block.height))
    return Explanation(
        address=address,
        start=start,
        height=parent.height,
        tip=parent.hash,
        opening=opening,
        balance=account(state, address)["balance"],
        entries=tuple(entries),
        locked=tuple(locked_funds(state, address)),
    )


def explain(
    store: Store, address: str, start: int = 0, progress: Progress | None = None
) -> Explanation:
    """Explain `address` on `store`'s canonical chain. Safe on a running node's store: it reads
    one snapshot (a WAL read transaction), as `verify_store` does."""
    store.conn.execute("BEGIN")
    try:
        tip = store.tip().height
        blocks = store.iter_canonical(1)
        return explain_blocks(store.genesis, blocks, address, start, progress, tip)
    finally:
        store.conn.execute("COMMIT")
