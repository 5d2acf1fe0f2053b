"""A miner's table of each consumer's open tickets survives a restart (issue 11): it is a SQLite
file in the node's folder, so a consumer cannot have a miner forget the tickets it accepted (by
waiting for, or causing, a restart) and then overcommit its escrow there
(dn/node/market/exposure.py). A "restart" is a new `Exposure` on the same file; the first is
never closed, as a killed miner would not close it."""

from __future__ import annotations

from pathlib import Path

from dn.chain.genesis import default_params
from dn.chain.ledger import TASK
from dn.node.market.exposure import FILE_NAME, Exposure
from dn.node.node import NodeHome
from dn.node.setup import init_dev_chain
from dn.wallet.keys import Keypair
from tests.unit.test_market_exposure import ALICE, BOB, WINDOW, refused, state, ticket


def test_a_restarted_miner_still_counts_the_tickets_it_accepted(tmp_path: Path) -> None:
    st = state(alice=(100, 0), bob=(50, 0))
    before = Exposure(WINDOW, tmp_path / FILE_NAME)
    before.admit(st, 1, "t1", ticket(ALICE, 60))
    before.admit(st, 1, "t2", ticket(ALICE, 30))
    before.admit(st, 1, "t3", ticket(BOB, 50))

    after = Exposure(WINDOW, tmp_path / FILE_NAME)  # the miner came back
    assert after.open_for(ALICE) == 90 and after.open_for(BOB) == 50
    message = refused(after, st, 2, "t4", ticket(ALICE, 11))  # 90 + 11 > 100
    assert "plus 90 units of its other open tickets" in message
    refused(after, st, 2, "t5", ticket(BOB, 1))
    after.admit(st, 2, "t4", ticket(ALICE, 10))  # what is left of the escrow still backs work

    again = Exposure(WINDOW, tmp_path / FILE_NAME)
    assert again.open_for(ALICE) == 100
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o077 == 0  # as apikeys


def test_what_stopped_counting_stays_forgotten_after_a_restart(tmp_path: Path) -> None:
    st = state(alice=(100, 0))
    before = Exposure(WINDOW, tmp_path / FILE_NAME)
    before.admit(st, 1, "t1", ticket(ALICE, 100, expiry=5))
    before.admit(st, 1, "t2", ticket(ALICE, 0, expiry=50))
    st.update({TASK + "t1": {"status": "confirmed"}})  # the chain settled it
    before.admit(st, 2, "t3", ticket(ALICE, 100, expiry=5))

    after = Exposure(WINDOW, tmp_path / FILE_NAME)
    assert after.open_for(ALICE) == 100  # t1 settled, t3 open
    refused(after, st, 4, "t4", ticket(ALICE, 1, expiry=9))
    # past t3's last valid height (its expiry, 5) no block can settle it, restart or not
    after.admit(st, 5, "t4", ticket(ALICE, 100, ref=5, expiry=9))
    assert Exposure(WINDOW, tmp_path / FILE_NAME).open_for(ALICE) == 100


def test_without_a_folder_the_table_is_in_memory_as_before() -> None:
    st = state(alice=(100, 0))
    first = Exposure(WINDOW)
    first.admit(st, 1, "t1", ticket(ALICE, 100))
    assert first.open_for(ALICE) == 100
    assert Exposure(WINDOW).open_for(ALICE) == 0  # nothing shared between two in memory


def test_a_miner_keeps_its_table_in_its_node_folder(tmp_path: Path) -> None:
    """What `Miner` builds (dn/node/market/miner.py): the file in the node's folder, with the
    chain's ticket window."""
    home = NodeHome.named("default", tmp_path)
    params = default_params(ticket_window_blocks=7)
    genesis = init_dev_chain(home, {Keypair.generate().address: 10**12}, params=params)
    st = state(alice=(100, 0))
    Exposure.for_chain(home.path, genesis).admit(st, 1, "t1", ticket(ALICE, 100, expiry=50))
    after = Exposure.for_chain(home.path, genesis)
    assert (home.path / FILE_NAME).exists() and after.window == 7
    refused(after, st, 7, "t2", ticket(ALICE, 1, ref=7, expiry=50))  # ref 1 + 7: t1 still open
    after.admit(st, 8, "t2", ticket(ALICE, 100, ref=8, expiry=50))  # block 9 is past 1 + 7
