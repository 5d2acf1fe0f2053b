"""`dn model submit --kind`: the kind the file says (a chat template or an instruct finetune:
chat, else base) is what goes on chain unless `--kind` overrides it; `dn model list` and `show`
say it. Against a real `dn node start`, with the real SmolLM2 and Gemma files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dn.runner.catalog import CATALOG
from tests.cli.conftest import PASSWORD
from tests.cli.helpers import dn, said
from tests.cli.test_cli_chain import Devnet, make_wallet, start_devnet
from tests.cli.test_cli_model_registry import submit_args
from tests.functional.harness import NodeProcess, free_port


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    home = tmp_path_factory.mktemp("kinds") / "dnhome"
    password_file = home.parent / "password.txt"
    password_file.write_text(PASSWORD + "\n")
    node = NodeProcess(home)
    try:
        yield start_devnet(home, password_file, node.start, via_cli=False)
    finally:
        node.stop(timeout=5)


def on_chain(devnet: Devnet, tx_id: str) -> str:
    found = devnet.dn_json("chain", "tx", tx_id)
    assert found["tx"]["kind"] == "model.register"
    return str(found["tx"]["payload"]["kind"])


def test_kind_overrides_what_the_file_says(devnet: Devnet, smollm2_gguf: Path) -> None:
    args = submit_args(smollm2_gguf, devnet.password_file, "--kind", "base", name="smol-base")
    submitted = devnet.dn_json(*args)
    assert submitted["kind"] == "base"  # the file has a chat template: chat, but for --kind
    assert on_chain(devnet, submitted["tx"]) == "base"
    assert devnet.dn_json("model", "show", "smol-base")["kind"] == "base"
    assert "base (continues plain text" in said(devnet.dn("model", "show", "smol-base"))


def test_without_kind_the_file_decides(devnet: Devnet, gemma_gguf: Path) -> None:
    submitted = devnet.dn_json(*submit_args(gemma_gguf, devnet.password_file, name="gemma3"))
    assert submitted["model"] == CATALOG["gemma3-270m"].sha256
    assert submitted["kind"] == "base"  # no chat template, no instruct finetune
    assert on_chain(devnet, submitted["tx"]) == "base"
    kinds = {m["name"]: m["kind"] for m in devnet.dn_json("model", "list")["models"]}
    assert kinds["gemma3"] == "base"


@pytest.mark.parametrize("kind", ["instruct", "Chat", ""])
def test_a_bad_kind_is_refused_before_any_work(
    dn_home: Path, password_file: Path, smollm2_gguf: Path, kind: str
) -> None:
    make_wallet("alice", password_file)
    nowhere = f"http://127.0.0.1:{free_port()}"
    args = submit_args(smollm2_gguf, password_file, "--kind", kind)
    result = dn("--node", nowhere, *args, code=2)
    assert f"--kind must be chat or base, not {kind!r}" in said(result)
    assert not (dn_home / "models").exists()
