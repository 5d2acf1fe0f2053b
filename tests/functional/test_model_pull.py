"""`pull_model`: fetching SmolLM2 by hash from a real node process, resuming a pull cut short,
and refusing a source that serves the wrong bytes (small HTTP servers on 127.0.0.1)."""

from __future__ import annotations

import http.server
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dn.chain.types import Tx
from dn.errors import ModelError
from dn.node.p2p.pull import pull_model
from dn.runner.catalog import CATALOG
from dn.runner.modelstore import ModelStore, sha256_file
from dn.wallet.keys import Keypair
from tests.functional.harness import NodeProcess, free_port, init_chain

SMOLLM2 = CATALOG["smollm2-135m"]
SHA, SIZE = SMOLLM2.sha256, SMOLLM2.size
MB = 1 << 20


@dataclass
class Holder:
    """A node process whose model store holds SmolLM2, registered on its chain."""

    node: NodeProcess
    model: dict[str, object]


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Holder]:
    home = tmp_path_factory.mktemp("holder") / "dnhome"
    creator = Keypair.generate()
    genesis = init_chain(home, {creator.address: 1000 * 10**9}, block_time_ms=100)
    ModelStore.default(home).add_file(smollm2_gguf, name="smollm2", source="test")
    node = NodeProcess(home)
    try:
        node.start()
        with node.client() as client:
            tx = Tx.create(
                creator,
                chain_id=genesis.chain_id,
                kind="model.register",
                nonce=0,
                fee=genesis.params["min_fee"],
                payload={
                    "model": SHA,
                    "name": "smollm2",
                    "domain": "general",
                    "price": 1000,
                    "license": "Apache-2.0",
                    "size": SIZE,
                },
            )
            client.submit(tx.to_json())
            client.wait_for_tx(tx.id, timeout=30)
            model = client.model(SHA)
        yield Holder(node, model)
    finally:
        node.stop(timeout=5)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "puller" / "models")


# --- tiny blob servers ----------------------------------------------------------------------


