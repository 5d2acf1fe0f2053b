"""Properties of the PoWR epoch close as the chain runs it (hypothesis): the epoch's state written
as the rules leave it, then `state.begin_block` at the epoch boundary (dn/chain/epochs.py
calendar, dn/chain/powr_rules.py `close`, dn/powr/consensus.py and emission.py).

1. A coalition holding less than a third of the set's voice, revealing whatever it likes, moves
   no model's consensus quality or score by more than the clip band from what the honest
   validators alone give, and earns a model that only it scored nothing. The premise is the one
   the band stands for: honest validators run the same exam and agree within the band. The
   voices and the band come from the documented rule and genesis values (docs/protocol.md), not
   from the code under test.
2. Every unit of an epoch's emission is accounted for: the credits sum to what is minted, what
   is not minted is exactly the pot nobody could take and the miners' parts over the usage cap,
   the validator pool pays out exactly what it loses, every balance grows by exactly its
   credits, and the supply invariant holds after.
3. The usage-tied emission is no larger than what was paid for: a model's miners take at most
   `powr_usage_cap_bps` of what its tasks burned, each miner within a unit of that share of
   what its own tasks burned (issue 11, attack 3).

The pure pieces (weighted median, clip, apportion) have their own properties in
test_powr_consensus.py; these go through the state machine with delegations, voices and the
pool, which that file's strategies do not draw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dn.chain import powr_rules
from dn.chain.genesis import Genesis, checked_params
from dn.chain.ledger import ACCT, MODEL, POOL_VALIDATORS, SUPPLY, DictState, Overlay
from dn.chain.staking import BACKERS, STAKE
from dn.chain.state import begin_block, genesis_state, supply_holds
from dn.chain.validators import VALIDATOR, VALIDATORS
from dn.encoding import BPS, UNITS_PER_DN
from dn.powr.emission import apportion, epoch_emission
from dn.wallet.keys import Keypair

# Documented values (docs/protocol.md, genesis parameters and their defaults).
CLIP_BAND_PPM = 100_000  # powr_clip_band_ppm
MIN_BOND = 100 * UNITS_PER_DN  # validator_min_bond: a genesis validator's voice, every cap
BASE_WEIGHT = UNITS_PER_DN  # validator_base_weight: a genesis validator's own weight
PPM = 1_000_000
EPOCH_BLOCKS = 10
USAGE_CAP_MAX_BPS = (
    5_000  # powr_usage_cap_bps at most: a self-dealer gets back no more than it burns
)

KEYS = [Keypair.from_seed(hashlib.sha256(b"validator %d" % i).digest()) for i in range(9)]
VALIDATOR_ADDRESSES = [k.address for k in KEYS]
PEOPLE = [Keypair.from_seed(hashlib.sha256(b"person %d" % i).digest()).address for i in range(6)]
MODELS = [hashlib.sha256(b"model %d" % i).hexdigest() for i in range(4)]
LONELY = hashlib.sha256(b"a model only the coalition can evaluate").hexdigest()

FAST = settings(
    max_examples=120,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class EpochCase:
    """An epoch at its end, as the chain holds it."""

    genesis_validators: list[str]
    bonds: dict[str, int]  # validator -> bond (every member of the set has an entry)
    delegations: dict[str, dict[str, int]]  # validator -> {delegator: stake}
    models: dict[str, dict[str, Any]]  # sha -> {creator, tasks, confirmed, tokens, miners, backers}
    reveals: dict[str, dict[str, int]]  # validator -> {sha: quality ppm}
    pool: int = 0
    epoch: int = 3
    params: dict[str, int] = field(default_factory=dict)

    def stake(self, validator: str) -> int:
        """Its stake as docs/protocol.md defines it: own weight (the base weight for a genesis
        validator, plus its bond) plus what is delegated to it."""
        own = (BASE_WEIGHT if validator in self.genesis_validators else 0) + self.bonds[validator]
        return own + sum(self.delegations.get(validator, {}).values())

    def voice(self, validator: str) -> int:
        """Its say over quality, as documented: `validator_min_bond` for a genesis validator,
        min(stake, `validator_min_bond`) for any other."""
        if validator in self.genesis_validators:
            return MIN_BOND
        return min(self.stake(validator), MIN_BOND)


def chain_state(case: EpochCase) -> tuple[Genesis, DictState]:
    """A genesis and a state at the end of `case.epoch` holding everything its close reads, with
    the supply invariant holding."""
    genesis = Genesis.build(
        network="devnet",
        time_ms=0,
        validators=sorted(case.genesis_validators),
        allocations={PEOPLE[0]: UNITS_PER_DN},
        params=checked_params({"epoch_blocks": EPOCH_BLOCKS, **case.params}),
    )
    state = DictState(genesis_state(genesis))
    e = case.epoch
    changes: dict[str, Any] = {VALIDATORS: sorted(case.bonds)}
    locked = case.pool
    for validator, bond in case.bonds.items():
        if bond:
            changes[VALIDATOR + validator] = {
                "bond": bond,
                "since": 0,
                "joins": None,
                "leaves": None,
                "left": None,
            }
            locked += bond
    for target, stakes in [
        *case.delegations.items(),
        *((sha, m["backers"]) for sha, m in case.models.items()),
    ]:
        if stakes:
            changes[BACKERS + target] = sorted(stakes)
            for address, amount in stakes.items():
                changes[f"{STAKE}{target}:{address}"] = {"amount": amount}
                locked += amount
    for sha, m in case.models.items():
        changes[MODEL + sha] = {
            "creator": m["creator"],
            "name": sha[:8],
            "domain": "general",
            "price": 1000,
            "license": "",
            "size": 1,
            "height": 1,
            "retired": False,
            "tasks": m["tasks"],
            "tokens": m["tokens"],
            "rejected": m["tasks"] - m["confirmed"],
        }
        if m["tasks"]:
            changes[powr_rules.stats_key(e, sha)] = {
                "tasks": m["tasks"],
                "confirmed": m["confirmed"],
                "tokens": m["tokens"],
                "miners": dict(sorted(m["miners"].items())),
                "burned": dict(sorted(m["burned"].items())),
            }
    settled = sorted(sha for sha, m in case.models.items() if m["tasks"])
    if settled:
        changes[powr_rules.settled_key(e)] = settled
    for validator, scores in case.reveals.items():
        changes[powr_rules.commit_key(e, validator)] = "00" * 32
        changes[powr_rules.reveal_key(e, validator)] = dict(sorted(scores.items()))
    if case.pool:
        changes[POOL_VALIDATORS] = {"balance": case.pool}
    supply = state.get(SUPPLY)
    changes[SUPPLY] = {**supply, "genesis": supply["genesis"] + locked}
    state.update(changes)
    assert supply_holds(state.items())
    return genesis, state


def close(case: EpochCase) -> tuple[DictState, Overlay, dict[str, Any]]:
    """The state before, the changes of the epoch boundary's `begin_block`, and the result."""
    genesis, state = chain_state(case)
    overlay = Overlay(state)
    begin_block(overlay, (case.epoch + 1) * EPOCH_BLOCKS + 1, genesis, "0" * 64)
    return state, overlay, overlay.get(powr_rules.result_key(case.epoch))


