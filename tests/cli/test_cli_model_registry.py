"""`dn model submit`, `dn model list`, `dn model show` and `dn model pull` against a real
`dn node start`, with the real SmolLM2 file."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dn.runner.catalog import CATALOG
from tests.cli.conftest import PASSWORD
from tests.cli.helpers import dn, dn_json, said
from tests.cli.test_cli_chain import Devnet, make_wallet, start_devnet
from tests.functional.harness import NodeProcess, free_port
from tests.unit.test_gguf import METADATA, TENSOR, gguf_bytes

SMOLLM2 = CATALOG["smollm2-135m"]
NAME = "smollm2"
PRICE_UNITS = 500_000_000  # --price 0.5 (DN per 1,000 output tokens)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def submit_args(path: Path, password_file: Path, *extra: str, name: str = NAME) -> list[Any]:
    return [
        "model", "submit", path, "--name", name, "--domain", "general", "--price", "0.5",
        "--license", "Apache-2.0", "--wallet", "alice", "--password-file", password_file, *extra,
    ]  # fmt: skip


# --- files that are not a whole GGUF model: refused before any node is asked ----------------


def _not_gguf(tmp_path: Path, model: Path) -> Path:
    path = tmp_path / "notes.gguf"
    path.write_text("hello, this is a text file and not a model\n")
    return path


def _truncated(tmp_path: Path, model: Path) -> Path:
    path = tmp_path / "cut.gguf"
    with model.open("rb") as fh:
        path.write_bytes(fh.read(1 << 20))
    return path


def _empty(tmp_path: Path, model: Path) -> Path:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    return path


def _unloadable(tmp_path: Path, model: Path) -> Path:
    path = tmp_path / "tiny.gguf"  # a well-formed header llama.cpp has no architecture for
    path.write_bytes(gguf_bytes(METADATA, [TENSOR]))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            _not_gguf, "notes.gguf is not a GGUF file (it starts with b'hell')", id="text"
        ),
        pytest.param(_truncated, "cut.gguf is truncated", id="truncated"),
        pytest.param(_empty, "empty.gguf is empty, not a GGUF file", id="empty"),
        pytest.param(_unloadable, "llama.cpp cannot load tiny.gguf", id="unloadable"),
    ],
)
def test_submit_refuses_a_file_that_is_not_a_loadable_gguf(
    dn_home, password_file, tmp_path, smollm2_gguf, make, message
):
    make_wallet("alice", password_file)
    path = make(tmp_path, smollm2_gguf)
    nowhere = f"http://127.0.0.1:{free_port()}"  # reaching for a node would be exit 5, not 6
    result = dn("--node", nowhere, *submit_args(path, password_file), code=6)
    assert message in said(result)
    assert result.stdout == ""
    assert not (dn_home / "models").exists()  # nothing hashed into the store


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        pytest.param(("--domain", "Big Models"), 2, "--domain", id="bad-domain"),
        pytest.param(("--name", "x" * 65), 2, "--name", id="long-name"),
        pytest.param(("--price", "-1"), 2, "price must not be negative", id="negative-price"),
        pytest.param(("--price", "0.0000000001"), 2, "more than 9 decimals", id="fine-price"),
        pytest.param(("--wallet", "ghost"), 3, "no wallet named 'ghost'", id="no-wallet"),
    ],
)
def test_submit_refuses_bad_options_before_any_work(
    dn_home, password_file, smollm2_gguf, change, code, message
):
    make_wallet("alice", password_file)
    args = submit_args(smollm2_gguf, password_file)
    index = args.index(change[0])
    args[index + 1] = change[1]
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = dn("--node", nowhere, *args, code=code)
    assert message in said(result)
    assert not (dn_home / "models").exists()


# --- a real node ------------------------------------------------------------------------------


@dataclass
class Registered:
    devnet: Devnet
    submitted: dict[str, Any]  # what `dn --json model submit` printed


@pytest.fixture(scope="module")
def registered(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path
) -> Iterator[Registered]:
    """One node with alice (1000 DN), and SmolLM2 submitted by alice through the CLI."""
    home = tmp_path_factory.mktemp("registry") / "dnhome"
    password_file = home.parent / "password.txt"
    password_file.write_text(PASSWORD + "\n")
    node = NodeProcess(home)
    try:
        devnet = start_devnet(home, password_file, node.start, via_cli=False)
        submitted = devnet.dn_json(*submit_args(smollm2_gguf, password_file))
        yield Registered(devnet, submitted)
    finally:
        node.stop(timeout=5)


def test_submit_registers_the_real_model_on_chain(registered: Registered):
    devnet, submitted = registered.devnet, registered.submitted
    assert submitted["model"] == SMOLLM2.sha256
    keys = ("name", "domain", "price", "license", "size", "kind", "status")
    assert {k: submitted[k] for k in keys} == {
        "name": NAME,
        "domain": "general",
        "price": PRICE_UNITS,
        "license": "Apache-2.0",
        "size": SMOLLM2.size,
        "kind": "chat",  # read from the file: it has a chat template
        "status": "included",
    }
    tx = devnet.dn_json("chain", "tx", submitted["tx"])
    assert tx["status"] == "included" and tx["height"] == submitted["height"]
    assert tx["tx"]["kind"] == "model.register" and tx["tx"]["sender"] == devnet.alice
    assert tx["tx"]["payload"]["model"] == SMOLLM2.sha256
    assert tx["tx"]["payload"]["kind"] == "chat"
    stored = devnet.home / "models" / f"{SMOLLM2.sha256}.gguf"
    assert sha256(stored) == SMOLLM2.sha256  # the submitter's store holds it by hash
    alice = devnet.dn_json("wallet", "balance", "alice")
    assert alice["nonce"] == 1 and alice["balance"] == 1000 * 10**9 - tx["tx"]["fee"]


def test_list_and_show_give_every_field(registered: Registered, tmp_path):
    devnet, submitted = registered.devnet, registered.submitted
    listed = devnet.dn_json("model", "list")
    assert listed["height"] >= submitted["height"]
    [model] = listed["models"]
    assert model == {
        "id": SMOLLM2.sha256,
        "creator": devnet.alice,
        "name": NAME,
        "domain": "general",
        "price": PRICE_UNITS,
        "license": "Apache-2.0",
        "size": SMOLLM2.size,
        "kind": "chat",
        "height": submitted["height"],
        "retired": False,
        "tasks": 0,
        "tokens": 0,
        "rejected": 0,
        "miners": [],
        "backers": [],
    }
    local = str(devnet.home / "models" / f"{SMOLLM2.sha256}.gguf")
    by_name = devnet.dn_json("model", "show", NAME)
    assert by_name == {**model, "local": True, "path": local}
    assert devnet.dn_json("model", "show", SMOLLM2.sha256[:10]) == by_name
    elsewhere = dn_json(
        "--home", tmp_path / "other", "--node", devnet.node.url, "model", "show", NAME
    )
    assert elsewhere == {**model, "local": False, "path": None}

    table = said(devnet.dn("model", "list"))
    for cell in (NAME, SMOLLM2.sha256[:12], "chat", "general", "0.5", devnet.alice):
        assert cell in table
    shown = said(devnet.dn("model", "show", NAME))
    for text in (SMOLLM2.sha256, "0.5 DN per 1,000 output tokens", "93.8 MiB", local, "chat ("):
        assert text in shown
    assert "no miners serve it yet" in shown


def test_submitting_it_again_fails_with_model_exists(registered: Registered, smollm2_gguf):
    devnet = registered.devnet
    before = devnet.dn_json("wallet", "balance", "alice")
    result = devnet.dn(*submit_args(smollm2_gguf, devnet.password_file), code=4)
    assert f"model {SMOLLM2.sha256[:12]}… is registered already" in said(result)
    assert result.stdout == ""
    assert devnet.dn_json("wallet", "balance", "alice") == before
    assert len(devnet.dn_json("model", "list")["models"]) == 1


def test_show_of_an_unknown_model_is_not_found(registered: Registered):
    result = registered.devnet.dn("model", "show", "no-such-model", code=1)
    assert "no model 'no-such-model' on this chain" in said(result)


def test_pull_fetches_the_model_from_the_node_that_holds_it(registered: Registered, tmp_path):
    devnet = registered.devnet
    other = tmp_path / "other"
    where = ("--home", other, "--node", devnet.node.url)
    pulled = dn_json(*where, "model", "pull", NAME)
    path = other / "models" / f"{SMOLLM2.sha256}.gguf"
    assert pulled["pulled"] is True and pulled["source"] == devnet.node.url
    assert pulled["path"] == str(path) and pulled["size"] == SMOLLM2.size
    assert sha256(path) == SMOLLM2.sha256
    assert not (other / "models" / f"{SMOLLM2.sha256}.gguf.part").exists()
    again = dn(*where, "model", "pull", SMOLLM2.sha256)
    assert "already in the store" in said(again)
    shutil.rmtree(other)
