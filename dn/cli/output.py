"""What every command shares: global options, JSON or Rich output, passwords and wallets,
progress.

Data goes to stdout (JSON with --json, otherwise Rich tables); progress and messages to stderr.
Rich and the node client are imported when first used, so `dn --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dn.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console

    from dn.client.http import NodeClient
    from dn.wallet.keys import Keypair
    from dn.wallet.keystore import Keystore, LockedWallet


@dataclass
class Options:
    home: Path | None = None
    node: str | None = None
    json: bool = False
    verbose: int = 0

    def node_url(self) -> str:
        from dn.config import node_url

        return node_url(self.node, self.home)

    def client(self) -> NodeClient:
        from dn.client.http import NodeClient

        return NodeClient(self.node_url())

    def keystore(self) -> Keystore:
        from dn.config import home, wallets_dir
        from dn.wallet.keystore import Keystore

        return Keystore(wallets_dir(home(self.home)))


def opts(ctx: typer.Context) -> Options:
    root = ctx.find_root()
    if not isinstance(root.obj, Options):
        root.obj = Options()
    return root.obj


def stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)  # paths stay whole in logs


def emit(ctx: typer.Context, data: Any, human: Callable[[Console], None] | None = None) -> None:
    """Print `data` as JSON with --json, else call `human` (or pretty-print the JSON)."""
    if opts(ctx).json or human is None:
        sys.stdout.write(json.dumps(data, indent=None if opts(ctx).json else 2) + "\n")
        sys.stdout.flush()
    else:
        human(stdout())


def say(message: str) -> None:
    """A message for the person at the terminal (stderr, never mixed with data)."""
    stderr().print(message)


def read_password(password_file: Path | None, *, confirm: bool = False) -> str:
    """--password-file, then $DN_PASSWORD, then an interactive prompt."""
    if password_file is not None:
        try:
            password = password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise InputError(f"cannot read password file {password_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"cannot read password file {password_file}: not UTF-8 text") from None
    elif "DN_PASSWORD" in os.environ:
        password = os.environ["DN_PASSWORD"]
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        raise InputError("the password is empty")
    return password


def locked_wallet(ctx: typer.Context, name: str, password_file: Path | None) -> LockedWallet:
    """Wallet `name`, to be opened with the password from --password-file, $DN_PASSWORD or a
    prompt, asked only when it is opened (`LockedWallet.unlock`, `Keystore.unlock`)."""
    from dn.wallet.keystore import LockedWallet

    return LockedWallet(opts(ctx).keystore(), name, lambda: read_password(password_file))


def unlock(ctx: typer.Context, name: str, password_file: Path | None) -> Keypair:
    """Open wallet `name` now (checked before the prompt). Every command that signs with a
    wallet opens it through `locked_wallet`, here or inside the library flow it calls."""
    return locked_wallet(ctx, name, password_file).unlock()


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields `update(done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int) -> None:
            bar.update(task, completed=done, total=new_total)

        yield update


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(str(cell) for cell in row))
    return out