# --- strategies --------------------------------------------------------------------------------

ppms = st.integers(0, PPM)
amounts = st.integers(1, 10**15)


@st.composite
def model_stats(draw: st.DrawFn) -> dict[str, Any]:
    tasks = draw(st.integers(0, 40))
    confirmed = draw(st.integers(0, tasks))
    miners = draw(st.dictionaries(st.sampled_from(PEOPLE), st.integers(1, 10**6), max_size=3))
    # what the fee split of each generator's tasks burned (at most 10^4 units a token)
    burned = {a: tokens * draw(st.integers(0, 10**4)) for a, tokens in miners.items()}
    return {
        "creator": draw(st.sampled_from(PEOPLE)),
        "tasks": tasks,
        "confirmed": confirmed,
        "tokens": sum(miners.values()) if confirmed else 0,
        "miners": miners if confirmed else {},
        "burned": {a: units for a, units in burned.items() if units} if confirmed else {},
        "backers": draw(st.dictionaries(st.sampled_from(PEOPLE), amounts, max_size=3)),
    }


@st.composite
def validator_sets(draw: st.DrawFn) -> tuple[list[str], dict[str, int], dict[str, dict[str, int]]]:
    """Genesis validators (some with a bond), bonded newcomers with any bond (a voice under the
    cap, or a bond far above it that buys no more say), and delegations to any of them."""
    members = draw(st.lists(st.sampled_from(VALIDATOR_ADDRESSES), min_size=1, unique=True))
    first = draw(st.lists(st.sampled_from(members), min_size=1, unique=True))
    bonds = {
        v: draw(st.integers(0, 10**15) if v in first else st.integers(1, 30 * MIN_BOND))
        for v in members
    }
    delegations = {
        v: draw(st.dictionaries(st.sampled_from(PEOPLE), amounts, max_size=2)) for v in members
    }
    return sorted(first), bonds, {v: d for v, d in delegations.items() if d}


