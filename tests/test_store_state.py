"""TrainState and the Checkpoint schema: one definition, the format-1 names on disk, older files still load."""

from __future__ import annotations

import math

import torch
from helpers import make_rnn

from charlm.config import Config
from charlm.events import EvalRecord
from charlm.store import checkpoint as ckpt
from charlm.store.state import TrainState

# the keys a format-1 checkpoint written by charlm 1.0 holds (besides format and version)
FORMAT_1_KEYS = {
    "model",
    "model_args",
    "vocab",
    "config",
    "optimizer",
    "corpus_sha256",
    "torch_rng",
    "cuda_rng",
    "epoch",
    "batch_in_epoch",
    "step",
    "best_loss",
    "best_epoch",
    "skipped",
    "epoch_data_rng",
    "epoch_weight",
    "lr_scale",
    "evals_since_best",
    "plateau_count",
    "train_seconds",
    "epoch_started_at",
    "stopped",
    "state",
    "loss_sum",
    "norm_sum",
    "metrics",
}


def sample_state() -> TrainState:
    return TrainState(
        epoch=2,
        batch_in_epoch=5,
        step=47,
        best_loss=1.5,
        best_epoch=2,
        evals_since_best=1,
        lr_scale=0.5,
        epoch_weight=4.75,
        train_seconds=12.5,
        stopped="time_budget",
        epoch_data_rng=torch.Generator().manual_seed(3).get_state(),
        hidden=(torch.randn(1, 4, 8), torch.randn(1, 4, 8)),
        loss_sum=torch.tensor(9.5),
        norm_sum=torch.tensor(2.25),
        last_record={"epoch": 2, "val_loss": 1.5},
        lr=0.003,
    )


def test_state_dict_uses_the_format_1_names_and_round_trips():
    state = sample_state()
    saved = state.state_dict()
    assert "state" in saved and "hidden" not in saved  # the carried hidden state's name on disk
    assert saved["metrics"] == {"epoch": 2, "val_loss": 1.5} and "last_record" not in saved
    assert "lr" not in saved  # the latest batch's lr is not part of where the run stands
    back = TrainState.from_state_dict(saved)
    for name in (
        "epoch",
        "batch_in_epoch",
        "step",
        "best_loss",
        "best_epoch",
        "evals_since_best",
        "lr_scale",
        "epoch_weight",
        "train_seconds",
        "stopped",
        "last_record",
    ):
        assert getattr(back, name) == getattr(state, name), name
    assert all(torch.equal(a, b) for a, b in zip(back.hidden, state.hidden, strict=True))
    assert torch.equal(back.epoch_data_rng, state.epoch_data_rng) and back.lr is None


def test_an_older_state_without_newer_keys_starts_them_fresh():
    back = TrainState.from_state_dict(
        {"epoch": 3, "step": 10, "loss_sum": torch.tensor(1.0), "norm_sum": torch.tensor(0.5), "state": None}
    )
    assert (back.epoch, back.step, back.plateau_count, back.stopped) == (3, 10, 0, None)
    assert back.best_loss == math.inf and back.last_record == {}


def test_checkpoint_payload_has_the_format_1_keys_and_reads_back(tmp_path):
    model = make_rnn(5, kind="lstm", hidden_size=8)
    config = Config()
    checkpoint = ckpt.Checkpoint(
        model=model.state_dict(),
        model_config=model.config,
        vocab=list("abcde"),
        config=config,
        corpus_sha256="ab" * 32,
        train_state=sample_state(),
        optimizer={"state": {}, "param_groups": []},
        torch_rng=torch.get_rng_state(),
    )
    payload = checkpoint.to_payload()
    # "scaler" (fp16's loss scale) came with train.precision; a file written before it loads with an empty one
    assert set(payload) - {"format", "version"} == FORMAT_1_KEYS | {"scaler"}
    assert payload["model_args"]["vocab_size"] == 5 and payload["model_args"]["kind"] == "lstm"
    ckpt.save(tmp_path / "last.pt", checkpoint)
    back = ckpt.load(tmp_path / "last.pt")
    assert back.config == config and back.model_config == model.config and back.vocab == list("abcde")
    assert back.train_state.step == 47 and back.train_state.stopped == "time_budget"
    rebuilt = back.build_model()
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())


def test_eval_record_line_keeps_its_key_order_and_leaves_out_absent_fields():
    record = EvalRecord(
        epoch=1,
        batch=10,
        epochs_done=1.0,
        step=10,
        lr=0.01,
        train_loss=2.0,
        train_ppl=7.39,
        grad_norm=0.5,
        chars_per_s=1000.0,
        train_seconds=3.0,
    )
    line = record.to_json()
    assert list(line) == [
        "epoch",
        "batch",
        "epochs_done",
        "step",
        "lr",
        "train_loss",
        "train_ppl",
        "grad_norm",
        "chars_per_s",
        "train_seconds",
        "stopped",
        "seconds",
    ]
    assert line["stopped"] is None and record.monitored_loss == 2.0
    record.val_loss, record.skipped_batches = 1.75, 2
    assert record.monitored_loss == 1.75 and {"val_loss", "skipped_batches"} <= set(record.to_json())
