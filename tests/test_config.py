"""Config: defaults, YAML files, overrides, coercion and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from charlm.config import Config, dump_config, from_dict, load_config, parse_override
from charlm.errors import ConfigError, UsageError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_equal_the_default_experiment_file():
    path = CONFIGS / "jaychou-lstm.yaml"
    if not path.is_file():
        pytest.skip(f"{path.name} does not exist yet: Config() defaults cannot be checked against it")
    assert load_config(path) == Config()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)  # raises ConfigError on an unknown key or a bad value
    assert isinstance(config, Config)
    assert from_dict(config.to_dict()) == config


def test_no_file_gives_the_defaults():
    assert load_config() == Config()
    assert load_config(None, []) == Config()


def test_dump_then_load_round_trips(tmp_path):
    config = load_config(
        None, ["model.kind=gru", "train.lr=0.01", "sample.prefixes=[分开, 不分开了]", "train.clip_norm=null"]
    )
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    assert load_config(path) == config
    assert "分开" in path.read_text(encoding="utf-8")  # written as text, not \u escapes


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("train.lrr=0.1", "did you mean train.lr"),
        ("model.hiden_size=8", "did you mean model.hidden_size"),
        ("modle.kind=gru", "did you mean model"),
        ("data.corpsu=x", "did you mean data.corpus"),
    ],
)
def test_unknown_key_suggests_the_nearest(override, hint):
    with pytest.raises(ConfigError, match="unknown config key") as info:
        load_config(None, [override])
    assert hint in str(info.value)


def test_unknown_key_without_a_near_match_lists_the_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.zzzzzzzz=1"])
    assert "train.zzzzzzzz" in str(info.value)
    assert "valid keys" in str(info.value) and "num_steps" in str(info.value)


def test_unknown_key_in_a_file_is_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lrr: 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"did you mean train\.lr\?"):
        load_config(path)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.lr=-0.1"], "train.lr"),
        (["train.lr=0"], "train.lr"),
        (["train.num_steps=0"], "train.num_steps"),
        (["train.batch_size=-1"], "train.batch_size"),
        (["train.epochs=0"], "train.epochs"),
        (["model.dropout=1.0"], "model.dropout"),
        (["model.dropout=-0.1"], "model.dropout"),
        (["model.hidden_size=0"], "model.hidden_size"),
        (["model.hidden_size=65537"], "model.hidden_size must be in 1..65,536, got 65537"),
        (["model.hidden_size=1000000000000"], "model.hidden_size must be in 1..65,536"),
        (["model.embed_size=70000"], "model.embed_size must be in 1..65,536, got 70000"),
        (["model.embed_size=-3"], "model.embed_size must be in 1..65,536, got -3"),
        (["model.num_layers=100000"], "model.num_layers must be in 1..1,024, got 100000"),
        (["model.num_layers=1025"], "model.num_layers must be in 1..1,024, got 1025"),
        (["model.num_layers=0"], "model.num_layers must be in 1..1,024, got 0"),
        (["data.test_fraction=1.5"], "data.test_fraction"),
        (["data.max_chars=1"], "data.max_chars"),
        (["data.val_fraction=1.0"], "data.val_fraction"),
        (["data.val_fraction=0.6", "data.test_fraction=0.5"], "data.val_fraction + data.test_fraction"),
        (["train.min_lr=0.5", "train.lr=0.1"], "train.min_lr"),
        (["train.clip_norm=0"], "train.clip_norm"),
        (["train.device=tpu"], "train.device"),
        (["train.eval_every_seconds=-1"], "train.eval_every_seconds"),
        (["train.eval_every_seconds=.nan"], "train.eval_every_seconds"),
        (["sample.prefixes=['a', '']"], "sample.prefixes"),
        (["name=' '"], "name"),
        (["model.tie_weights=true", "model.embed_size=8", "model.hidden_size=16"], "model.tie_weights"),
        (["model.tie_weights=true", "model.input=onehot"], "model.tie_weights"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert key in str(info.value)


def test_tie_weights_message_gives_both_sizes():
    with pytest.raises(ConfigError, match=r"embed_size == hidden_size \(got 8 and 16\)"):
        load_config(None, ["model.tie_weights=true", "model.embed_size=8", "model.hidden_size=16"])
    tied = load_config(None, ["model.tie_weights=true", "model.embed_size=16", "model.hidden_size=16"])
    assert tied.model.tie_weights is True


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("model.kind=lstn", "did you mean lstm"),
        ("model.input=one_hot", "did you mean onehot"),
        ("train.optimizer=adamm", "did you mean adam"),
        ("train.schedule=xyz", "choose one of constant, cosine"),
    ],
)
def test_bad_choice_suggests_a_valid_one(override, hint):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert override.split("=")[0] in str(info.value)
    assert hint in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=1.5", "train.epochs must be int"),
        ("train.epochs=true", "train.epochs must be int"),  # a bool is not an int here
        ("model.tie_weights=1", "model.tie_weights must be bool"),
        ("train.deterministic=maybe", "train.deterministic must be bool"),
        ("train.lr=fast", "train.lr must be float"),
        ("model={a: 1}", "unknown config key model.a"),
        ("model=gru", "model must be a mapping"),
    ],
)
def test_wrong_types_are_rejected(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_overrides_set_and_coerce_values():
    c = load_config(
        None,
        [
            "train.lr=0.01",
            "model.kind=gru",
            "train.clip_norm=2",
            "train.min_lr=1e-5",
            "sample.prefixes=分开",
            "data.max_chars=null",
            "name=123",
        ],
    )
    assert c.train.lr == 0.01
    assert c.model.kind == "gru"
    assert c.train.clip_norm == 2.0 and isinstance(c.train.clip_norm, float)  # int -> float
    assert c.train.min_lr == 1e-5 and isinstance(c.train.min_lr, float)  # YAML reads 1e-5 as a string
    assert c.sample.prefixes == ["分开"]  # a single prefix becomes a list
    assert c.data.max_chars is None
    assert c.name == "123"
    # untouched values keep their defaults
    assert c.train.num_steps == Config().train.num_steps


def test_int_coerced_to_float_from_a_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1\n  min_lr: 0\n", encoding="utf-8")
    c = load_config(path)
    assert c.train.lr == 1.0 and type(c.train.lr) is float
    assert c.train.min_lr == 0.0 and type(c.train.min_lr) is float


def test_overrides_apply_on_top_of_a_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: base\ntrain:\n  lr: 0.5\n  epochs: 7\n", encoding="utf-8")
    c = load_config(path, ["train.lr=0.25"])
    assert (c.name, c.train.lr, c.train.epochs) == ("base", 0.25, 7)


@pytest.mark.parametrize("prefix", ["ROMEO:", "yes"])
def test_prefix_override_with_yaml_punctuation_stays_text(prefix):
    assert load_config(None, [f"sample.prefixes={prefix}"]).sample.prefixes == [prefix]


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["train.lr"])


def test_parse_override_keeps_unparsable_yaml_as_text():
    assert parse_override("sample.prefixes=[oops") == ("sample.prefixes", ["[oops"])
    assert parse_override("sample.prefixes=The ") == ("sample.prefixes", ["The "])
    assert parse_override("sample.prefixes=[a, b]") == ("sample.prefixes", ["a", "b"])
    assert parse_override(" train.lr =0.5") == ("train.lr", 0.5)
    assert parse_override("name=") == ("name", "")


def test_override_into_a_scalar_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="lr is not a section"):
        load_config(path, ["train.lr.x=1"])


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain:\n  lr: 1\n   epochs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "not valid YAML" in message and "line 4" in message and str(path) in message


def test_non_utf8_config_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_config_that_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_empty_config_file_gives_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    assert load_config(path) == Config()


def test_missing_config_path_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path)  # a folder is not a config file, and is named for what it is


def test_config_error_is_a_usage_error_with_exit_code_2():
    assert issubclass(ConfigError, UsageError)
    assert ConfigError.exit_code == 2


def test_from_dict_round_trips_to_dict():
    c = load_config(None, ["model.kind=rnn_relu", "train.sampling=random"])
    assert from_dict(c.to_dict()) == c


# ---------------------------------------------------------------------------------------------------
# train.precision, and train.bf16 (its old name) in old configs, run folders and --set


@pytest.mark.parametrize("name", ["auto", "fp32", "bf16", "fp16"])
def test_precision_takes_its_four_values(name):
    assert load_config(None, [f"train.precision={name}"]).train.precision == name


def test_precision_defaults_to_auto_and_a_bad_value_is_named():
    assert Config().train.precision == "auto"
    with pytest.raises(ConfigError, match=r"train.precision = 'bf61' is not valid: did you mean bf16\?"):
        load_config(None, ["train.precision=bf61"])


@pytest.mark.parametrize(("old", "name"), [("true", "bf16"), ("false", "fp32")])
def test_the_old_bf16_key_loads_as_its_precision(tmp_path, old, name):
    path = tmp_path / "old.yaml"
    path.write_text(f"train:\n  lr: 0.01\n  bf16: {old}\n", encoding="utf-8")
    config = load_config(path)
    assert config.train.precision == name and config.train.lr == 0.01
    assert load_config(None, [f"train.bf16={old}"]).train.precision == name
    assert from_dict({"train": {"bf16": old == "true"}}).train.precision == name  # a checkpoint's saved config
    assert "bf16:" not in dump_config(config) and f"precision: {name}" in dump_config(config)


def test_both_keys_agreeing_load_and_disagreeing_are_a_usage_error(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("train:\n  bf16: true\n  precision: bf16\n", encoding="utf-8")
    assert load_config(path).train.precision == "bf16"
    path.write_text("train:\n  bf16: true\n  precision: fp16\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"train.bf16=true and train.precision='fp16' disagree: drop train.bf16"):
        load_config(path)
    with pytest.raises(ConfigError, match="disagree"):
        load_config(None, ["train.precision=auto", "train.bf16=false"])
    with pytest.raises(ConfigError, match="train.bf16 must be true or false"):
        load_config(None, ["train.bf16=fast"])


def test_an_override_in_either_spelling_replaces_the_file_setting(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("train:\n  bf16: true\n", encoding="utf-8")
    assert load_config(old, ["train.precision=fp16"]).train.precision == "fp16"
    assert load_config(old, ["train.bf16=false"]).train.precision == "fp32"
    new = tmp_path / "new.yaml"
    new.write_text("train:\n  precision: auto\n", encoding="utf-8")
    assert load_config(new, ["train.bf16=true"]).train.precision == "bf16"


def test_documents_keys_default_to_today_and_are_checked():
    c = load_config()
    assert (c.data.documents, c.data.min_char_count, c.data.lowercase, c.data.normalize) == ("stream", 0, False, "none")
    assert c.train.reset_state_at_documents is False
    c = load_config(None, ["data.documents=lines", "train.reset_state_at_documents=true", "data.normalize=NFKC"])
    assert c.data.documents == "lines" and c.train.reset_state_at_documents and c.data.normalize == "NFKC"
    for overrides, words in (
        (["data.documents=words"], "data.documents"),
        (["data.normalize=NFD"], "data.normalize"),
        (["data.min_char_count=-1"], "data.min_char_count"),
        (["train.reset_state_at_documents=true"], "data.documents to lines"),
        (["data.documents=lines", "data.newlines=space"], "data.newlines=keep"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_config(None, overrides)
