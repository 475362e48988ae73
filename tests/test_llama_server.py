"""The embedded server's two changes to llama-cpp-python: the post's grammar (``POST_PATTERN``) and
grammar-last sampling (``GrammarLastSampler``), the latter against llama-cpp-python's own sampler
on the real SmolLM2 in this process."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smm4h_cli.generation.generate import GenerateOptions, plan_calls
from smm4h_cli.generation.parsing import fragment, parse_json_posts
from smm4h_cli.generation.prompts import builtin_task
from smm4h_cli.generation.structured import MAX_POST_CHARS, POST_PATTERN
from tests.test_generate import train5  # noqa: F401 (fixture)

# ------------------------------------------------------------------------------ the post's shape


@pytest.mark.parametrize("post", [
    "my son has asthma and his inhaler ran out",
    "@CDCgov 2 kids down with the flu",
    "#flu season hit us hard",
    "Day 3 of my daughter's fever\nstill 101",
    "x" * 40 + " " + "y" * 40 + " " + "z" * 196,
])
def test_posts_of_three_words_or_more_have_the_grammars_shape(post):
    assert re.fullmatch(POST_PATTERN, post)


@pytest.mark.parametrize("item", [
    "adults/kids", "#speechdelay", "Istanbul, Turkey", "my son has [asthma]", '"quoted" post of three', "4 kids sick today",
    " leading space here", "two  spaces here", "x" * 41 + " two words", "a b " + "c" * 280,
])
def test_fragments_and_markup_do_not(item):
    assert not re.fullmatch(POST_PATTERN, item)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(POST_PATTERN, fullmatch=True))
def test_every_post_the_grammar_allows_is_a_tweets_length_and_has_three_words(post):
    assert len(post) <= MAX_POST_CHARS
    assert len(post.split(" ")) >= 3 and not set(post) & set('{}[]<>"\\')
    words = post.split()
    # the fragment rule counts words with letters; the grammar guarantees the first starts with one
    assert words and (re.match(r"[A-Za-z@#]", words[0]) is not None)
    # (a "word" of the grammar may be a tab or a line break alone, which split() drops)
    if len(words) >= 3 and all(re.search(r"[A-Za-z]", w) for w in words[:3]):
        assert not fragment(post)


# ------------------------------------------------------------------------------ grammar-last sampling, real model


@pytest.fixture(scope="module")
def llama():
    """SmolLM2 in this process, as the embedded server loads it, and both of its samplers."""
    from llama_cpp import Llama

    from smm4h_cli.generation.llama_server import in_process

    llm, first, last = in_process(n_ctx=2048, threads=2)  # refuses when both would be grammar-last
    assert first is not last and last.grammar_last
    yield llm, first, last
    Llama._init_sampler = first


def _answer(llama, sampler, request):
    from llama_cpp.llama import Llama

    llm, first, last = llama
    Llama._init_sampler = first if sampler == "first" else last
    llm.reset()  # the whole prompt evaluated afresh: a kept prefix gives logits that differ in the last bits
    try:
        out = llm.create_chat_completion(
            messages=request["messages"], temperature=request["temperature"], max_tokens=request["max_tokens"],
            repeat_penalty=request["extra_body"]["repeat_penalty"], seed=request["seed"], response_format=request["response_format"],
        )
    finally:
        Llama._init_sampler = first
    return out["choices"][0], llm._sampler


def _request(train, temperature: float, seed: int = 0):
    from smm4h_cli.generation.backends import _embedded

    options = GenerateOptions(task=builtin_task(5), n=3, per_call=3, examples=2, temperature=temperature, max_tokens=400,
                              seed=seed, dedup="off", concurrency=1)
    call = plan_calls(options, _embedded(), train)[0]
    assert "response_format" in call.spec.request  # the embedded default: JSON under the grammar
    return call.spec.request, call.prompt


@pytest.mark.slow
def test_greedy_decoding_picks_the_same_tokens_grammar_last_as_grammar_first(llama, train5):
    request, _ = _request(train5, 0.0)
    before, _ = _answer(llama, "first", request)
    after, sampler = _answer(llama, "last", request)
    # the resampling path was taken (the model's first choice refused by the grammar), and still the same answer
    assert sampler.rejected > 0
    assert after["message"]["content"] == before["message"]["content"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_grammar_last_answers_keep_to_the_grammar(llama, train5, seed):
    request, prompt = _request(train5, 0.7, seed)
    choice, sampler = _answer(llama, "last", request)
    assert sampler.rejected > 0
    parsed = parse_json_posts(choice["message"]["content"], 3, choice["finish_reason"], prompt)
    assert choice["finish_reason"] == "stop"
    # the whole answer is the schema's: exactly 3 items, each of the post's shape
    items = re.findall(r'"((?:[^"\\]|\\.)*)"', choice["message"]["content"].split("[", 1)[1])
    assert len(items) == 3 and all(re.fullmatch(POST_PATTERN, item) for item in items)
    assert not parsed.issues.get("invalid_json") and not parsed.issues.get("missing_items")
    # the same request and seed, the same answer
    again, _ = _answer(llama, "last", request)
    assert again["message"]["content"] == choice["message"]["content"]
