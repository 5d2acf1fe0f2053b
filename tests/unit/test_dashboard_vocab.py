"""Token ids to text for the task page, from the real SmolLM2 file's vocabulary alone
(dn/node/http/dashboard/vocab.py)."""

from __future__ import annotations

from pathlib import Path

from dn.node.http.dashboard.vocab import Vocabularies

# "Hello world, café 😀 test" in SmolLM2's tokenizer: the emoji's four bytes are split over two
# tokens, so its character shows on the token that completes it.
TOKENS = [19556, 905, 28, 37366, 40303, 218, 1028]
TEXTS = ["Hello", " world", ",", " café", " ", "😀", " test"]
END_OF_TEXT = 0  # SmolLM2's <|endoftext|>: a special token, shown as nothing


def test_each_token_gets_its_text_and_characters_stay_whole(smollm2_gguf: Path) -> None:
    vocabs = Vocabularies(keep=1)
    try:
        assert vocabs.texts(smollm2_gguf, TOKENS) == TEXTS
        assert "".join(vocabs.texts(smollm2_gguf, TOKENS)) == "Hello world, café 😀 test"
        assert vocabs.texts(smollm2_gguf, [END_OF_TEXT, 10**7, -1]) == ["", None, None]
        assert vocabs.texts(smollm2_gguf, [40303]) == [" \ufffd"]  # a cut character, replaced
    finally:
        vocabs.close()
