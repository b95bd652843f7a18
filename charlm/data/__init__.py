"""Corpora, vocabulary and batch iterators: from a corpus name to the (X, Y) batches a model trains on.

The flow, one module a step:

    source  ->  text  ->  vocab  ->  encoded ids  ->  splits  ->  batches

- builtins: the built-in corpora (RemoteFile, Builtin, BUILTINS), the copies shipped in the package
  (packaged_file, read_packaged), the cache folder (data_dir) and the verified download (fetch, is_cached).
- text: a corpus name resolved into files (resolve_source), read in chunks and normalised (iter_text,
  Normalisation: newlines, PTB's separating spaces), and the first pass (scan: characters, length, sha256).
- vocab: the vocabulary (Vocab, sorted code points) and the second pass (encode_chunks), which fills one
  preallocated tensor of ids through a code-point lookup table: no per-character Python work.
- cache: the encoded ids as integer files, memory-mapped by every process that trains on them.
- documents: in data.documents lines / paragraphs / files, each document ended by <eod>; Unicode cleaning.
- corpus: load_corpus ties the steps together and splits the ids into train / val / test (Corpus), between
  documents in a document mode, rare characters as <unk>; training_documents gives the training split's documents;
  encode_file / encode_text encode any file or string with a run's vocabulary and normalisation, to score it.
- batches: the batch iterators (ConsecutiveBatches, RandomBatches, make_batches and their functions).
"""

import importlib

# name -> the module that defines it. Loaded on first use (PEP 562), so that `charlm data list` reads the
# registry without importing torch, which the other modules need.
_WHERE = {
    **dict.fromkeys(
        [
            "ConsecutiveBatches",
            "RandomBatches",
            "bptt_lengths",
            "consecutive_batches",
            "make_batches",
            "min_chars",
            "num_consecutive_batches",
            "num_random_batches",
            "random_batches",
        ],
        "batches",
    ),
    **dict.fromkeys(
        ["BUILTINS", "Builtin", "RemoteFile", "data_dir", "fetch", "is_cached", "packaged_file", "read_packaged"],
        "builtins",
    ),
    "encoded_cache_dir": "cache",
    **dict.fromkeys(["Corpus", "encode_file", "encode_text", "load_corpus", "training_documents"], "corpus"),
    "Vocab": "vocab",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"charlm.data.{_WHERE[name]}"), name)


__all__ = [
    "BUILTINS",
    "Builtin",
    "ConsecutiveBatches",
    "Corpus",
    "RandomBatches",
    "RemoteFile",
    "Vocab",
    "bptt_lengths",
    "consecutive_batches",
    "data_dir",
    "encode_file",
    "encode_text",
    "encoded_cache_dir",
    "fetch",
    "is_cached",
    "load_corpus",
    "training_documents",
    "make_batches",
    "min_chars",
    "num_consecutive_batches",
    "num_random_batches",
    "packaged_file",
    "random_batches",
    "read_packaged",
]
