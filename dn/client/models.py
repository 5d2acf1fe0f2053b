"""Models from a user's side: find one on this machine, list the known ones, register one on
chain, pull one from the nodes that serve it. `dn model …` and `dn powr eval` are thin shells on
these.

    model = find_local_model("smollm2", ModelStore.default())      # nothing is downloaded
    data = submit_model(client, wallet, store, Path("m.gguf"), name="m", domain="general",
                        price=0, license_="MIT")
    data = pull(client, store, "m")                                   # by name, hash or prefix

Long work takes `bar(description, total)`: a context manager that yields `update(done, total)`
(the CLI passes its progress bar); None shows nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dn.errors import InputError, ModelError

if TYPE_CHECKING:
    from dn.client.http import NodeClient
    from dn.node.node import Node
    from dn.runner.modelstore import ModelStore
    from dn.wallet.keystore import LockedWallet

Update = Callable[[int, int], None]
Bar = Callable[[str, int | None], AbstractContextManager[Update | None]]


def mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


@contextmanager
def no_bar(description: str, total: int | None) -> Iterator[Update | None]:
    yield None


# --- on this machine ------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    """A model file on this machine, and what is known about it without asking a node."""

    path: Path
    name: str
    sha256: str | None
    domain: str | None  # None: not a catalog model, so its domain is not known here

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "domain": self.domain,
        }


def find_local_model(ref: str, store: ModelStore) -> LocalModel:
    """The model `ref` names, among what is already on this machine; nothing is downloaded.

    In order: a known model's name (see `dn model catalog`), which must be installed in `store`;
    a path to a GGUF file; a model in `store` by name, SHA-256 or hash prefix. A known model that
    is not installed, or a name nothing matches, is a ModelError that says what to run.
    """
    from dn.runner.catalog import CATALOG
    from dn.runner.modelstore import SHA_RE

    by_sha = {model.sha256: model for model in CATALOG.values()}
    known = CATALOG.get(ref)
    if known is not None:
        if not store.has(known.sha256):
            raise ModelError(
                f"model {ref} is not installed in {store.root}: run 'dn model fetch {ref}' first",
                reason="not-installed",
            )
        return LocalModel(store.path(known.sha256), ref, known.sha256, known.domain)
    candidate = Path(ref).expanduser()
    if ref.endswith(".gguf") or os.sep in ref or candidate.is_file():
        if not candidate.is_file():
            raise ModelError(f"no model file at {candidate}", reason="missing")
        # A file in some model store is named by its hash: a catalog model is then known.
        found = by_sha.get(candidate.stem) if SHA_RE.fullmatch(candidate.stem) else None
        if found is not None:
            return LocalModel(candidate, found.name, found.sha256, found.domain)
        return LocalModel(candidate, candidate.name, None, None)
    sha = store.find(ref)
    if sha is None:
        raise ModelError(
            f"no model {ref!r}: not a known model ({', '.join(sorted(CATALOG))}), a .gguf file, "
            f"or a model in {store.root} by name, SHA-256 or hash prefix. Known models are "
            "installed with 'dn model fetch NAME', models on chain with 'dn model pull'",
            reason="unknown-model",
        )
    info = store.info(sha) or {}
    known = by_sha.get(sha)
    return LocalModel(
        store.path(sha), str(info.get("name") or sha[:12]), sha, known.domain if known else None
    )


def catalog(store: ModelStore) -> list[dict[str, Any]]:
    """The known models `dn model fetch` installs, each with `installed` (held in `store`)."""
    from dn.runner.catalog import CATALOG

    return [{**model.to_json(), "installed": store.has(model.sha256)} for model in CATALOG.values()]


# --- on chain -------------------------------------------------------------------------------


def check_registration(
    name: str, domain: str, price: int, license_: str, kind: str | None = None
) -> None:
    """InputError naming the option for a name, domain, price, license or kind the chain would
    refuse in a `model.register` (checked before any hashing or password)."""
    from pydantic import ValidationError

    from dn.chain.models import KINDS
    from dn.chain.types import ModelRegister

    if kind is not None and kind not in KINDS:
        raise InputError(f"--kind must be chat or base, not {kind!r}", reason="bad-kind")
    fields = {"model": "0" * 64, "name": name, "domain": domain, "price": price}
    try:
        ModelRegister.model_validate({**fields, "license": license_, "size": 1})
    except ValidationError as exc:
        first = exc.errors()[0]
        option = f"--{first['loc'][0]}" if first["loc"] else "the payload"
        hint = " (lowercase letters, digits, _ or -, starting with a letter)"
        raise InputError(
            f"{option}: {first['msg']}{hint if option == '--domain' else ''}", reason="bad-payload"
        ) from None


def submit_model(
    client: NodeClient,
    wallet: LockedWallet,
    store: ModelStore,
    file: Path,
    *,
    name: str,
    domain: str,
    price: int,
    license_: str = "",
    kind: str | None = None,
    fee: int | str | None = None,
    wait: bool = True,
    bar: Bar | None = None,
) -> dict[str, Any]:
    """Register the GGUF `file` on chain as `name`, owned by `wallet`, at `price` units per
    1,000 output tokens, and keep it in `store` by its hash. `kind` ("chat" or "base") is what
    the file says (`dn.runner.gguf.model_kind`) unless given.

    Cheapest checks first, so a mistake costs no wait and no password: the payload's fields,
    the file's GGUF header, the wallet, then that llama.cpp loads it; only then is the password
    asked, the file hashed into the store and `model.register` sent. Returns the payload
    (`model`, `name`, `domain`, `price`, `license`, `size`, `kind`) with `tx`, `status` and,
    once included, `height`."""
    from dn.client.txs import send
    from dn.runner.gguf import check_loadable, read_header

    check_registration(name, domain, price, license_, kind)
    info = read_header(file)  # not GGUF, truncated, corrupt: a clear ModelError in milliseconds
    wallet.address()
    check_loadable(file)
    keypair = wallet.unlock()
    with (bar or no_bar)(f"hashing {file.name}", None) as update:
        sha = store.add_file(file, name=name, source=f"submit:{file.name}", progress=update)
    payload = {
        "model": sha,
        "name": name,
        "domain": domain,
        "price": price,
        "license": license_,
        "size": file.stat().st_size,
        "kind": kind or info.kind,
    }
    sent = send(client, keypair, "model.register", payload, fee=fee, wait=wait)
    data = {**payload, "tx": sent["id"], "status": sent["status"]}
    if "height" in sent:
        data["height"] = sent["height"]
    return data


def with_local_file(client: NodeClient, store: ModelStore, ref: str) -> dict[str, Any]:
    """Model `ref` as the chain has it, with `local` (its file is in `store`) and `path`."""
    model = client.model(ref)
    info = store.info(model["id"])
    return {**model, "local": info is not None, "path": info["path"] if info else None}


# --- pulling --------------------------------------------------------------------------------


def pull_sources(model: dict[str, Any], first: str | None, node_url: str) -> list[str | None]:
    """Where to pull `model` (as `GET /models/{id}` gives it) from, in order: `first` when
    given, the miners serving it, then the node that described it."""
    return [first, *(m.get("url") for m in model.get("miners") or []), node_url]


def pull(
    client: NodeClient,
    store: ModelStore,
    ref: str,
    *,
    first: str | None = None,
    bar: Bar | None = None,
    notify: Callable[[str], None] | None = None,
    network_key: bytes | None = None,
) -> dict[str, Any]:
    """Fetch the file of model `ref` (a name, hash or prefix the node knows) into `store` from
    `pull_sources`, resumable and checked by SHA-256 (`pull_model`); nothing is fetched when
    `store` has it. Returns `pull_model`'s result with the model's `name`. Ctrl-C keeps what
    arrived, and `notify` is told where before the KeyboardInterrupt goes on.

    With a `network_key` the pull runs as a member of that network (blobs are a peer-to-peer
    route, which a keyed node answers only to members): under a fresh, throwaway node key it
    handshakes with each source, proving the key, on the chain of the node `client` asks."""
    from dn.node.p2p.pull import pull_model

    model = client.model(ref)
    sha = model["id"]
    sources = pull_sources(model, first, client.url)
    if store.has(sha):
        data = pull_model(sha, sources, store)  # a no-op that reports where it is
    else:
        transport = None
        if network_key is not None:
            from dn.node.p2p.session import Member, MemberTransport
            from dn.wallet.keys import Keypair

            genesis_hash = str(client.status()["genesis_hash"])
            transport = MemberTransport(Member(Keypair.generate(), genesis_hash, network_key))
        try:
            with (bar or no_bar)(f"pulling {model['name']}", model["size"]) as update:
                data = pull_model(
                    sha,
                    sources,
                    store,
                    size=model["size"],
                    name=model["name"],
                    progress=update,
                    transport=transport,
                )
        except KeyboardInterrupt:
            kept = store.partial_path(sha)
            if notify is not None and kept.exists():
                notify(
                    f"interrupted: {mib(kept.stat().st_size)} kept in {kept}; "
                    "run 'dn model pull' again to resume"
                )
            raise
    return {**data, "name": model["name"]}


# --- what a miner serves ----------------------------------------------------------------------


def resolve_on_node(node: Node, peers: list[str], ref: str) -> str:
    """The sha256 of model `ref` (a name, or a hash prefix of 8+ digits) from `node`'s chain
    state or, before the node has synced, from the first of `peers` that knows it; an
    InputError when none does."""
    from dn.chain.ledger import MODEL, MODEL_NAME
    from dn.client.http import NodeClient
    from dn.errors import DNError

    sha = node.state.get(MODEL_NAME + ref)
    if sha is None and len(ref) >= 8:
        on_chain = sorted(k[len(MODEL) :] for k, _ in node.state.items() if k.startswith(MODEL))
        sha = next((s for s in on_chain if s.startswith(ref.lower())), None)
    for url in peers:
        if sha is not None:
            break
        try:
            with NodeClient(url, timeout=10.0) as client:
                sha = client.model(ref)["id"]
        except DNError:
            continue
    if sha is None:
        raise InputError(f"no model {ref!r} on this chain (see 'dn model list')")
    return str(sha)


def serving_sources(node: Node, sha: str, peers: list[str]) -> list[str]:
    """Where a node can pull model `sha` from: the URLs of the miners serving it on its chain,
    then `peers`."""
    from dn.chain import tasks
    from dn.chain.ledger import MINER

    serving = tasks.eligible_miners(node.state, sha, node.tip.height)
    sources = [(node.state.get(MINER + m) or {}).get("url") for m in serving]
    return [s for s in [*sources, *peers] if s]


def models_to_serve(
    node: Node,
    peers: list[str],
    store: ModelStore,
    refs: list[str],
    *,
    bar: Bar | None = None,
    network_key: bytes | None = None,
) -> list[str]:
    """The sha256 of each model `refs` names (`resolve_on_node`) or, without `refs`, of every
    model on `node`'s chain that `store` holds; a ModelError when that is none. Those `store`
    does not hold are pulled first (`serving_sources`), as a member of the network when it has
    a `network_key` (blobs are a peer-to-peer route)."""
    from dn.chain.ledger import MODEL
    from dn.node.p2p.pull import pull_model
    from dn.node.p2p.session import Member, MemberTransport

    transport = None
    if network_key is not None:
        transport = MemberTransport(Member(node.key, node.genesis.hash, network_key))

    chosen = [resolve_on_node(node, peers, ref) for ref in refs]
    if not refs:
        on_chain = {k[len(MODEL) :] for k, _ in node.state.items() if k.startswith(MODEL)}
        chosen = sorted(s for s in on_chain if store.has(s))
    if not chosen:
        raise ModelError(
            "nothing to serve: give --model, or put a registered model in the local store "
            "('dn model pull ID' or 'dn model submit FILE')",
            reason="no-model",
        )
    for sha in [s for s in chosen if not store.has(s)]:
        with (bar or no_bar)(f"pulling {sha[:12]}", None) as update:
            sources = serving_sources(node, sha, peers)
            pull_model(sha, sources, store, progress=update, transport=transport)
    return chosen
