"""Decoding options in a task's input (dn/node/taskio.py): what the ticket's hash names, so both
miners decode and check the same way."""

from __future__ import annotations

import pytest

from dn.client.query import with_options
from dn.errors import InputError
from dn.node.taskio import decoding_for, input_hash, normalize_input
from dn.runner.sampling import sampler_key

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def test_default_options_leave_the_input_and_its_hash_as_they_were() -> None:
    plain = normalize_input(CHAT)
    for options in ({}, {"temperature_milli": 0, "seed": 5}, {"top_p_milli": 1000}, {"stop": []}):
        assert with_options(CHAT, options) == plain
        assert input_hash({**CHAT, "options": options}) == input_hash(CHAT)


def test_options_are_part_of_what_the_ticket_names() -> None:
    sampled = with_options(CHAT, {"temperature_milli": 700, "seed": 1})
    assert sampled["options"] == {"temperature_milli": 700, "seed": 1}
    assert input_hash(sampled) != input_hash(CHAT)
    assert input_hash(sampled) != input_hash(with_options(CHAT, {"temperature_milli": 700}))


def test_the_decoding_follows_the_options_and_the_task() -> None:
    greedy = decoding_for(normalize_input(CHAT), "t1")
    assert not greedy.sampled and greedy.key == b"" and greedy.logprobs is None
    opts = {"temperature_milli": 700, "top_p_milli": 900, "stop": ["\n\n"], "logprobs": 2}
    sampled = decoding_for(with_options(CHAT, opts), "t1")
    assert (sampled.temperature, sampled.top_p) == (0.7, 0.9)
    assert sampled.stop == ("\n\n",) and sampled.logprobs == 2
    assert sampled.key == sampler_key(seed=None, task="t1")
    assert decoding_for(with_options(CHAT, opts), "t2").key != sampled.key
    seeded = with_options(CHAT, {**opts, "seed": 9})
    assert (
        decoding_for(seeded, "t1").key
        == decoding_for(seeded, "t2").key
        == sampler_key(seed=9, task="")
    )


@pytest.mark.parametrize(
    "options",
    [
        {"temperature_milli": 2001},
        {"temperature_milli": 0.7},
        {"top_p_milli": -1},
        {"logprobs": 21},
        {"seed": True},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": [""]},
        {"stop": "END"},
        {"mood": 1},
    ],
)
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(InputError):
        with_options(CHAT, options)
