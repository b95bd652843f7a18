"""lm-evaluation-harness (`lm-eval`, model `local-completions`) scoring texts through charlm serve, offline: a
small task defined here on a local JSON-lines file; each text's log-likelihood equals `charlm perplexity
--text`'s for the same text within 1e-4 relative. Its options that make that hold: tokenizer_backend=remote
(the server's own /tokenize: one token per character, charlm's ids), the text's first character as the context
(perplexity scores every character after the first), max_length above the text's length (one window)."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
from helpers import serving, tiny_timemachine_model

from charlm.cli.main import main
from charlm.serve.app import create_app

# lm-eval reads its datasets with `datasets`, which looks for the network and writes a cache at import: neither
for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(name, "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="charlm-hf-"))
lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install 'lm-eval[api]'")
pytestmark = pytest.mark.usefixtures("single_thread")
TEXTS = [
    "the time traveller (for so it will be convenient to speak of him) was expounding a recondite matter to us.",
    "his grey eyes shone and twinkled,\nand his usually pale face was flushed and animated.",
    "there is no difference between time and any of the three dimensions of space",
    "i think",
]


def test_each_texts_log_likelihood_is_charlm_perplexitys(tmp_path, capsys):
    from lm_eval.tasks import TaskManager

    model = tiny_timemachine_model(tmp_path / "model")
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in TEXTS), encoding="utf-8")
    task = {
        "task": "charlm_texts",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "loglikelihood",
        "doc_to_text": "{{text[:1]}}",
        "doc_to_target": "{{text[1:]}}",
        "metric_list": [{"metric": "perplexity"}],
    }
    with serving(create_app(model)) as url:
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"model=charlm,base_url={url}/v1/completions,tokenizer_backend=remote,max_length=512,max_retries=1",
            tasks=[task],
            batch_size=4,
            log_samples=True,
            task_manager=TaskManager(include_defaults=False),
        )
    scored = {sample["doc"]["text"]: sample["filtered_resps"][0][0] for sample in results["samples"]["charlm_texts"]}
    assert set(scored) == set(TEXTS)
    for text in TEXTS:
        capsys.readouterr()
        assert main(["perplexity", "--run-dir", str(model.path), "--text", text, "--json"]) == 0
        figures = json.loads(capsys.readouterr().out)
        assert figures["chars"] == len(text) - 1
        assert -scored[text] == pytest.approx(figures["nats_per_char"] * figures["chars"], rel=1e-4)
