"""Miners (DESIGN.md sections 4 and 7): the `miner.register` and `miner.exit` rules, and taking
a miner out of service.

    miner:<address>     {"bond": units still bonded, "url", "models": [sha256, …] sorted,
                         "since": height of this registration, "exited": height | null,
                         "slashed": units lost to verdicts (once slashed)}
    serving:<sha256>    [{"miner", "from", "until"}, …] who served a model when (tasks.py), so a
                        settlement is checked against the miners its ticket's reference height
                        selected

Rules, checks in order:
- `miner.register` {bond, url, models}: registers, or updates a live registration. `bond` is
  the total wanted: at least `miner_min_bond` (`bond-too-low`); each model registered
  (`unknown-model`) and live (`model-retired`); for a live miner, at least the bond it holds
  (`bond-decrease`: a bond only shrinks by exiting); the balance after the fee covers the
  difference (`insufficient-funds`).
- `miner.exit` {}: the sender is a live miner (`not-miner`). It stops serving at once; its bond
  comes back at the start of block `height + unbonding_blocks` and stays slashable meanwhile.

A verdict that leaves a miner's bond below `miner_min_bond` takes it out of service the same
way (`exit_miner`, called by `disputes.py`).
"""

from __future__ import annotations

from dn.chain.genesis import Genesis
from dn.chain.ledger import MINER, UNLOCK, Overlay, debit
from dn.chain.models import live_model
from dn.chain.tasks import SERVING, serving_changed
from dn.chain.types import Tx
from dn.errors import InvalidTx


def _set_serving(
    state: Overlay, model: str, miner: str, height: int, genesis: Genesis, *, serving: bool
) -> None:
    key = SERVING + model
    window = genesis.param("ticket_window_blocks")
    intervals = serving_changed(state.get(key) or [], miner, height, window, serving=serving)
    state.set(key, intervals or None)


def miner_register(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """Register, or update a live registration: `bond` is the total bond wanted (at least
    `miner_min_bond`, never less than the miner already holds); the difference moves from the
    sender's balance. `url` and `models` replace the old ones, from this block on."""
    p = tx.payload
    bond = p["bond"]
    if bond < genesis.param("miner_min_bond"):
        raise InvalidTx(
            f"bond {bond} is below the minimum of {genesis.param('miner_min_bond')} units",
            reason="bond-too-low",
        )
    models = sorted(set(p["models"]))
    for sha in models:
        live_model(state, sha, retired_reason="model-retired")
    current = state.get(MINER + tx.sender)
    live = current is not None and current["exited"] is None
    held = current["bond"] if live else 0
    if bond < held:
        raise InvalidTx(
            f"bond {bond} is less than the {held} units already bonded; a bond only shrinks "
            "by exiting",
            reason="bond-decrease",
        )
    if bond > held:
        debit(state, tx.sender, bond - held, f"bond {bond - held} after fee {tx.fee}")
    before = set(current["models"]) if live else set()
    for sha in sorted(before - set(models)):
        _set_serving(state, sha, tx.sender, height, genesis, serving=False)
    for sha in sorted(set(models) - before):
        _set_serving(state, sha, tx.sender, height, genesis, serving=True)
    state.set(
        MINER + tx.sender,
        {
            "bond": bond,
            "url": p["url"],
            "models": models,
            "since": current["since"] if live else height,
            "exited": None,
        },
    )


def miner_exit(state: Overlay, tx: Tx, genesis: Genesis, height: int) -> None:
    """Stop serving now; the bond comes back at the start of block `height + unbonding_blocks`
    (until then it stays slashable, and counted in the supply, under `unlock:`)."""
    current = state.get(MINER + tx.sender)
    if current is None or current["exited"] is not None:
        raise InvalidTx("the sender is not a registered miner", reason="not-miner")
    exit_miner(state, tx.sender, height, genesis)


def exit_miner(state: Overlay, address: str, height: int, genesis: Genesis) -> None:
    """Take a live miner out of service in block `height` (its `miner.exit`, or a slash that left
    its bond below the minimum): it stops serving, and its bond unbonds (`what`: "bond", so a
    verdict can still find and slash it)."""
    current = state.get(MINER + address)
    for sha in current["models"]:
        _set_serving(state, sha, address, height, genesis, serving=False)
    key = UNLOCK + str(height + genesis.param("unbonding_blocks"))
    entry = {"address": address, "amount": current["bond"], "what": "bond"}
    state.set(key, [*(state.get(key) or []), entry])
    state.set(MINER + address, {**current, "bond": 0, "exited": height})
