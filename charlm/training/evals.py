"""What a run measures of itself: an eval record while training, the greedy previews, the final eval of best.pt;
after an eval, the best kept, plateau decay and early stopping decided, the line and checkpoint saved.

Scoring is evaluate.py's (the same protocol as `charlm perplexity`); this module says what is scored, on which
split, and what the record holds. The Trainer decides when an eval is due.
"""

from __future__ import annotations

from dataclasses import dataclass

from charlm.evaluate import evaluate, reset_id
from charlm.events import EvalRecord
from charlm.generation.sampling import generate
from charlm.model import match_layout
from charlm.store import checkpoint as ckpt
from charlm.store.layout import BEST
from charlm.training import schedule, stop
from charlm.training.clock import Clock
from charlm.training.output import RunOutput
from charlm.training.parts import RunParts
from charlm.units import perplexity


@dataclass
class Evals:
    """The run's evals, on the raw model (never the DDP wrapper): every rank scores its share of a split."""

    parts: RunParts
    output: RunOutput  # where an eval's line and checkpoint go
    clock: Clock

    def __post_init__(self):
        p = self.parts
        self.config, self.t, self.corpus, self.raw_model = p.config, p.config.train, p.corpus, p.raw_model
        self.ranks, self.state, self.run_dir, self.device = p.ranks, p.state, p.run_dir, p.ranks.device
        self.val_ids = self.corpus.val.to(self.device)

    def evaluate_and_save(self, epoch: int, epoch_batches: int, *, end_of_epoch: bool) -> None:
        """Score the model, keep the best, decide on plateau decay and early stopping, save, report."""
        record = self.record(epoch, epoch_batches)
        is_best = schedule.after_eval(self.state, record.monitored_loss, epoch, self.t)
        record.stopped, record.seconds = self.state.stopped, self.clock.since_last_eval()
        self.output.log(record)  # metrics first: a crash before the checkpoint redoes the eval
        self.output.save(is_best)
        self.parts.reporter.epoch_end(record)
        if samples := self.previews(epoch, end_of_epoch):
            self.parts.reporter.preview(epoch, samples)

    def record(self, epoch: int, epoch_batches: int) -> EvalRecord:
        """The epoch so far (train loss, gradient norm, speed) and the val loss."""
        t, state = self.t, self.state
        weight = max(state.epoch_weight, 1e-9)
        train_loss = self.ranks.mean(state.loss_sum).item() / weight  # the one host sync of the epoch
        batch = state.batch_in_epoch or epoch_batches  # 0 once an epoch is complete
        chars = state.epoch_weight * t.batch_size * t.num_steps
        record = EvalRecord(
            epoch=epoch,
            batch=batch,
            epochs_done=round(epoch - 1 + batch / epoch_batches, 4),
            step=state.step,
            lr=state.lr if state.lr is not None else t.lr,
            train_loss=train_loss,
            train_ppl=perplexity(train_loss),
            grad_norm=state.norm_sum.item() / weight,
            skipped_batches=state.skipped or None,
            chars_per_s=chars / max(state.train_seconds - state.epoch_started_at, 1e-9),
            train_seconds=state.train_seconds,
        )
        if len(self.val_ids):
            val = evaluate(
                self.raw_model,
                self.val_ids,
                batch_size=t.eval_batch_size,
                num_steps=t.num_steps,
                device=self.device,
                max_chars=t.eval_chars,
                ranks=self.ranks,
                reset=reset_id(self.config, self.corpus.vocab),
            )
            record.val_loss, record.val_ppl, record.val_bpc = (
                val["nats_per_char"],
                val["perplexity"],
                val["bits_per_char"],
            )
            record.val_chars, record.val_protocol = val["chars"], val["protocol"]
        return record

    def previews(self, epoch: int, end_of_epoch: bool) -> list[str]:
        """Greedy continuations of the prefixes, when one is due (rank 0, at an epoch's end every
        sample.preview_every epochs, and at the last); [] otherwise."""
        s = self.config.sample
        last = epoch == self.t.epochs or self.state.stopped is not None
        due = self.ranks.is_main and end_of_epoch and s.preview_every and (epoch % s.preview_every == 0 or last)
        if not (due and self.parts.prefixes):
            return []
        return [
            generate(self.raw_model, self.corpus.vocab, p, s.length, device=self.device)[0] for p in self.parts.prefixes
        ]

    def final(self, requests: stop.StopSignals | stop.AgreedStop) -> dict:
        """The best checkpoint on the whole val split (when training evals were subsampled) and the test split.

        Appended to metrics.jsonl as {"event": "final", ...}; empty when there is nothing new to measure. A stop
        signal (`requests`, read after each window: a split can take minutes) raises Interrupted before the
        line is written: the run is then a stopped one, whose resume makes the final eval again.
        """
        t, corpus = self.t, self.corpus
        splits = [
            name
            for name, ids in (("val", corpus.val), ("test", corpus.test))
            if len(ids) > 1 and (name == "test" or t.eval_chars is not None)
        ]
        if not splits or not (self.run_dir / BEST).exists():
            return {}
        # every process reads it (as on resume, the run folder is shared); rank 0 finished writing it in save()
        best = ckpt.load(self.run_dir / BEST)
        self.raw_model.load_state_dict(match_layout(best.model, self.raw_model.per_layer))
        final = {"event": "final", "checkpoint": "best", "epoch": self.state.best_epoch, "step": best.train_state.step}
        for name in splits:
            result = evaluate(
                self.raw_model,
                corpus.split(name),
                batch_size=t.eval_batch_size,
                num_steps=t.num_steps,
                device=self.device,
                ranks=self.ranks,
                reset=reset_id(self.config, self.corpus.vocab),
                progress=lambda chars: self.stop_if_asked(requests),
            )
            final.update(
                {
                    f"{name}_loss": result["nats_per_char"],
                    f"{name}_ppl": result["perplexity"],
                    f"{name}_bpc": result["bits_per_char"],
                    f"{name}_chars": result["chars"],
                    f"{name}_protocol": result["protocol"],
                }
            )
        self.stop_if_asked(requests)  # the last look before the line that says the run has its final figures
        if self.ranks.is_main:
            self.run_dir.metrics.append(final)
        return final

    def stop_if_asked(self, requests: stop.StopSignals | stop.AgreedStop) -> None:
        """Between two windows of the final eval: every rank reads the stop request at the same window."""
        requests.poll()
        if requests.signum is not None:
            raise stop.interrupted(requests, self.state, self.run_dir.path, self.ranks)
