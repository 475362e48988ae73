"""Issue 14: structured outputs (--output-format), --fill, prompt echoes cut from posts, example copies."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from smm4h_cli.cli import app
from smm4h_cli.errors import InputError
from smm4h_cli.generation.generate import generate
from smm4h_cli.generation.parsing import parse_answer
from smm4h_cli.generation.prompts import builtin_task, few_shot_prompt
from tests.test_generate import TRAIN5, Scripted, _no_openai_env, options, train5  # noqa: F401 (fixtures)

TASK6_PROMPT = few_shot_prompt(builtin_task(6), ["I turned 30 today"], ["Hi AskDocs. For about 3 weeks I have had a dry cough at night"], 3, style="list")


# ------------------------------------------------------------------------------ parsing, crafted answers


def test_json_answers_are_counted_as_honestly_as_lists():
    a, b, c, x, y = "my son has asthma", "her inhaler ran out", "the baby cried all night", "so tired today again", "we saw the doctor"
    assert parse_answer(json.dumps({"posts": [a, b, c]}), 3, "stop", "json").posts == [a, b, c]
    short = parse_answer(json.dumps({"posts": [a]}), 3, "stop", "json")
    assert short.posts == [a] and short.issues == {"missing_items": 2}
    assert parse_answer("", 3, "stop", "json").issues == {"empty": 1}
    assert parse_answer(f"1. {a}\n2. {b}", 3, "stop", "json").issues == {"invalid_json": 1}
    assert parse_answer(json.dumps({"tweets": [a]}), 3, "stop", "json").issues == {"invalid_json": 1}
    cut = parse_answer(json.dumps({"posts": [a, b, c]})[:-6], 3, "length", "json")
    assert cut.posts == [a, b] and cut.issues == {"truncated": 1, "missing_items": 1}
    odd = parse_answer(json.dumps({"posts": [a, 7, "", "output3", x, y]}), 3, "stop", "json")
    assert odd.posts == [a] and odd.issues == {"extra_items": 3, "invalid_items": 1, "empty_items": 1}


def test_echoed_prompt_lines_are_cut_from_a_post_and_counted():
    answer = (
        "1. Today I turned 21 and my mom baked a cake\n"
        "Example of label 0: Hi AskDocs. For about 3 weeks I have had a dry cough at night\n"
        "2. Label 1: 40 years old and still skateboarding\n"
        "3. Examples of label 1:"
    )
    parsed = parse_answer(answer, 3, "stop", "list", TASK6_PROMPT)
    assert parsed.posts == ["Today I turned 21 and my mom baked a cake", "40 years old and still skateboarding"]
    assert parsed.issues == {"prompt_echo": 2, "echo_items": 1}
    # an example echoed on a later line of a post, without a header
    tail = parse_answer("1. My 18th birthday!\nHi AskDocs. For about 3 weeks I have had a dry cough", 1, "stop", "list", TASK6_PROMPT)
    assert tail.posts == ["My 18th birthday!"] and tail.issues == {"prompt_echo": 1}
    # the same rule for JSON items
    js = parse_answer(json.dumps({"posts": ["I am 25 today.\nWrite 3 new fictional tweets of label 1."]}), 1, "stop", "json", TASK6_PROMPT)
    assert js.posts == ["I am 25 today."] and js.issues == {"prompt_echo": 1}


def test_echoes_never_reach_the_posts_of_a_run_and_example_copies_are_flagged(train5):
    """Failed before issue 14: the echoed 'Example of label 0: ...' line stayed inside the post."""
    from smm4h_cli.generation.generate import plan_calls
    from smm4h_cli.generation.backends import resolve_backend

    with Scripted() as server:
        plan = plan_calls(options(n=3, per_call=3, base_url=server.url, output_format="list"), resolve_backend(None, server.url), train5)
    example = plan[0].prompt.split("Examples of label 1:\n")[1].split("\n")[0]
    negative = plan[0].prompt.split("Examples of label 0:\n")[1].split("\n")[0]
    answer = f"1. my son was diagnosed with asthma today\nExample of label 0: {negative}\n2. {example} lol\n3. {example[:-3]}"
    with Scripted({0: [("content", answer)]}) as server:
        frame, summary = generate(options(n=3, per_call=3, base_url=server.url, output_format="list"), train5)
    texts = frame["text"].to_list()
    assert texts[0] == "my son was diagnosed with asthma today" and "label 0" not in " ".join(texts)
    assert frame["duplicate"].to_list() == [None, "example_copy", "example_copy"]
    assert summary.parse_issues.get("prompt_echo") == 1
    assert summary.copies == 2 and summary.duplicates["example_copy"] == 2


# ------------------------------------------------------------------------------ --output-format


def test_json_output_sends_a_schema_of_exactly_per_call_posts(train5, tmp_path):
    with Scripted(json_forms=("json_schema",)) as server:
        frame, summary = generate(options(n=7, per_call=4, base_url=server.url, output_format="json"), train5)
    sent = [f for f in server.formats if f is not None]
    schema = sent[-1]["json_schema"]["schema"]["properties"]["posts"]
    assert sent[-1]["json_schema"]["strict"] is True and (schema["minItems"], schema["maxItems"]) in ((3, 3), (4, 4))
    assert frame.height == 7 and summary.output_format == "json" and summary.parse_issues == {}


def test_auto_probes_a_server_once_and_falls_back_to_the_list(train5):
    with Scripted() as server:  # a server without structured outputs: 400 on response_format
        frame, summary = generate(options(n=6, per_call=3, base_url=server.url), train5)
    assert (summary.output_format, frame.height) == ("list", 6) and summary.output_format_how.startswith("probed")
    assert sum(f is not None for f in server.formats) == 2  # the two forms, asked once each
    with Scripted(json_forms=("json_object",)) as server:  # llama-cpp-python's form
        _, summary = generate(options(n=6, per_call=3, base_url=server.url), train5)
    assert summary.output_format == "json" and "json_object" in summary.output_format_how


def test_json_on_a_server_that_refuses_it_exits_2_naming_the_flag_and_writes_nothing(tmp_path):
    out = tmp_path / "s.jsonl"
    with Scripted() as server:
        result = CliRunner().invoke(app, ["generate", "--n", "6", "--per-call", "3", "--base-url", server.url,
                                          "--output-format", "json", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "--output-format list" in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_call_refused_for_its_response_format_stops_the_run(train5):
    refusal = ("error", 400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.")
    with Scripted({1: [refusal]}, json_forms=("json_schema",)) as server:
        with pytest.raises(InputError, match="--output-format list"):
            generate(options(n=6, per_call=3, base_url=server.url, output_format="json", concurrency=1), train5)


def test_paper_style_list_output_is_the_papers_prompt_and_json_changes_only_the_answer_format():
    args = (builtin_task(5), ["p"], ["n"], 3)
    paper, js = few_shot_prompt(*args, style="paper"), few_shot_prompt(*args, style="paper", output_format="json")
    assert paper.endswith("1. output1\n2. output2\n3. output3")
    assert js.endswith('{"posts": ["output1", "output2", "output3"]}')
    assert paper.rsplit("\n\n", 1)[0] == js.rsplit("\n\n", 1)[0]


# ------------------------------------------------------------------------------ --fill


def test_fill_keeps_calling_until_n_posts_are_kept_and_a_resume_makes_no_call(train5, tmp_path):
    short = ("content", "1. only one post here")
    script = {0: [short], 1: [short], 2: [short]}
    cache = tmp_path / "c.jsonl"
    with Scripted(script) as server:
        frame, summary = generate(options(n=20, per_call=10, base_url=server.url, output_format="list", fill=True, cache_path=cache), train5)
        made = sum(server.attempts.values())
        again, resumed = generate(options(n=20, per_call=10, base_url=server.url, output_format="list", fill=True, cache_path=cache), train5)
        assert sum(server.attempts.values()) == made  # every call answered from the cache
    assert frame.height == summary.posts_kept == 20 and summary.calls > 2 and summary.fill
    assert again["text"].to_list() == frame["text"].to_list() and resumed.calls == summary.calls == resumed.calls_cached


def test_fill_stops_at_max_calls_and_says_how_far_it_got(tmp_path):
    out = tmp_path / "s.jsonl"
    with Scripted({i: [("content", "1. my son has asthma")] for i in range(10)}) as server:
        result = CliRunner().invoke(app, ["generate", "--n", "20", "--base-url", server.url, "--output-format", "list",
                                          "--fill", "--max-calls", "3", "--dedup", "off", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "--fill: kept 3 of 20 after 3 calls (--max-calls 3)" in result.stderr
    assert json.loads(out.with_suffix(".meta.json").read_text())["max_calls"] == 3


@pytest.mark.parametrize("args", [["--fill", "--max-calls", "0"], ["--max-calls", "5"]])
def test_fill_bad_max_calls_exit_2_before_any_call(tmp_path, args):
    result = CliRunner().invoke(app, ["generate", "--n", "10", *args, "-o", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 2 and "--max-calls" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ the real embedded server


@pytest.mark.slow
def test_embedded_json_output_gives_exactly_per_call_posts(train5):
    from smm4h_cli.generation.backends import _embedded

    frame, summary = generate(options(n=3, per_call=3, examples=2, max_tokens=300, timeout=600, concurrency=1, output_format="json"), train5,
                              backend=_embedded())
    assert summary.output_format == "json"
    # the grammar gives exactly 3 items, each of POST_PATTERN's shape; a fragment among them is counted, not kept
    items = summary.posts_parsed + sum(summary.parse_issues.get(k, 0) for k in ("fragment_items", "echo_items", "empty_items"))
    assert items == 3 and "missing_items" not in summary.parse_issues and "invalid_json" not in summary.parse_issues
    assert all(len(t) <= 280 and not set(t) & set('{}[]<>"') for t in frame["text"].to_list())


def test_a_raw_line_break_inside_a_json_string_is_part_of_the_post():
    # llama.cpp's JSON grammar lets control characters through inside strings
    parsed = parse_answer('{"posts": ["my son\nhas asthma", "her inhaler ran out"]}', 2, "stop", "json")
    assert parsed.posts == ["my son\nhas asthma", "her inhaler ran out"] and not parsed.issues


def test_max_calls_below_a_plain_runs_calls_bounds_the_first_round(tmp_path):
    """Failed before: the first round made all ceil(n / per_call) calls whatever --max-calls said (5 calls, max_calls 2)."""
    out = tmp_path / "s.jsonl"
    with Scripted() as server:
        result = CliRunner().invoke(app, ["generate", "--n", "50", "--base-url", server.url, "--output-format", "list",
                                          "--fill", "--max-calls", "2", "--dedup", "off", "-o", str(out)])
        made = sum(server.attempts.values())
    assert result.exit_code == 0, result.output
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert made == meta["calls"] == meta["max_calls"] == 2 and meta["posts_kept"] == 20
    assert "--fill: kept 20 of 50 after 2 calls (--max-calls 2)" in result.stderr


@pytest.mark.parametrize("model, fmt", [
    ("gpt-4o-2024-05-13", "list"), ("o1-mini", "list"), ("o1-mini-2024-09-12", "list"), ("o1-preview", "list"),
    ("o1-preview-2024-09-12", "list"), ("gpt-4o", "json"), ("gpt-4o-2024-08-06", "json"), ("gpt-4o-mini", "json"),
    ("o1", "json"), ("o1-2024-12-17", "json"), ("gpt-4-0125-preview", "list"),
])
def test_auto_gives_json_only_to_openai_snapshots_with_structured_outputs(model, fmt):
    """Failed before: a prefix match gave json to gpt-4o-2024-05-13, o1-mini and o1-preview, which refuse it."""
    from smm4h_cli.generation.structured import known_format

    assert known_format("auto", "openai", model).name == fmt


def test_a_refusal_after_auto_chose_json_does_not_advise_auto(train5):
    """Failed before: the message advised "or auto", which would choose JSON again and fail the same way."""
    refusal = ("error", 400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.")
    with Scripted({1: [refusal]}, json_forms=("json_schema",)) as server:
        with pytest.raises(InputError, match="--output-format list") as auto:
            generate(options(n=6, per_call=3, base_url=server.url, output_format="auto", concurrency=1), train5)
    assert "or auto" not in str(auto.value)
    with Scripted({1: [refusal]}, json_forms=("json_schema",)) as server:
        with pytest.raises(InputError, match="or auto"):  # asked for json: auto is a way out
            generate(options(n=6, per_call=3, base_url=server.url, output_format="json", concurrency=1), train5)


def test_a_busy_server_is_waited_out_by_the_probe_not_taken_for_a_refusal(train5):
    """Failed before: a 5xx (or a timeout) on the probe counted as "refuses JSON": auto fell back to the list."""
    with Scripted({0: [("500",)] * 4}, json_forms=("json_schema",)) as server:
        frame, summary = generate(options(n=6, per_call=3, base_url=server.url, tries=6), train5)
    assert (summary.output_format, summary.output_format_how, frame.height) == ("json", "probed: the server took json_schema", 6)
    with Scripted({0: [("hang", 3)] * 3}, json_forms=("json_schema",)) as server:
        _, summary = generate(options(n=3, per_call=3, base_url=server.url, tries=4, timeout=0.5), train5)
    assert summary.output_format == "json"


@pytest.mark.parametrize("fmt", ["auto", "json"])
def test_a_server_busy_through_every_probe_try_stops_the_run_saying_so(tmp_path, fmt):
    """Failed before: auto silently fell back to the list, and json exited 2 saying the server rejects JSON."""
    out = tmp_path / "s.jsonl"
    with Scripted({0: [("429", 0)] * 10}, json_forms=("json_schema",)) as server:
        result = CliRunner().invoke(app, ["generate", "--n", "6", "--per-call", "3", "--base-url", server.url, "--tries", "2",
                                          "--output-format", fmt, "-o", str(out)])
        assert server.attempts[0] == 2 and sum(server.attempts.values()) == 2  # the probe's two tries, then no call
    assert result.exit_code == 1, result.output
    message = " ".join(result.stderr.split())
    assert "is busy" in message and "HTTP 429 after 2 tries" in message and "run the same command again" in message.lower()
    assert "rejects" not in message and "Traceback" not in result.output and list(tmp_path.iterdir()) == []


def test_llama_cpp_servers_500_naming_json_schema_is_a_refusal_not_a_busy_server():
    """The real llama-cpp-python server, addressed as any compatible one, answers json_schema with
    an HTTP 500 that names it (its request validation): auto moves on to json_object, at once,
    where the probe had taken the 500 for a busy server and stopped the run after every try."""
    from smm4h_cli.generation.backends import Backend, embedded_server
    from smm4h_cli.generation.engine import RetryPolicy
    from smm4h_cli.generation.structured import resolve_output_format

    with embedded_server() as url:
        backend = Backend("compatible", "SmolLM2-135M-Instruct", url, "SmolLM2-135M-Instruct")
        fmt = resolve_output_format("auto", backend, policy=RetryPolicy(tries=2, base=0.01))
    assert (fmt.name, fmt.form) == ("json", "json_object") and fmt.how == "probed: the server took json_object"
