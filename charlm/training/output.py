"""What a run writes as it goes: checkpoints, eval lines (metrics.jsonl, TensorBoard), status.json, its summary.

The run folder's layout and its atomic writes are RunDir's (store/run_dir.py); what a checkpoint holds is
store/checkpoint.py's. Every rank takes part in a save (the hidden state and loss sum are gathered); rank 0
alone writes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from charlm.errors import RunError
from charlm.events import EvalRecord, RunSummary
from charlm.model import match_layout, separate_layers
from charlm.store import checkpoint as ckpt
from charlm.training import resume
from charlm.training.parts import RunParts


@dataclass
class RunOutput:
    """The run folder as the Trainer writes it."""

    parts: RunParts

    def __post_init__(self):
        p = self.parts
        self.config, self.run_dir, self.corpus, self.raw_model = p.config, p.run_dir, p.corpus, p.raw_model
        self.ranks, self.state, self.board = p.ranks, p.state, p.board

    def running(self) -> None:
        if self.ranks.is_main:
            self.run_dir.status.write(
                "running",
                device=self.ranks.describe(),
                parameters=self.raw_model.num_parameters(),
                non_embedding_parameters=self.raw_model.num_parameters(embedding=False),
            )

    def finished(self) -> None:
        if self.ranks.is_main:
            self.run_dir.status.write("finished", device=self.ranks.describe())

    def log(self, record: EvalRecord) -> None:
        """An eval's line: metrics.jsonl, TensorBoard's scalars, and state.last_record (saved with the state)."""
        line = record.to_json()
        if (
            self.ranks.is_main
        ):  # metrics first: a crash before the checkpoint means the eval is redone, its line rewritten
            self.run_dir.metrics.append(line)
        if self.board is not None:
            for key in ("train_loss", "val_loss", "lr", "grad_norm", "chars_per_s"):
                if key in line:
                    self.board.add_scalar(key, line[key], self.state.step)
        self.state.last_record = line

    def save(self, is_best: bool = False) -> None:
        """Checkpoint the run. Every rank takes part (the hidden state and loss sum are gathered); rank 0 writes."""
        state, t = self.state, self.config.train
        checkpoint = ckpt.Checkpoint(
            model=self.saved_weights(),
            model_config=self.config.model,
            vocab=self.corpus.vocab.chars,
            config=self.config,
            corpus_sha256=self.corpus.sha256,
            train_state=resume.checkpoint_state(state, self.ranks),
            optimizer=self.parts.optimizer.state_dict(),
            scaler=self.parts.scaler.state_dict(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if self.ranks.device.type == "cuda" else [],
            ranks=resume.rank_states(self.ranks, state.loss_sum),
        )
        with self.ranks.together():  # a failed write (a full disk) stops every rank, not rank 0 alone
            if self.ranks.is_main:
                self.run_dir.save_checkpoint(
                    ckpt.serialize(checkpoint), is_best, t.keep_last, (state.epoch, state.batch_in_epoch)
                )

    def saved_weights(self) -> dict:
        """The weights in the layout CharRNN(config.model) has, which every reader of a checkpoint builds (the
        model may run its layers apart for train.deterministic: see CharRNN)."""
        return match_layout(self.raw_model.state_dict(), separate_layers(self.config.model))

    def summary(self, seconds: float, final: dict) -> RunSummary:
        monitored = "val_loss" if len(self.corpus.val) else "train_loss"
        records = [r for r in self.run_dir.metrics.read() if "event" not in r] if self.ranks.is_main else []
        state = self.state
        return RunSummary(
            run_dir=str(self.run_dir),
            epochs=self.config.train.epochs,
            epochs_run=state.epoch,
            best_epoch=state.best_epoch,
            best_loss=state.best_loss,
            seconds=seconds,
            train_seconds=state.train_seconds,
            monitored=monitored,
            last=state.last_record,
            losses=[r[monitored] for r in records],
            stopped=state.stopped,
            final=final,
        )

    @contextlib.contextmanager
    def marked_if_it_fails(self):
        """A run that fails or is stopped says so in status.json (a killed one is seen by its dead pid)."""
        try:
            yield
        except (torch.cuda.OutOfMemoryError, MemoryError):
            self.mark_interrupted()
            raise RunError(
                f"out of memory in epoch {self.state.epoch + 1}: lower train.batch_size or "
                f"model.hidden_size; the last checkpoint in {self.run_dir} is intact (resume with "
                "--resume)"
            ) from None
        except BaseException:
            self.mark_interrupted()
            raise
        finally:
            if self.board is not None:
                self.board.close()

    def mark_interrupted(self) -> None:
        if self.ranks.is_main:
            self.run_dir.status.mark_interrupted()
