"""tensorfile: a safetensors file is judged by its header (the caller's expectations, offsets that tile the data,
a file as long as the header says) before its data is read; what is not safetensors is a BadFile in a few words."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_unreadable
from safetensors.torch import load, save

from charlm.files import tensorfile
from charlm.files.readback import BadFile

WEIGHTS = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)}


def raw(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


def accept(header: tensorfile.Header) -> None:
    pass


def test_a_file_charlm_wrote_is_read_whole_with_its_header(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(save(WEIGHTS, metadata={"format": "x"}))
    seen = []
    data, header = tensorfile.read(path, seen.append, max_bytes=10**6)
    assert seen == [header] and data == path.read_bytes() and header.size == len(data)
    assert header.tensors == {"a": tensorfile.Tensor("F32", (2, 3)), "b": tensorfile.Tensor("BF16", (4,))}
    assert header.metadata == {"format": "x"}
    assert all(torch.equal(load(data)[k], v) for k, v in WEIGHTS.items())


def test_the_check_sees_the_header_before_any_data_is_read(tmp_path):
    """A header that claims 20 GB, in a sparse file of 20 GB: refused by the caller's check, nothing read."""
    path = tmp_path / "w.safetensors"
    header = raw({"a": {"dtype": "F32", "shape": [5 * 10**9], "data_offsets": [0, 2 * 10**10]}})
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + 2 * 10**10)

    def refuse(found: tensorfile.Header) -> None:
        assert found.size == len(header) + 2 * 10**10
        raise BadFile("not the model's")

    with pytest.raises(BadFile, match="not the model's"):
        tensorfile.read(path, refuse, max_bytes=10**12)
    with pytest.raises(BadFile, match="over the 1,000-byte limit"):
        tensorfile.read(path, accept, max_bytes=1000)


GOOD = {
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
}


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "a header of -1 bytes in 0"),
        (b"\x05\x00\x00", "a header of -1 bytes in 3"),
        (b"\x00" * 64, "a header of 0 bytes in 64"),
        ((10**9).to_bytes(8, "little") + b"{}", "a header of 1,000,000,000 bytes in 10"),
        ((2**63).to_bytes(8, "little") + b"{}" * 10, "a header of"),
        (b"\x07" + b"\x00" * 7 + b'{"a": 1', "not valid JSON"),
        (b"\x04\x00\x00\x00\x00\x00\x00\x00\xff\xfe{}", "not UTF-8"),
        (raw([1, 2]), "its header is not a JSON object"),
        (raw({"__metadata__": {"k": 1}}), "its metadata is not a mapping of texts"),
        (raw({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8), "its entry 'a' is not a tensor's"),
        (raw({"a": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), "unknown dtype 'F7'"),
        (raw({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8), "not a list of whole numbers"),
        (raw({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4), "not a list of whole"),
        (raw({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}}, b"\0" * 8), "not a list of whole numbers"),
        (raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8), "offsets that are not two"),
        (raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 9]}}, b"\0" * 9), "takes 9 bytes where"),
        (raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "do not tile the data"),
        (raw({**GOOD, "b": {**GOOD["b"], "data_offsets": [4, 7]}}, b"\0" * 11), "do not tile the data"),
        (raw(GOOD, b"\0" * 10), "bytes, where its header describes"),
        (raw(GOOD, b"\0" * 12), "bytes, where its header describes"),
        (raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": None}), "bytes, where"),
    ],
)
def test_what_is_not_safetensors_is_a_bad_file_in_a_few_words(tmp_path, content, says):
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    with pytest.raises(BadFile, match=says.replace("(", r"\(")):
        tensorfile.read(path, accept, max_bytes=10**6)


@pytest.mark.parametrize(("damage", "says"), [("fifo", "a FIFO"), ("dev-zero", "a device"), ("folder", "a folder")])
def test_what_is_not_a_regular_file_is_refused_without_waiting(tmp_path, damage, says):
    path = tmp_path / "w.safetensors"
    make_unreadable(path, damage)
    with pytest.raises((BadFile, IsADirectoryError), match=says):
        tensorfile.read(path, accept, max_bytes=10**6)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        tensorfile.read(tmp_path / "none", accept, max_bytes=10)


@pytest.mark.parametrize(
    ("shapes", "dtypes", "says"),
    [
        ({"a": (2, 3), "b": (4,)}, ("F32", "BF16"), None),
        ({"a": (2, 3), "b": (4,), "c": (1,)}, ("F32", "BF16"), "it lacks c"),
        ({"a": (3, 2), "b": (4,)}, ("F32", "BF16"), "a is [2, 3] where [3, 2] is needed"),
        ({"a": (2, 3)}, ("F32", "BF16"), "it has b, which has no place here"),
        ({"a": (2, 3), "b": (4,)}, ("F32",), "b is BF16, not F32"),
    ],
)
def test_refuse_unexpected_names_the_first_difference(tmp_path, shapes, dtypes, says):
    (tmp_path / "w").write_bytes(save(WEIGHTS))
    _, header = tensorfile.read(tmp_path / "w", accept, max_bytes=10**6)
    assert tensorfile.refuse_unexpected(header, shapes, dtypes) == says
