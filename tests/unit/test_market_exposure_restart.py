"""A miner's table of the slots it serves survives a restart (issue 11): it is a SQLite file in
the node's folder, so a consumer cannot have a miner forget a slot it is serving (by waiting for,
or causing, a restart) and then have the same slot served again for a second prompt, only one of
which could settle (dn/node/market/exposure.py). A "restart" is a new `Exposure` on the same
file; the first is never closed, as a killed miner would not close it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dn.chain.genesis import default_params
from dn.chain.ledger import TASK, DictState
from dn.node.market.exposure import FILE_NAME, Exposure
from dn.node.node import NodeHome
from dn.node.setup import init_dev_chain
from dn.wallet.keys import Keypair
from tests.unit.test_market_exposure import ALICE, BOB, WINDOW, taken, ticket


def test_a_restarted_miner_still_knows_the_slots_it_serves(tmp_path: Path) -> None:
    st = DictState({})
    before = Exposure(WINDOW, tmp_path / FILE_NAME)
    before.admit(st, 1, "t1", ticket(ALICE, 0))
    before.admit(st, 1, "t2", ticket(BOB, 0))

    after = Exposure(WINDOW, tmp_path / FILE_NAME)  # the miner came back
    assert after.open_slots() == 2
    taken(after, st, 2, "t3", ticket(ALICE, 0))  # a second prompt on the served slot
    after.admit(st, 2, "t4", ticket(ALICE, 1))  # the consumer's other slots still work
    assert Exposure(WINDOW, tmp_path / FILE_NAME).open_slots() == 3
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o077 == 0  # as apikeys


def test_what_stopped_counting_stays_forgotten_after_a_restart(tmp_path: Path) -> None:
    st = DictState({})
    before = Exposure(WINDOW, tmp_path / FILE_NAME)
    before.admit(st, 1, "t1", ticket(ALICE, 0, expiry=5))
    before.admit(st, 1, "t2", ticket(ALICE, 1, expiry=5))
    st.update({TASK + "t1": {"status": "confirmed"}})  # the chain settled it
    before.admit(st, 2, "t3", ticket(ALICE, 0, expiry=5))  # slot 0 again (t1 is settled)

    after = Exposure(WINDOW, tmp_path / FILE_NAME)
    assert after.open_slots() == 2  # t2 and t3
    taken(after, st, 4, "t4", ticket(ALICE, 1, expiry=9))
    after.admit(st, 5, "t4", ticket(ALICE, 1, expiry=9))  # block 6 is past t2's expiry, 5
    assert Exposure(WINDOW, tmp_path / FILE_NAME).open_slots() == 1


def test_without_a_folder_the_table_is_in_memory_as_before() -> None:
    first = Exposure(WINDOW)
    first.admit(DictState({}), 1, "t1", ticket(ALICE, 0))
    assert first.open_slots() == 1
    assert Exposure(WINDOW).open_slots() == 0  # nothing shared between two in memory


def test_a_table_from_before_the_reserve_is_taken_as_it_is(tmp_path: Path) -> None:
    """A miner's file from before books reserved escrow had a per-consumer price table too; it
    is dropped, the open slots kept."""
    old = sqlite3.connect(tmp_path / FILE_NAME)
    old.executescript(
        "CREATE TABLE open_tickets (task TEXT PRIMARY KEY, consumer TEXT, max_price INTEGER,"
        " last_valid INTEGER);"
        "CREATE TABLE open_slots (slot TEXT PRIMARY KEY, task TEXT, last_valid INTEGER);"
        f"INSERT INTO open_slots VALUES ('{ALICE}:1:0', 't1', 9);"
    )
    old.commit()
    old.close()
    exposure = Exposure(WINDOW, tmp_path / FILE_NAME)
    taken(exposure, DictState({}), 2, "t2", ticket(ALICE, 0))
    tables = {r[0] for r in exposure.db.execute("SELECT name FROM sqlite_master")}
    assert "open_tickets" not in tables


def test_a_miner_keeps_its_table_in_its_node_folder(tmp_path: Path) -> None:
    """What `Miner` builds (dn/node/market/miner.py): the file in the node's folder, with the
    chain's ticket window."""
    home = NodeHome.named("default", tmp_path)
    params = default_params(ticket_window_blocks=7)
    genesis = init_dev_chain(home, {Keypair.generate().address: 10**12}, params=params)
    st = DictState({})
    Exposure.for_chain(home.path, genesis).admit(st, 1, "t1", ticket(ALICE, 0, expiry=50))
    after = Exposure.for_chain(home.path, genesis)
    assert (home.path / FILE_NAME).exists() and after.window == 7
    taken(after, st, 7, "t2", ticket(ALICE, 0, expiry=50))  # ref 1 + 7: block 8 may settle t1
    after.admit(st, 8, "t2", ticket(ALICE, 0, expiry=50))  # block 9 is past 1 + 7
