"""Config files and --set values that cannot hurt: aliases, deep nesting, duplicate keys, huge files and
values, names that are paths, integers out of range, sections given whole."""

from __future__ import annotations

import os

import pytest

from charlm.config import load_config
from charlm.errors import ConfigError
from charlm.files import safeyaml


def alias_bomb(key_path: str = "sample.prefixes") -> str:
    """About 500 bytes of nested aliases that expand to 10^9 strings at `key_path`."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    section, key = key_path.split(".")
    lines.append(f"{section}:\n  {key}: *a8")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("key_path", ["sample.prefixes", "train.epochs", "data.corpus"])
def test_an_alias_bomb_is_refused_at_once(tmp_path, key_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(key_path), encoding="utf-8")
    assert path.stat().st_size < 600
    with pytest.raises(ConfigError, match="anchors or aliases") as info:
        load_config(path)
    assert len(str(info.value)) < 200 and "\n" not in str(info.value)


def test_an_alias_in_a_set_value_is_refused():
    with pytest.raises(ConfigError, match="anchors or aliases"):
        load_config(None, ["sample.prefixes=[&a x, *a]"])


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("train: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested deeper than"):
        load_config(path)


def test_duplicate_keys_are_refused_by_name(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  lr: 0.1\n  lr: 0.01\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="repeats the key 'lr' at line 3"):
        load_config(path)


def test_a_config_over_the_size_cap_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * safeyaml.MAX_BYTES + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="over the 1,048,576-byte limit"):
        load_config(path)


def test_a_folder_fifo_or_device_as_config_is_named_for_what_it_is(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo, "/dev/zero"):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_config(path)


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "a/b", "..", ".hidden", "x" * 101, "sp ace"])
def test_name_is_one_path_component(name):
    with pytest.raises(ConfigError, match="it names the run folder"):
        load_config(None, [f"name={name}"])


def test_a_huge_value_is_quoted_short_in_the_error():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["name=" + "x/" * 5_000_000])
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    "override", ["train.seed=99999999999999999999", "train.seed=-1", "train.epochs=99999999999999999999"]
)
def test_integers_out_of_range_are_refused(override):
    with pytest.raises(ConfigError, match=r"2\^63"):
        load_config(None, [override])


def test_a_whole_section_given_with_set_merges_into_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  corpus: a.txt\n  max_chars: 500\n  val_fraction: 0.2\n", encoding="utf-8")
    config = load_config(path, ["data={corpus: b.txt}"])
    assert (config.data.corpus, config.data.max_chars, config.data.val_fraction) == ("b.txt", 500, 0.2)
