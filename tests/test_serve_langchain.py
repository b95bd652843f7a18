"""LangChain's `OpenAI` LLM (langchain-openai) pointed at charlm serve, with no code of its own: invoke, stream
and batch, over real HTTP."""

from __future__ import annotations

import pytest
from helpers import serving, tiny_timemachine_model

from charlm.serve.app import create_app

langchain_openai = pytest.importorskip(
    "langchain_openai", reason="langchain-openai is not installed: pip install langchain-openai"
)
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    model = tiny_timemachine_model(tmp_path_factory.mktemp("serve-langchain"))
    with serving(create_app(model)) as url:
        yield langchain_openai.OpenAI(
            base_url=f"{url}/v1", api_key="unused", model=model.path.name, max_tokens=40, temperature=0, max_retries=0
        )


def test_invoke_and_stream_give_the_same_greedy_text(llm):
    whole = llm.invoke("the time traveller")
    assert isinstance(whole, str) and len(whole) == 40
    assert "".join(llm.stream("the time traveller")) == whole


def test_batch_sends_a_list_of_prompts_and_gets_each_its_answer(llm):
    answers = llm.batch(["the time", "the machine"])
    assert answers == [llm.invoke("the time"), llm.invoke("the machine")]
    result = llm.generate(["the time"])
    assert result.llm_output["token_usage"]["completion_tokens"] == 40
