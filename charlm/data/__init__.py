"""Corpora, vocabulary and batch iterators: from a corpus name to the (X, Y) batches a model trains on.

The flow, one module a step:

    source  ->  text  ->  vocab  ->  encoded ids  ->  splits  ->  batches

- builtins: the built-in corpora (RemoteFile, Builtin, BUILTINS), the cache folder (data_dir) and the
  verified download (fetch, is_cached).
- text: a corpus name resolved into files (resolve_source), read in chunks and normalised (iter_text,
  Normalisation: newlines, PTB's separating spaces), and the first pass (scan: characters, length, sha256).
- vocab: the vocabulary (Vocab, sorted code points) and the second pass (encode_chunks), which fills one
  preallocated tensor of ids through a code-point lookup table: no per-character Python work.
- cache: the encoded ids as integer files, memory-mapped by every process that trains on them.
- corpus: load_corpus ties the steps together and splits the ids into train / val / test (Corpus);
  encode_file (encode_text) encodes any file (string) with a run's vocabulary and normalisation, to score it.
- batches: the batch iterators (ConsecutiveBatches, RandomBatches, make_batches and their functions).
"""

from charlm.data.batches import (
    ConsecutiveBatches,
    RandomBatches,
    bptt_lengths,
    consecutive_batches,
    make_batches,
    min_chars,
    num_consecutive_batches,
    num_random_batches,
    random_batches,
)
from charlm.data.builtins import BUILTINS, Builtin, RemoteFile, data_dir, fetch, is_cached
from charlm.data.cache import encoded_cache_dir
from charlm.data.corpus import Corpus, encode_file, encode_text, load_corpus
from charlm.data.vocab import Vocab

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
    "make_batches",
    "min_chars",
    "num_consecutive_batches",
    "num_random_batches",
    "random_batches",
]
