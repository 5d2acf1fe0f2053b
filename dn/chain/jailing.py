"""Downtime jailing (Cosmos SDK x/slashing, counted in turns): a validator that misses too many of
its turns in an epoch leaves the set at the next boundary, loses a small share of its bond, and
may bond again only `unbonding_blocks` later.

    downtime:<e>            {address: turns missed in epoch e}, written only on a miss and
                            deleted when epoch e closes
    validator:<address>     gains "jailed": height (until it bonds again) and "slashed": units

What a block shows (`observe`, every block but an epoch's first): the in-turn validator X of
height h (in the set of the parent's state, see validators.py) missed its turn when the block at
h is signed by someone else although X could have signed it (X is not among the recent signers
that the floor(n/2)+1 rule bars). A height where no block exists shows nothing, so a miss is only
ever "another validator signed X's turn". The first block of an epoch is proposed by the previous
epoch's set, so it is left out: epoch e's set is judged on heights eE+2 … (e+1)E (epoch 0's on
1 … E), where it is the set that proposes.

At the start of the first block of epoch e+1, after the PoWR close of epoch e and before the set
changes for e+1 (`judge`, from state.begin_block), checks in order:
- a member with `missed × 10000 > jail_max_missed_bps × turns` (turns: the heights above at which
  it was in turn) is over the limit; one that signs all the turns it may sign misses none;
- if taking every member over the limit out would leave the next set empty, nobody is jailed at
  this boundary (a chain never jails its last validator);
- each member over the limit, in address order, is jailed: `jail_slash_bps` of its bond is taken,
  of which `slash_pool_bps` goes to `pool:validators` and the rest is burned (as disputes.py
  slashes a miner), its record gets `jailed: H` and `slashed` += slash, and it leaves the set in
  this very block (a `leave` change for epoch e+1, applied right after), so it is out of the
  in-turn order and of the recent-signer rule from the next block on. What is left of its bond
  stays bonded; it may take it back with `validator.unbond`, or rejoin with `validator.bond`
  (joining at the next boundary, on probation again) from block H + `unbonding_blocks`.

Why silent joiners cannot halt the chain. With h validators that sign and s that do not, the
floor(n/2)+1 rule over all n = h + s stops every signing validator once s ≥ h: the last
floor(n/2) ≥ h blocks were all signed by the h, and no block is ever made again, so no rule that
reads blocks can notice the silence. Hence a joiner is on probation until it signs its first
block (validators.py): it takes its turns, but the rule counts only the active members off
probation. Silent joiners therefore never count, the signing validators may sign exactly when
they could without them (at a joiner's turn out of turn, after the usual delay), and every turn
of a joiner is signed by another validator: a miss on each. At the
end of its first full epoch in the set such a joiner has missed all of its turns (every member
has at least one when n < epoch_blocks) and is jailed at that boundary, whatever s is. What stays
is Clique's own assumption: validators that have signed once and then stop count until they are
jailed, and if they are as many as those still signing, the chain stops as any Clique chain does
(from inside the chain that is indistinguishable from a partition, in which stopping is what
keeps the minority from going its own way).
"""

from __future__ import annotations

from dn.chain import consensus
from dn.chain.epochs import Epoch
from dn.chain.genesis import Genesis
from dn.chain.ledger import POOL_VALIDATORS, SIGNERS, Overlay, StateReader, burn
from dn.chain.validators import VALIDATOR, active, next_set, schedule_leave, signing
from dn.encoding import BPS

DOWNTIME = "downtime:"


def _observed(epoch: int, blocks: int) -> tuple[int, int]:
    """The heights on which epoch `epoch`'s set is judged (its first block is the previous
    set's)."""
    span = Epoch(epoch, blocks)
    return (span.first if epoch == 0 else span.first + 1), span.last


def turns(members: list[str], address: str, first: int, last: int) -> int:
    """How many heights in [first, last] have `address` in turn (`members[h % n]`)."""
    n, index = len(members), members.index(address)
    return (last - index) // n - (first - 1 - index) // n


def missed_turn(state: StateReader, height: int, proposer: str, genesis: Genesis) -> str | None:
    """Who missed its turn at `height` if `proposer` signs it on `state` (its parent's), or None."""
    blocks = genesis.param("epoch_blocks")
    if Epoch.closed_at(height, blocks) is not None:
        return None  # an epoch's first block: the previous set's, judged by nobody
    members = active(state, genesis)
    due = consensus.in_turn(members, height)
    recent = state.get(SIGNERS) or []
    if due == proposer or not consensus.may_sign(recent, due, len(signing(state, genesis))):
        return None
    return due


def observe(state: Overlay, parent: StateReader, height: int, proposer: str, g: Genesis) -> None:
    """Record what block `height` by `proposer` shows: the in-turn validator's miss, if any."""
    missing = missed_turn(parent, height, proposer, g)
    if missing is None:
        return
    key = DOWNTIME + str(Epoch.at(height, g.param("epoch_blocks")).number)
    missed = dict(state.get(key) or {})
    missed[missing] = missed.get(missing, 0) + 1
    state.set(key, missed)


def over_limit(state: StateReader, epoch: int, genesis: Genesis) -> list[str]:
    """The members of epoch `epoch`'s set that missed more than `jail_max_missed_bps` of their
    turns in it (sorted), read before its close changes the set."""
    missed = state.get(DOWNTIME + str(epoch)) or {}
    members = active(state, genesis)
    first, last = _observed(epoch, genesis.param("epoch_blocks"))
    limit = genesis.param("jail_max_missed_bps")
    return [
        address
        for address in sorted(missed)
        if missed[address] * BPS > limit * turns(members, address, first, last)
    ]


def judge(state: Overlay, epoch: int, height: int, genesis: Genesis) -> list[str]:
    """Jail the members over the limit in `epoch` at block `height`, the first of epoch + 1;
    return them."""
    key = DOWNTIME + str(epoch)
    if state.get(key) is None:
        return []
    jailed = over_limit(state, epoch, genesis)
    state.set(key, None)
    if not next_set(state, genesis, epoch + 1) - set(jailed):
        return []
    for address in jailed:
        _jail(state, address, epoch + 1, height, genesis)
    return jailed


def _jail(state: Overlay, address: str, epoch: int, height: int, genesis: Genesis) -> None:
    record = state.get(VALIDATOR + address)
    if record is None:  # a genesis validator that never bonded
        record = {"bond": 0, "since": 0, "joins": None, "leaves": None, "left": None}
    slash = int(record["bond"]) * genesis.param("jail_slash_bps") // BPS
    pool = slash * genesis.param("slash_pool_bps") // BPS
    if pool:
        found = state.get(POOL_VALIDATORS) or {"balance": 0}
        state.set(POOL_VALIDATORS, {"balance": found["balance"] + pool})
    if slash - pool:
        burn(state, slash - pool)
    state.set(
        VALIDATOR + address,
        {
            **record,
            "bond": record["bond"] - slash,
            "jailed": height,
            "slashed": record.get("slashed", 0) + slash,
        },
    )
    schedule_leave(state, epoch, address)
