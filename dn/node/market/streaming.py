"""The generator's side of a task, streamed (`dn.node.market.miner.Miner.generate`).

The engine decodes on its own thread; a worker thread reads the tokens, turns them into text
(`StopScanner` holds back what could begin a stop string and ends the answer with the token that
completes the first match), records the task and signs the attestation; the event loop only
forwards what the worker queued, in batches when the reader is slower than the engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from dn.chain import tasks
from dn.runner.llama import LoadedModel, TokenStream
from dn.runner.sampling import Decoding, StopScanner

if TYPE_CHECKING:
    from dn.node.market.miner import Miner, _Job


async def stream_answer(
    miner: Miner, job: _Job, model: LoadedModel, stream: TokenStream, decoding: Decoding
) -> AsyncIterator[dict[str, Any]]:
    """The generator's stream of one task (`Miner.generate`): the tokens as the engine decodes
    them, batched for a slow reader, with their text (ending before a stop string) and, when
    asked, their log-probabilities; then the signed attestation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
    stop = threading.Event()
    done = asyncio.Event()

    def put(item: dict[str, Any] | BaseException | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            decoder = model.text_decoder()
            shown = StopScanner(decoding.stop)  # the text ends before a stop string
            produced: list[int] = []
            try:
                for token in stream:
                    if stop.is_set():
                        return
                    token = miner.behaviour.token(token, len(produced), model.n_vocab)
                    produced.append(token)
                    event: dict[str, Any] = {
                        "tokens": [token],
                        "text": shown.feed(decoder.piece(token).text),
                    }
                    if decoding.logprobs is not None:
                        claim = stream.logprobs.popleft()
                        event["logprobs"] = [claim]
                        event["logprob_texts"] = [
                            [
                                model.token_text(token),
                                [model.token_text(t) for t, _ in claim["top"]],
                            ]
                        ]
                    put(event)
                    if miner.behaviour.hold(len(produced), stop):
                        return
                    if shown.matched:
                        break  # the token that completed the first match is the last
            finally:
                stream.close()
            tail = shown.feed(decoder.flush()) + shown.flush()
            if tail:
                put({"tokens": [], "text": tail})
            miner.records.put(
                job.task,
                tasks.GENERATOR,
                ticket=job.ticket,
                task_input=job.task_input,
                tokens=produced,
            )
            att = miner._attest(job, tasks.GENERATOR, produced, tasks.GENERATED, "")
            put({"done": True, "task": job.task, "attestation": att})
        except BaseException as exc:  # noqa: BLE001 - handed to the stream's reader
            put(exc)
        finally:
            put(None)
            loop.call_soon_threadsafe(done.set)

    # Its own thread, not the loop's shared pool: a stream is paced by the engine's steps
    # for its whole length, and the slots already bound how many run at once.
    threading.Thread(target=work, name=f"dn-generate-{job.task[:8]}", daemon=True).start()
    try:
        ended = False
        while not ended:
            items = [await queue.get()]
            while not queue.empty():  # a slow reader gets tokens in batches, not late
                items.append(queue.get_nowait())
            batch: dict[str, Any] | None = None
            for item in items:
                if item is None:
                    ended = True
                    break
                if isinstance(item, BaseException):
                    raise item
                if "tokens" not in item:  # the final attestation
                    if batch is not None:
                        yield batch
                        batch = None
                    yield item
                    continue
                if batch is None:
                    batch = {"tokens": [], "text": ""}
                batch["tokens"] += item["tokens"]
                batch["text"] += item["text"]
                for name in ("logprobs", "logprob_texts"):
                    if name in item:
                        batch[name] = batch.get(name, []) + item[name]
            if batch is not None:
                yield batch
    finally:
        stop.set()
        stream.close()  # frees the slot now; the thread ends at its next token
        await asyncio.shield(done.wait())