@dataclass
class BlobServer:
    """Serves one file at `/dn/v1/models/<sha>/blob`, as a node would, and records each
    request's Range header. `honour_range=False` answers every request with the whole file
    (200); `cut_at` closes the connection after that many bytes of the body."""

    path: Path
    honour_range: bool = True
    cut_at: int | None = None
    ranges: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        blob = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                blob.ranges.append(self.headers.get("Range"))
                if self.path != f"/dn/v1/models/{SHA}/blob":
                    self.send_error(404)
                    return
                size = blob.path.stat().st_size
                start = 0
                wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if wanted and blob.honour_range:
                    start = int(wanted[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                limit = size - start if blob.cut_at is None else blob.cut_at
                with blob.path.open("rb") as fh:
                    fh.seek(start)
                    sent = 0
                    while sent < limit and (block := fh.read(min(MB, limit - sent))):
                        try:
                            self.wfile.write(block)
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        sent += len(block)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def serve() -> Iterator[type[BlobServer]]:
    made: list[BlobServer] = []

    class Tracked(BlobServer):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(self)

    yield Tracked
    for server in made:
        server.close()


@pytest.fixture(scope="module")
def wrong_bytes(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """SmolLM2 with one MiB in the middle changed: the right size, the wrong hash."""
    path = tmp_path_factory.mktemp("wrong") / "wrong.gguf"
    shutil.copyfile(smollm2_gguf, path)
    with path.open("r+b") as fh:
        fh.seek(50 * MB)
        fh.write(bytes(MB))
    return path


class Interrupt:
    """A progress callback that presses Ctrl-C once `after` bytes are in the `.part`."""

    def __init__(self, after: int) -> None:
        self.after = after

    def __call__(self, done: int, total: int) -> None:
        if done >= self.after:
            raise KeyboardInterrupt


class Seen:
    """A progress callback that records every (done, total) it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


# --- pulling from a real node ---------------------------------------------------------------


def test_pull_from_a_node_gets_the_model_by_hash(holder: Holder, store: ModelStore):
    assert holder.model["size"] == SIZE
    seen = Seen()
    result = pull_model(SHA, [holder.node.url], store, size=SIZE, name="smollm2", progress=seen)
    assert result["pulled"] is True and result["source"] == holder.node.url
    assert (result["resumed_from"], result["downloaded"], result["failures"]) == (0, SIZE, [])
    assert store.has(SHA) and sha256_file(store.path(SHA)) == SHA
    assert store.info(SHA)["name"] == "smollm2"  # type: ignore[index]
    assert not store.partial_path(SHA).exists()
    assert seen.calls[-1] == (SIZE, SIZE)

    again = pull_model(SHA, [holder.node.url], store, size=SIZE, progress=Interrupt(0))
    assert again["pulled"] is False and again["downloaded"] == 0  # no request, no progress


def test_an_interrupted_pull_resumes_from_its_partial_file(holder: Holder, store: ModelStore):
    with pytest.raises(KeyboardInterrupt):
        pull_model(SHA, [holder.node.url], store, size=SIZE, progress=Interrupt(20 * MB))
    kept = store.partial_path(SHA).stat().st_size
    assert 20 * MB <= kept < SIZE
    assert not store.has(SHA)

    seen = Seen()
    result = pull_model(SHA, [holder.node.url], store, size=SIZE, progress=seen)
    assert result["pulled"] is True
    assert (result["resumed_from"], result["downloaded"]) == (kept, SIZE - kept)
    assert kept < seen.calls[0][0] <= kept + MB  # the first bytes that came were past the .part
    assert sha256_file(store.path(SHA)) == SHA


def test_a_resumed_pull_asks_for_the_rest_with_a_range(
    serve: type[BlobServer], smollm2_gguf: Path, store: ModelStore
):
    good = serve(smollm2_gguf)
    with pytest.raises(KeyboardInterrupt):
        pull_model(SHA, [good.url], store, size=SIZE, progress=Interrupt(30 * MB))
    kept = store.partial_path(SHA).stat().st_size
    result = pull_model(SHA, [good.url], store, size=SIZE)
    assert good.ranges == [None, f"bytes={kept}-"]
    assert (result["resumed_from"], result["downloaded"]) == (kept, SIZE - kept)
    assert sha256_file(store.path(SHA)) == SHA


def test_a_server_that_ignores_the_range_is_read_from_the_start(
    serve: type[BlobServer], smollm2_gguf: Path, wrong_bytes: Path, store: ModelStore
):
    store.ensure_root()
    store.partial_path(SHA).write_bytes(wrong_bytes.read_bytes()[: 60 * MB])  # a bad head
    whole = serve(smollm2_gguf, honour_range=False)
    result = pull_model(SHA, [whole.url], store, size=SIZE)
    assert whole.ranges == [f"bytes={60 * MB}-"]
    assert (result["resumed_from"], result["downloaded"], result["failures"]) == (0, SIZE, [])
    assert sha256_file(store.path(SHA)) == SHA


def test_a_partial_file_with_bad_bytes_is_fetched_again_whole(
    serve: type[BlobServer], smollm2_gguf: Path, wrong_bytes: Path, store: ModelStore
):
    store.ensure_root()
    store.partial_path(SHA).write_bytes(wrong_bytes.read_bytes()[: 60 * MB])  # a bad head
    good = serve(smollm2_gguf)
    result = pull_model(SHA, [good.url], store, size=SIZE)
    assert good.ranges == [f"bytes={60 * MB}-", None]  # the rest, a hash miss, then all of it
    assert (result["resumed_from"], result["downloaded"], result["failures"]) == (
        0,
        SIZE - 60 * MB + SIZE,
        [],
    )
    assert sha256_file(store.path(SHA)) == SHA


# --- bad sources ----------------------------------------------------------------------------


def test_wrong_bytes_are_refused_and_the_next_source_is_used(
    holder: Holder, serve: type[BlobServer], wrong_bytes: Path, store: ModelStore
):
    liar = serve(wrong_bytes)
    nobody = f"http://127.0.0.1:{free_port()}"
    result = pull_model(SHA, [nobody, liar.url, holder.node.url], store, size=SIZE)
    assert result["source"] == holder.node.url
    assert [(f["source"], f["reason"]) for f in result["failures"]] == [
        (nobody, "pull-failed"),
        (liar.url, "bad-hash"),
    ]
    assert "expected " + SHA in result["failures"][1]["message"]
    assert (result["resumed_from"], result["downloaded"]) == (0, 2 * SIZE)  # the liar's, then ours
    assert sha256_file(store.path(SHA)) == SHA


def test_only_wrong_bytes_is_a_hash_error_that_leaves_nothing(
    serve: type[BlobServer], wrong_bytes: Path, store: ModelStore
):
    liar = serve(wrong_bytes)
    with pytest.raises(ModelError) as caught:
        pull_model(SHA, [liar.url], store, size=SIZE)
    assert caught.value.reason == "bad-hash"
    assert "expected " + SHA in caught.value.message
    assert list(store.root.iterdir()) == []  # no model, no sidecar, no .part
    assert liar.ranges == [None]


def test_a_source_that_stops_midway_hands_over_to_the_next(
    holder: Holder, serve: type[BlobServer], smollm2_gguf: Path, store: ModelStore
):
    short = serve(smollm2_gguf, cut_at=30 * MB)
    result = pull_model(SHA, [short.url, holder.node.url], store, size=SIZE)
    assert [f["source"] for f in result["failures"]] == [short.url]
    assert result["source"] == holder.node.url
    assert (result["resumed_from"], result["downloaded"]) == (30 * MB, SIZE)
    assert sha256_file(store.path(SHA)) == SHA


def test_a_source_without_the_model_and_a_dead_one_are_pull_failed(
    serve: type[BlobServer], smollm2_gguf: Path, store: ModelStore
):
    empty = serve(smollm2_gguf)
    other_sha = "0" * 64
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelError) as caught:
        pull_model(other_sha, [empty.url, nobody], store, size=SIZE)
    assert caught.value.reason == "pull-failed"
    assert empty.url in caught.value.message and nobody in caught.value.message
    assert not store.partial_path(other_sha).exists()
