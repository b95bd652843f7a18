"""What each endpoint asks of the model, made into a `Job` after every check (a bad request fails here, on
the request's own coroutine, before it takes a place in the queue), and the facts of GET /model."""

from __future__ import annotations

import math
from pathlib import PurePath

from charlm.errors import UsageError
from charlm.evaluate import TextSource, char_losses, reset_id, text_to_score
from charlm.generation.options import SamplingOptions
from charlm.generation.sampling import Stream, check_sizes, read_first, samples, stop_ids
from charlm.generation.text_form import check_prefix, normalise_prefix, start_text
from charlm.serve.jobs import Job, Reply
from charlm.units import perplexity

FIGURES = ("nats_per_char", "bits_per_char", "perplexity", "chars")  # what `charlm perplexity --json` prints


def generation_job(model, body, reply: Reply, mix=None) -> tuple[Job, SamplingOptions]:
    """The job of a POST /generate body (already typed and within the limits) and its options; `mix`: the
    server's ServedMix (serve --mix), or None."""
    options = SamplingOptions(
        temperature=0.0 if body.beam else body.temperature,  # beam search ranks by the model's own probabilities
        top_k=body.top_k,
        top_p=body.top_p,
        num_samples=body.num_samples,
        seed=body.seed,
        beam=body.beam,
        stop=tuple(body.stop),
        repetition_penalty=body.repetition_penalty,
        repetition_window=body.repetition_window,
        weights=body.weights,
    )
    options.check(body.length)
    if options.weights != "fp32" and model.device.type != "cpu":
        raise UsageError(f"weights {options.weights} runs on the CPU and this server's model is on {model.device}")
    # as `charlm generate` reads it: the prefix in the run's text form, <eod> zeroing a row's state where the
    # run trained so
    prefix, reset = normalise_prefix(body.prefix, model.config.data), reset_id(model.config, model.vocab)
    if not options.beam:
        mixing = mix.sampler() if mix is not None else None
        stream = Stream(
            model.net,
            model.vocab,
            prefix,
            length=body.length,
            options=options,
            device=model.device,
            reset=reset,
            mixing=mixing,
        )
        job = Job(reply, rows=options.num_samples, stream=stream, length=body.length, streamed=body.stream)
        job.weights = options.weights
        return job, options
    if body.stream:
        raise UsageError("beam search does not stream: drop stream, or beam to sample")
    if mix is not None:
        raise UsageError("beam search ranks by the network alone and this server samples from its mix: drop beam")
    first = read_first(model.vocab, prefix)  # the checks `samples` makes, before the request waits
    check_sizes(options, body.length, prefix_chars=len(first), model=model.net, device=model.device)
    stop_ids(model.vocab, options.stop)

    def search(job: Job):
        return samples(
            model.net,
            model.vocab,
            prefix,
            length=body.length,
            device=model.device,
            reset=reset,
            progress=job.check,
            **vars(options),
        )

    return Job(reply, rows=options.beam, work=search, length=body.length), options


def scoring_job(model, body, reply: Reply, mix=None) -> Job:
    """The job of a POST /perplexity body: the text encoded (and refused) here, scored in a worker; with
    `mix`, the mix's figures under "mix" (as `perplexity --mix --json`)."""
    scored = text_to_score(model.net, model.vocab, model.checkpoint, TextSource(text=body.text, text_as_file=True))

    def score(job: Job) -> dict:
        losses = char_losses(
            scored.model,
            scored.ids,
            batch_size=scored.streams,
            num_steps=scored.checkpoint.config.train.num_steps,
            device=model.device,
            keep=None if body.bits or mix is not None else 0,
            reset=reset_id(model.config, model.vocab),
            progress=job.check,
            features=mix is not None,
        )
        nats = losses.nats_per_char
        result = dict(zip(FIGURES, (nats, nats / math.log(2), perplexity(nats), losses.chars), strict=True))
        if body.bits:  # bits[i] is the cost of scored[i]: the text's characters after the first
            result["scored"] = model.vocab.decode(scored.ids[1 : losses.chars + 1].tolist())
            result["bits"] = (losses.nats.double() / math.log(2)).tolist()
        if mix is not None:
            result["mix"] = mix.scored(losses, scored.ids, bits=body.bits)
        return result

    return Job(reply, work=score)


def tokenize(model, text: str) -> dict:
    """POST /tokenize: the text in the run's own form, as ids (a character the model never saw is refused)."""
    form = normalise_prefix(text, model.config.data)
    ids = check_prefix(model.vocab, form) if form else []
    return {"tokens": ids, "count": len(ids)}


def tokenizer_info(model) -> dict:
    """GET /tokenizer_info (vLLM's, which lm-evaluation-harness reads): one token per character; the text a
    sample without a prefix starts after stands for the end of a text (`eos_token`), so a text scored from its
    very first character is read after it, as `charlm generate` starts."""
    return {"eos_token": start_text(model.vocab), "vocab_size": len(model.vocab), "tokens": "characters"}


def detokenize(model, ids: list[int]) -> dict:
    """POST /detokenize: the text of character ids (already checked against the vocabulary's size)."""
    return {"prompt": model.vocab.decode(ids)}


def corpus_name(corpus: str) -> str:
    """A built-in corpus's name, or a file's or folder's own name: never where it lies on this machine."""
    return PurePath(corpus.replace("\\", "/")).name if "/" in corpus or "\\" in corpus else corpus


def model_facts(model, mix=None) -> dict:
    """GET /model: what the model card says of the model, as data (and whether it is served mixed)."""
    saved = model.checkpoint
    m, state, record = saved.model_config, saved.train_state, saved.train_state.last_record
    which = "val" if "val_loss" in record else "train"
    loss = record.get(f"{which}_loss")
    return {
        "name": saved.config.name,
        "kind": m.kind,
        "num_layers": m.num_layers,
        "hidden_size": m.hidden_size,
        "input": m.input,
        "embed_size": m.embed_size if m.input == "embedding" else None,
        "parameters": model.net.num_parameters(),
        "vocab_size": len(model.vocab),
        "corpus": corpus_name(saved.config.data.corpus),
        "corpus_sha256": saved.corpus_sha256,
        "epoch": state.epoch,
        "step": state.step,
        "loss_split": which if loss is not None else None,
        "loss": loss,
        "bits_per_char": loss / math.log(2) if loss is not None else None,
        "device": str(model.device),
        "mix": None if mix is None else {"counts": "training split", "max_copy": mix.max_copy},
    }