@st.composite
def coalition_epochs(draw: st.DrawFn) -> tuple[EpochCase, set[str], int]:
    """An epoch where the honest validators hold more than two thirds of the voice and agree
    within the band on every model, and a coalition holding the rest reveals anything: (the
    epoch with every reveal, the coalition, the band)."""
    first, bonds, delegations = draw(validator_sets())
    band = draw(st.sampled_from([CLIP_BAND_PPM, 0, 1, 2, 3]) | ppms)
    case = EpochCase(first, bonds, delegations, {}, {}, params={"powr_clip_band_ppm": band})
    members = sorted(bonds)
    voices = {v: case.voice(v) for v in members}
    total = sum(voices.values())
    coalition: set[str] = set()
    for v in draw(st.permutations(members)):
        if draw(st.booleans()) and 3 * (sum(voices[c] for c in coalition) + voices[v]) < total:
            coalition.add(v)
    honest = [v for v in members if v not in coalition]
    case.models = {sha: draw(model_stats()) for sha in [*MODELS, LONELY]}
    drift = draw(st.integers(0, band))
    truth = {sha: draw(st.integers(0, PPM - drift)) for sha in MODELS}
    for v in honest:
        case.reveals[v] = {sha: truth[sha] + draw(st.integers(0, drift)) for sha in MODELS}
    for v in sorted(coalition):
        case.reveals[v] = draw(st.dictionaries(st.sampled_from([*MODELS, LONELY]), ppms))
    return case, coalition, band


# --- 1. a minority coalition moves no score by more than the band --------------------------------


@FAST
@given(coalition_epochs())
def test_a_coalition_under_a_third_of_the_voice_moves_no_score_beyond_the_band(
    drawn: tuple[EpochCase, set[str], int],
) -> None:
    case, coalition, band = drawn
    assert 3 * sum(case.voice(v) for v in coalition) < sum(case.voice(v) for v in case.bonds)
    honest_only = EpochCase(
        case.genesis_validators,
        case.bonds,
        case.delegations,
        case.models,
        {v: s for v, s in case.reveals.items() if v not in coalition},
        params=case.params,
    )
    _, _, attacked = close(case)
    _, _, fair = close(honest_only)
    for sha in MODELS:
        honest_scores = [case.reveals[v][sha] for v in case.bonds if v not in coalition]
        got, want = attacked["models"][sha], fair["models"][sha]
        assert min(honest_scores) <= got["median"] <= max(honest_scores), sha
        assert abs(got["quality"] - want["quality"]) <= band, sha
        assert abs(got["score"] - want["score"]) <= band, sha
    # A model only the coalition scored has no quorum: quality 0, nothing earned.
    assert attacked["models"].get(LONELY, {"quality": 0, "reward": 0})["quality"] == 0
    assert attacked["models"].get(LONELY, {"reward": 0})["reward"] == 0


# --- 2. every unit of the emission is accounted for --------------------------------------------


