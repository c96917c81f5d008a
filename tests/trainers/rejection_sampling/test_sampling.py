"""Rejection sampling at scale through the trainer's real code path: batched local generation, all-in-flight
server rounds, failures and resume, replicas, truncated and over-long answers, over-long prompts, statistics.

Servers are real HTTP servers on 127.0.0.1 (``tests/generation/openai_stub.py``); the model is the real tiny one.
Every expectation is computed independently (the old one-prompt-per-call loop, hand counts, the tokenizer).
No assertion reads a wall time.
"""

import json
import statistics

import pytest

from chimed_trl.errors import UserError
from chimed_trl.generation import OpenAIGenerator, SamplingParams, TransformersGenerator
from chimed_trl.trainers.rejection_sampling import RejectionSamplingTrainer, prompt_seed

from ...generation.openai_stub import StubProcess, StubServer
from ..test_rejection_sampling import config, lines, names_department, prompts


def server_config(out, urls, **overrides):
    kwargs = dict(generation_backend="server", generation_base_url=urls, generation_model="m",
                  generation_honours_n=True, keep_truncated=False)  # fmt: skip
    kwargs.update(overrides)
    return config(out, **kwargs)


def text_rows(n, marker=lambda i: ""):
    return [{"prompt": [{"role": "user", "content": f"问题{i}{marker(i)}：胸闷应该挂哪个科？"}]} for i in range(n)]


def per_prompt_loop(base_url, trainer, r=0):
    """The old path, independently: one request batch per prompt with its own seed in SamplingParams."""
    gen = OpenAIGenerator(base_url, "m", honours_n=True, show_progress=False)
    a = trainer.args
    return {
        p["id"]: gen.generate(
            [p["prompt"]], SamplingParams(a.num_samples, a.temperature, a.top_p, a.max_new_tokens,
                                          prompt_seed(a.seed, r, p["id"]), top_k=a.sampling_top_k)
        )[0]
        for p in trainer.prompts
    }  # fmt: skip


def by_prompt(rows):
    found = {}
    for x in sorted(rows, key=lambda x: x["sample"]):
        found.setdefault(x["prompt_id"], []).append(x["text"])
    return found


# ----- local: one generate per generation_batch_size prompts, samples independent of the batch size -----------
def test_batch_size_does_not_change_the_samples(tiny_model_dir, tokenizer, tmp_path):
    # bugs caught: the batch size (or the neighbours in a batch) changing a prompt's samples; one generate per
    # prompt instead of per batch; samples differing from the old one-call-per-prompt loop with the same seeds
    rows = prompts(8)
    stores, calls = [], []
    for size in (1, 8, 3):
        trainer = RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, config(tmp_path / f"b{size}", generation_batch_size=size),
            train_dataset=rows,
        )  # fmt: skip
        model = trainer.load_policy(0)
        sizes, generate = [], model.generate

        def counting(*args, _sizes=sizes, _generate=generate, **kwargs):
            _sizes.append(kwargs["input_ids"].shape[0])
            return _generate(*args, **kwargs)

        model.generate = counting
        trainer.sample_and_score(0, model)
        stores.append(lines(tmp_path / f"b{size}" / "round_0" / "samples.jsonl"))
        calls.append(sizes)
    assert calls == [[1] * 8, [8], [3, 3, 2]]  # prompts per generate call (num_return_sequences adds the samples)
    one, eight, three = (by_prompt(s) for s in stores)
    assert one == eight == three
    loop = {}
    fresh = trainer.load_policy(0)
    for p in trainer.prompts:  # the per-prompt loop, computed independently of the trainer
        sampling = SamplingParams(4, 1.0, 1.0, 8, prompt_seed(0, 0, p["id"]))
        loop[p["id"]] = TransformersGenerator(fresh, tokenizer, show_progress=False).generate([p["prompt"]], sampling)[
            0
        ]
    assert eight == loop
    assert len({t for texts in loop.values() for t in texts}) > 16


# ----- server: every request in flight, n in one request, failures, resume, replicas ------------------------
def test_server_round_keeps_every_request_in_flight(tiny_model_dir, tmp_path):
    # 32 prompts x 4 samples against a server answering after a fixed 0.3 s. Bugs caught: one request at a time
    # (the old loop: at most 1 in flight with n honoured), waiting for each store batch before sending the next,
    # samples differing from the per-prompt path, n not in one request.
    with StubServer(latency=0.3) as server:
        trainer = RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, server_config(tmp_path / "s", server.base_url),
            train_dataset=text_rows(32),
        )  # fmt: skip
        trainer.sample_and_score(0, None)
        peak, requests = server.peak, len(server.requests)
        expected = per_prompt_loop(server.base_url, trainer)
    assert requests == 32 and peak >= 8
    stored = lines(tmp_path / "s" / "round_0" / "samples.jsonl")
    assert len(stored) == len({(x["prompt_id"], x["sample"]) for x in stored}) == 128
    assert by_prompt(stored) == expected


