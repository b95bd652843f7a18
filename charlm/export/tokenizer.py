"""tokenizer.json: a model's characters in the Hugging Face `tokenizers` format, so that a tool which counts
tokens that way (transformers' AutoTokenizer, lm-evaluation-harness, a serving stack) counts them as charlm
does: one token per character, ids in the vocabulary's order.

The pieces: a pre-tokenizer that isolates every character (the regex [\\s\\S], line breaks included), a
word-level model whose words are the characters, the reserved symbols (<eod>, <unk>) as special tokens
matched whole, and the Fuse decoder, which joins tokens without spaces. A character the model never saw is
<unk> where the vocabulary has it, and an error in `tokenizers` where it has not (as charlm refuses it).
"""

from __future__ import annotations

import json

from charlm.data.vocab import Vocab

EACH_CHARACTER = {"type": "Split", "pattern": {"Regex": "[\\s\\S]"}, "behavior": "Isolated", "invert": False}


def tokenizer_json(vocab: Vocab) -> str:
    """The text of tokenizer.json for `vocab`."""
    reserved = [i for i in (vocab.eod, vocab.unk) if i is not None]
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": vocab.chars[i],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i in sorted(reserved)
        ],
        "normalizer": None,
        "pre_tokenizer": EACH_CHARACTER,
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "WordLevel",
            "vocab": {char: i for i, char in enumerate(vocab.chars)},
            "unk_token": vocab.chars[vocab.unk] if vocab.unk is not None else "<unk>",
        },
    }
    return json.dumps(spec, indent=1, ensure_ascii=False) + "\n"


def tokenizer_config(vocab: Vocab) -> str:
    """tokenizer_config.json: which class reads tokenizer.json (transformers' AutoTokenizer asks), its special
    tokens, and no clean-up of spaces (a character model's spaces are characters)."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000_000,
    }
    if vocab.unk is not None:
        config["unk_token"] = vocab.chars[vocab.unk]
    if vocab.eod is not None:
        config["eos_token"] = vocab.chars[vocab.eod]
    return json.dumps(config, indent=1, ensure_ascii=False) + "\n"