@st.composite
def any_epochs(draw: st.DrawFn) -> EpochCase:
    """Any epoch: any set, stakes and delegations, any reveals (or none), any model stats, any
    pool, and any economic parameters in their ranges."""
    first, bonds, delegations = draw(validator_sets())
    models = {sha: draw(model_stats()) for sha in draw(st.lists(st.sampled_from(MODELS)))}
    revealers = draw(st.lists(st.sampled_from(sorted(bonds)), unique=True))
    reveals = {
        v: draw(st.dictionaries(st.sampled_from(sorted(models)), ppms)) if models else {}
        for v in revealers
    }
    creator = draw(st.integers(0, BPS))
    miners = draw(st.integers(0, BPS - creator))
    params = {
        "powr_epoch_emission": draw(st.integers(0, 10**15)),
        "powr_halving_epochs": draw(st.integers(1, 40)),
        "powr_validator_share_bps": draw(st.integers(0, BPS)),
        "powr_creator_share_bps": creator,
        "powr_miner_share_bps": miners,
        "powr_backer_share_bps": BPS - creator - miners,
        "powr_clip_band_ppm": draw(ppms),
        "powr_agreement_span_ppm": draw(st.integers(1, PPM)),
        "powr_quorum_bps": draw(st.integers(1, BPS)),
        "powr_usage_cap_bps": draw(st.integers(0, USAGE_CAP_MAX_BPS)),
    }
    pool = draw(st.integers(0, 10**12))
    epoch = draw(st.integers(0, 60))
    return EpochCase(first, bonds, delegations, models, reveals, pool, epoch, params)


def balances(state: DictState | Overlay, addresses: list[str]) -> dict[str, int]:
    out = {}
    for address in addresses:
        found = state.get(ACCT + address)
        out[address] = found["balance"] if found else 0
    return out


@FAST
@given(any_epochs())
def test_an_epochs_emission_is_accounted_for_to_the_unit(case: EpochCase) -> None:
    before, overlay, result = close(case)
    p = case.params
    emission = epoch_emission(case.epoch, p["powr_epoch_emission"], p["powr_halving_epochs"])
    credits = result["credits"]
    pool_credits = result.get("pool", {}).get("credits", [])
    assert result["emission"] == emission
    assert result["paid"] + result["unpaid"] == emission
    assert sum(c["amount"] for c in credits) == result["paid"]
    assert all(c["amount"] > 0 for c in [*credits, *pool_credits])
    # Only a pot nobody can take, and the miners' parts over the usage cap, go unminted.
    validator_pot = emission * p["powr_validator_share_bps"] // BPS
    takers = any(v["stake"] * v["agreement"] for v in result["validators"].values())
    scored = any(m["score"] for m in result["models"].values())
    capped = 0
    for sha, m in result["models"].items():
        part = m["reward"] + m["capped"]
        roles = apportion(
            part,
            {
                "creator": p["powr_creator_share_bps"],
                "miners": p["powr_miner_share_bps"],
                "backers": p["powr_backer_share_bps"],
            },
        )
        burned = case.models[sha]["burned"]
        bound = sum(burned.values()) * p["powr_usage_cap_bps"] // BPS
        most = min(roles.get("miners", 0), bound)
        # 3. what the miners take is paid for, each by what its own tasks burned (a largest
        # remainder that would lift one a unit above its own bound is left unpaid: at most one
        # unit per miner)
        to_miners = [c for c in credits if c["model"] == sha and c["reason"] == "miner"]
        mined = sum(c["amount"] for c in to_miners)
        assert most - len(burned) <= mined <= most <= bound
        assert m["capped"] == roles.get("miners", 0) - mined, sha
        capped += m["capped"]
        for c in to_miners:
            assert c["amount"] <= burned[c["address"]] * p["powr_usage_cap_bps"] // BPS
    assert (
        result["unpaid"]
        == (0 if takers else validator_pot) + (0 if scored else emission - validator_pot) + capped
    )
    # The validator pool pays out exactly what it loses, and only when someone can take it.
    pool_paid = sum(c["amount"] for c in pool_credits)
    left = overlay.get(POOL_VALIDATORS)
    assert pool_paid + (left["balance"] if left else 0) == case.pool
    assert pool_paid == (case.pool if takers else 0)
    # Every balance grows by exactly its credits; the minted supply by what was paid.
    everyone = sorted({*VALIDATOR_ADDRESSES, *PEOPLE})
    grown = {
        a: after - was
        for (a, after), was in zip(
            balances(overlay, everyone).items(), balances(before, everyone).values(), strict=True
        )
    }
    owed = dict.fromkeys(everyone, 0)
    for c in [*credits, *pool_credits]:
        owed[c["address"]] += c["amount"]
    assert grown == owed
    supply_before, supply_after = before.get(SUPPLY), overlay.get(SUPPLY)
    assert supply_after["emitted"] - supply_before["emitted"] == result["paid"]
    before.update(overlay.changes)
    assert supply_holds(before.items())