def test_a_failing_request_stops_the_round_in_one_line_and_the_rerun_resumes(tiny_model_dir, tmp_path):
    # One prompt gets HTTP 400 (not retried). Bugs caught: a traceback; answers that came back lost (asked
    # again on the rerun); the rerun duplicating or missing samples; answers differing from an uninterrupted run.
    rows = text_rows(8, marker=lambda i: "FAIL" if i == 5 else "")
    out = tmp_path / "f"
    with StubServer(latency=0.3) as server:
        trainer = RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, server_config(out, server.base_url, generation_batch_size=2),
            train_dataset=rows,
        )  # fmt: skip
        with pytest.raises(UserError) as err:
            trainer.sample_and_score(0, None)
        message = str(err.value)
        assert "\n" not in message and server.base_url in message and "HTTP 400" in message
        assert "rerun to resume" in message
        answered = {(r["messages"][-1]["content"], r["seed"]) for r in server.requests if "FAIL" not in str(r)}
        generated = lines(out / "round_0" / "generated.jsonl")
        assert len(generated) == 4 * len(answered) == 4 * 7  # every answer that came back is kept

        server.requests.clear()
        server.fail_marker = None  # the server recovers; the rerun has the same prompts and settings
        trainer = RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, server_config(out, server.base_url, generation_batch_size=2),
            train_dataset=rows,
        )  # fmt: skip
        trainer.sample_and_score(0, None)
        asked_again = [r["messages"][-1]["content"] for r in server.requests]
        expected = per_prompt_loop(server.base_url, trainer)
    assert asked_again == [rows[5]["prompt"][0]["content"]]  # only the prompt that failed
    assert trainer.timings["generated_samples"] == 4  # samples/s counts this attempt's answers only
    stored = lines(out / "round_0" / "samples.jsonl")
    assert len(stored) == len({(x["prompt_id"], x["sample"]) for x in stored}) == 32
    assert by_prompt(stored) == expected


def test_a_replica_dying_mid_round_loses_and_duplicates_nothing(tiny_model_dir, tmp_path):
    # Two real server processes; the second SIGKILLs itself on its 6th request. The round must complete with
    # 0 duplicate and 0 missing samples, equal to the per-prompt path on a healthy server.
    rows = text_rows(24)
    out = tmp_path / "r"
    with StubProcess("--latency", "0.1") as first, StubProcess("--latency", "0.1", "--die_after", "6") as dying:
        args = server_config(out, [first.base_url, dying.base_url], generation_max_concurrency=8)
        trainer = RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, train_dataset=rows)
        trainer.sample_and_score(0, None)
        assert dying.process.wait(timeout=30) == -9
        expected = per_prompt_loop(first.base_url, trainer)
    stored = lines(out / "round_0" / "samples.jsonl")
    keys = [(x["prompt_id"], x["sample"]) for x in stored]
    assert len(keys) == len(set(keys)) == 24 * 4
    assert by_prompt(stored) == expected


def test_launch_mode_starts_k_replicas_dispatches_to_all_and_stops_them(tiny_model_dir, tmp_path, monkeypatch):
    # A real round with generation_backend: launch and replicas: 2 (the OpenAI stub started through the command
    # template). Bugs caught: one replica started (or one used), a replica left running after the round, the
    # replicas not on the round's policy, answers that differ from the per-prompt path.
    import os
    import sys

    from ...generation.openai_stub import StubServer as Reference
    from ...generation.test_server import STUB, gone

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    record = tmp_path / "record"
    record.mkdir()
    command = (
        f"{sys.executable} {STUB} --latency 0.05 --model {{model}} --port {{port}} --record {record}/{{port}}.json"
    )
    args = config(tmp_path / "l", generation_backend="launch", generation_honours_n=True, max_steps=1,
                  generation_server={"command": command, "replicas": 2, "ready_timeout": 60})  # fmt: skip
    trainer = RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, train_dataset=text_rows(12))
    trainer.train()
    seen = [json.loads(p.read_text()) for p in sorted(record.glob("*.json"))]
    assert sorted(x["devices"] for x in seen) == ["6", "7"] and len({x["port"] for x in seen}) == 2
    assert all(os.path.getsize(record / f"{x['port']}.json.requests") > 0 for x in seen)  # both were used
    assert all(gone(x["pid"]) for x in seen)
    assert [s.model for s in trainer.last_server.servers] == [str(tiny_model_dir)] * 2
    with Reference() as reference:
        expected = per_prompt_loop(reference.base_url, trainer)
    stored = lines(tmp_path / "l" / "round_0" / "samples.jsonl")
    assert by_prompt(stored) == expected and {x["backend"] for x in stored} == {"launch"}


def test_dead_server_is_one_line_before_any_model_loads(tiny_model_dir, tmp_path):
    # bug caught: the reward model and policy load (tens of seconds at scale) before a dead URL shows, as a
    # 100-line chained traceback. The reward path does not exist: had it been loaded first, its error would show.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused while we hold it
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        with pytest.raises(UserError) as err:
            RejectionSamplingTrainer(
                str(tiny_model_dir), str(tmp_path / "no-reward-model"), server_config(tmp_path / "d", url),
                train_dataset=prompts(2),
            )  # fmt: skip
    assert url in str(err.value) and "'m'" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "d").exists()


# ----- truncated and over-long answers, over-long prompts ---------------------------------------------------
def test_truncated_answers_never_reach_ranked_or_sft_data(tiny_model_dir, tmp_path):
    # The server marks answers to prompts with LONG as finish_reason=length. Bugs caught: a truncated answer
    # kept (and fine-tuned on / written to ranked.jsonl); the flag lost on the way to samples.jsonl; the count
    # in stats.json disagreeing with the lines.
    rows = text_rows(6, marker=lambda i: "LONG科" if i % 2 else "科")  # every answer names a department
    with StubServer() as server:
        out = tmp_path / "t"
        args = server_config(out, server.base_url, top_k=2, max_steps=1)
        trainer = RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, train_dataset=rows)
        trainer.train()
        kept_anyway = tmp_path / "k"
        args = server_config(kept_anyway, server.base_url, top_k=2, max_steps=1, keep_truncated=True)
        RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, train_dataset=rows).train()
    stored = lines(out / "round_0" / "samples.jsonl")
    assert [x["truncated"] for x in stored] == ["LONG" in x["text"] for x in stored]
    assert sum(x["truncated"] for x in stored) == 12
    assert not any(x["kept"] for x in stored if x["truncated"])
    assert sum(x["kept"] for x in stored) == 3 * 2  # the complete prompts keep their top 2
    ranked = lines(out / "round_0" / "ranked.jsonl")
    assert ranked and not any("LONG" in t for r in ranked for t in r["responses"])
    assert not any("LONG" in m["content"] for row in trainer.sft_dataset(stored) for m in row["messages"])
    stats = json.loads((out / "round_0" / "stats.json").read_text())
    assert stats["truncated"] == 12 and stats["truncated_share"] == 12 / 24
    other = lines(kept_anyway / "round_0" / "samples.jsonl")
    assert sum(x["kept"] for x in other if x["truncated"]) == 3 * 2  # keep_truncated: they compete like any other


def chat_tokens(tokenizer, messages, add_generation_prompt):
    """Independent token count: transformers' own tokenizing chat template."""
    return len(
        tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
    )


def long_prompt(turns=False, repeat=12):
    text = "我最近总是头痛，晚上睡不好，白天没有精神，" * repeat + "应该挂哪个科？"
    if not turns:
        return {"prompt": [{"role": "user", "content": text}]}
    return {"prompt": [{"role": "user", "content": "你好" * 40}, {"role": "assistant", "content": "请讲" * 30},
                       {"role": "user", "content": text}]}  # fmt: skip


def test_over_long_prompts_drop_truncate_or_fail(tiny_model_dir, tokenizer, tmp_path, caplog):
    # bugs caught: an over-long prompt sampled and then fine-tuned after TRL cut the sequence (the answer lost);
    # the count missing; truncate_left keeping the start instead of the end; error mode running anyway
    rows = prompts(3) + [long_prompt(), long_prompt(turns=True)]
    budget = 120 - 8
    assert all(chat_tokens(tokenizer, r["prompt"], True) > budget for r in rows[3:])
    assert all(chat_tokens(tokenizer, r["prompt"], True) <= budget for r in rows[:3])
    with caplog.at_level("WARNING"):
        dropped = RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, config(tmp_path / "drop", max_length=120), train_dataset=rows
        )
    assert len(dropped.prompts) == 3 and dropped.prompt_counts["prompts_dropped_overflow"] == 2
    assert "dropped (prompt_overflow: drop)" in caplog.text

    cut = RejectionSamplingTrainer(
        str(tiny_model_dir), names_department, config(tmp_path / "cut", max_length=120, prompt_overflow="truncate_left"),
        train_dataset=rows,
    )  # fmt: skip
    assert len(cut.prompts) == 5 and cut.prompt_counts["prompts_truncated_left"] == 2
    for original, fitted in zip(rows[3:], cut.prompts[3:]):
        assert chat_tokens(tokenizer, fitted["prompt"], True) <= budget
        assert fitted["prompt"][-1]["role"] == "user"
        assert original["prompt"][-1]["content"].endswith(fitted["prompt"][-1]["content"][-20:])
        assert len(fitted["prompt"][-1]["content"]) > 40  # as much of the end as fits, not a stub
    assert [m["role"] for m in cut.prompts[4]["prompt"]] == ["user"]  # the oldest turns went first

    with pytest.raises(UserError, match="has .* tokens; max_length=120 - max_new_tokens=8 leaves room for 112"):
        RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, config(tmp_path / "err", max_length=120, prompt_overflow="error"),
            train_dataset=rows,
        )  # fmt: skip
    assert not (tmp_path / "err").exists()


def test_a_kept_answer_never_exceeds_max_length(tiny_model_dir, tokenizer, tmp_path):
    # The stub server answers with the prompt's text: a long prompt that fits max_length - max_new_tokens gets an
    # answer that does not fit with it, the short ones fit. Bugs caught: length checked on the prompt only, or
    # without the chat template; an over-long answer kept (TRL would cut it); the count missing from stats.
    rows = text_rows(3) + [{"prompt": [{"role": "user", "content": "头痛失眠，" * 12 + "挂哪个科？"}]}]
    longest = max(chat_tokens(tokenizer, r["prompt"], True) for r in rows)
    max_length = longest + 20
    with StubServer() as server:
        args = server_config(tmp_path / "o", server.base_url, max_length=max_length, top_k=2, max_steps=1)
        trainer = RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, train_dataset=rows)
        trainer.train()
    by_id = {p["id"]: p["prompt"] for p in trainer.prompts}
    stored = lines(tmp_path / "o" / "round_0" / "samples.jsonl")
    expected = [
        chat_tokens(tokenizer, by_id[x["prompt_id"]] + [{"role": "assistant", "content": x["text"]}], False)
        > max_length
        for x in stored
    ]
    assert [x["over_length"] for x in stored] == expected and sum(expected) == 4  # the long prompt's 4 answers
    assert not any(x["kept"] for x in stored if x["over_length"]) and sum(x["kept"] for x in stored) == 3 * 2
    stats = json.loads((tmp_path / "o" / "round_0" / "stats.json").read_text())
    assert stats["over_length_dropped"] == 4


def answer_length(prompts, completions):
    """A reward that varies: the answer's length in characters."""
    return [float(len(c)) for c in completions]


# ----- statistics --------------------------------------------------------------------------------------
def test_round_statistics_agree_with_the_stored_lines(tiny_model_dir, tmp_path):
    # Recomputed by hand from samples.jsonl. Timings: present, numbers, and samples_per_second consistent with
    # the unrounded figures it is made of (never compared with a clock). Two tokens drawn from the 3 most likely
    # make duplicate answers certain. Bugs caught: std over kept answers only, duplicates not counted, shares
    # over the wrong denominator, samples/s from a rounded time.
    rows = prompts(4) + [long_prompt(repeat=50)]  # over 1,000 tokens
    args = config(tmp_path / "st", sampling_top_k=3, max_new_tokens=2, top_k=2, max_steps=1, max_length=1024,
                  generation_batch_size=2)  # fmt: skip
    RejectionSamplingTrainer(str(tiny_model_dir), answer_length, args, train_dataset=rows).train()
    stored = lines(tmp_path / "st" / "round_0" / "samples.jsonl")
    stats = json.loads((tmp_path / "st" / "round_0" / "stats.json").read_text())
    rewards = [x["reward"] for x in stored]
    kept = [x["reward"] for x in stored if x["kept"]]
    assert len(set(rewards)) > 1 and len(set(kept)) > 1  # the spreads mean something
    assert stats["samples"] == len(stored) == 16 and stats["prompts_dropped_overflow"] == 1
    texts = by_prompt(stored).values()
    assert stats["duplicates_dropped"] == sum(len(t) - len(set(t)) for t in texts) > 0
    assert stats["kept"] == len(kept) > 0 and stats["kept_share"] == len(kept) / 16
    assert stats["reward_mean"] == pytest.approx(statistics.fmean(rewards), abs=1e-12)
    assert stats["reward_std"] == pytest.approx(statistics.pstdev(rewards), abs=1e-12)
    assert stats["kept_reward_mean"] == pytest.approx(statistics.fmean(kept), abs=1e-12)
    assert stats["kept_reward_std"] == pytest.approx(statistics.pstdev(kept), abs=1e-12)
    assert stats["truncated"] == sum(x["truncated"] for x in stored)
    for key in ("generation_seconds", "scoring_seconds", "training_seconds"):
        assert isinstance(stats[key], float) and stats[key] >= 0
    assert stats["generated_samples"] == 16
    assert stats["samples_per_second"] == pytest.approx(16 / stats["generation_seconds"], rel=1e-9)
