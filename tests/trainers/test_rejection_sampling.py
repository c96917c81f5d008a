"""RejectionSamplingTrainer: selection, store, scoring, bad input, and that the loop really learns.

Every check compares against an independent computation (hand counts, plain transformers/peft forward
passes, a direct generator call with the documented per-prompt seed), never the package against itself.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from chimed_trl.errors import UserError
from chimed_trl.trainers.rejection_sampling import (
    RejectionSamplingConfig,
    RejectionSamplingTrainer,
    SampleStore,
    distinct_n,
    prompt_seed,
    select,
)

from ..conftest import REPO, SERVE_COMMAND

RANKED = REPO / "chimed_trl" / "data" / "samples" / "ranked.jsonl"


def prompts(n: int) -> list[dict]:
    rows = [json.loads(line) for line in RANKED.read_text(encoding="utf-8").splitlines()][:n]
    return [{"prompt": r["prompt"], "reference": r["responses"][0]} for r in rows]


def config(out, **overrides) -> RejectionSamplingConfig:
    kwargs = dict(
        num_rounds=1, num_samples=4, top_k=1, temperature=1.0, max_new_tokens=8, learning_rate=3e-3,
        lr_scheduler_type="constant", num_train_epochs=1, per_device_train_batch_size=8, max_length=256,
        bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[], save_strategy="no", seed=0,
        disable_tqdm=True, logging_steps=1, keep_truncated=True,  # the random tiny model rarely emits EOS
    )  # fmt: skip
    kwargs.update(overrides)
    return RejectionSamplingConfig(output_dir=str(out), **kwargs)


def names_department(prompts, completions):
    """A learnable rule: the answer names a department (科). The random tiny model says it in ~1/4 of samples."""
    return [float("科" in c) for c in completions]


def lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x]


def test_select_hand_cases():
    # bugs: ascending sort, margin taken over the max instead of the mean, duplicates or empty answers kept,
    # a floor applied after top-k (keeping fewer than possible)
    texts = ["a", "b", "a", "", "c", "d"]
    rewards = [0.9, 0.5, 0.9, 5.0, 0.1, 0.7]
    assert select(texts, rewards, top_k=2) == [True, False, False, False, False, True]
    assert select(texts, rewards, top_k=2, dedup=False) == [True, False, True, False, False, False]
    # mean = 8.1 / 6 = 1.35: with margin -0.6 the floor is 0.75, only "a" (0.9) clears it
    assert select(texts, rewards, top_k=3, min_margin=-0.6) == [True, False, False, False, False, False]
    assert select(texts, rewards, top_k=3, min_reward=0.6) == [True, False, False, False, False, True]
    assert select(["x", "y"], [1.0, 1.0], top_k=1) == [True, False]  # ties: the earlier sample


def test_distinct_2_by_hand():
    # "abab": bigrams ab, ba, ab -> 2 distinct of 3; "cc": cc -> 1 of 1; together 3 distinct of 4
    assert distinct_n(["abab", "cc"], 2) == pytest.approx(3 / 4)


def test_store_repair_drops_torn_line_and_partial_prompt(tmp_path):
    # bug: a resumed run keeps a half-written line (JSON error) or a prompt with only some of its samples
    path = tmp_path / "samples.jsonl"
    whole = [{"prompt_id": "p", "sample": i} for i in range(2)]
    partial = [{"prompt_id": "q", "sample": 0}]
    path.write_text("".join(json.dumps(x) + "\n" for x in whole + partial) + '{"prompt_id": "q", "sam')
    store = SampleStore(path, lines_per_prompt=2)
    store.repair()
    assert store.read() == whole
    assert path.read_text().endswith("\n")


def test_store_keeps_unicode_line_separators_inside_a_line(tmp_path):
    # bug (seen with the tiny model's samples): reading with str.splitlines() cuts a line at U+2028 or U+0085,
    # which json.dumps(ensure_ascii=False) does not escape, and the store no longer parses
    store = SampleStore(tmp_path / "samples.jsonl", lines_per_prompt=1)
    rows = [{"prompt_id": "p", "sample": 0, "text": "a\u2028b\x85c\u2029d\x1ce"}]
    store.append(rows)
    store.repair()
    assert store.read() == rows


def test_reward_model_uses_its_own_template_batched_like_unbatched(tiny_model_dir, tmp_path):
    # bugs: scoring with the policy's template, reading the score at a pad position (padding side), scores
    # returned in length-sorted order instead of the input order
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from chimed_trl.scoring import build_scorer
    from chimed_trl.templates import CHIMED

    rm_dir = tmp_path / "rm"
    shutil.copytree(tiny_model_dir / "reward", rm_dir)
    rm_tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    rm_tokenizer.chat_template = CHIMED  # the reward model's format differs from the policy's ChatML
    rm_tokenizer.save_pretrained(rm_dir)
    scorer = build_scorer(str(rm_dir), batch_size=3)
    questions = ["头晕应该挂哪个科？", "胸闷", "孩子发烧咳嗽三天了，要不要去医院？", "腹痛"]
    answers = ["心内科", "建议到心内科就诊，医生会安排心电图。", "儿科", "去消化内科做胃镜检查，规律饮食。"]
    scores = scorer([[{"role": "user", "content": q}] for q in questions], answers)

    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    for q, a, score in zip(questions, answers, scores):
        text = f"[human]:{q}\n[bot]:{a}<|endoftext|>\n"  # the chimed format, written by hand
        ids = rm_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expected = model(input_ids=ids).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) == 4


def test_reward_lora_adapter_loads_on_its_base(tiny_model_dir, tmp_path):
    # bug: an adapter directory loaded as a full model (fails), or the adapter silently ignored (base scores)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from chimed_trl.scoring import load_reward_model

    base_dir = tiny_model_dir / "reward"
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    peft = get_peft_model(
        base, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj"], init_lora_weights=False)
    )
    with torch.no_grad():
        peft.base_model.model.score.modules_to_save["default"].weight.mul_(3.0)
    peft.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    model, _ = load_reward_model(tmp_path / "adapter")
    ids = tokenizer("<|im_start|>user\n头晕<|im_end|>\n<|im_start|>assistant\n心内科<|im_end|>", return_tensors="pt")
    plain = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1).eval()
    with torch.no_grad():
        got, want, bare = (m(**ids).logits[0, 0].item() for m in (model, peft.eval(), plain))
    assert got == pytest.approx(want, abs=1e-5)
    assert abs(got - bare) > 1e-3


def _two_label_reward(tiny_model_dir, tmp_path) -> Path:
    path = tmp_path / "classifier"
    shutil.copytree(tiny_model_dir / "reward", path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["id2label"] = {"0": "bad", "1": "good"}
    cfg["label2id"] = {"bad": 0, "good": 1}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("ends_with_assistant", "must end with a user turn, ends with 'assistant'"),
        ("empty_prompt", "empty prompt"),
        ("blank_user_turn", "empty prompt (the last user turn has no text)"),
        ("top_k_too_large", "top_k=5 is larger than num_samples=4"),
        ("two_label_head", "2 labels; a reward model has exactly one score"),
        ("no_reference", "include_reference is on but the prompt has no 'reference'"),
        # bug: a causal LM (no num_labels in config.json) scored by a randomly initialised head, silently
        ("causal_lm_reward", "is a causal LM, not a reward model (it has no sequence-classification head; train"),
    ],
)
def test_bad_input_fails_before_any_generation(case, message, tiny_model_dir, tmp_path):
    # bug: the mistake surfaces mid-run (after minutes of generation) or as a traceback deep in generate()
    rows, reward, overrides = prompts(3), names_department, {}
    if case == "ends_with_assistant":
        rows[1]["prompt"] = rows[1]["prompt"] + [{"role": "assistant", "content": "好的"}]
    elif case == "empty_prompt":
        rows[2]["prompt"] = []
    elif case == "blank_user_turn":
        rows[0]["prompt"] = [{"role": "user", "content": "  "}]
    elif case == "top_k_too_large":
        overrides = {"top_k": 5}
    elif case == "two_label_head":
        reward = str(_two_label_reward(tiny_model_dir, tmp_path))
    elif case == "causal_lm_reward":
        reward = str(tiny_model_dir)  # the policy itself: Qwen2ForCausalLM, no score.weight
    elif case == "no_reference":
        overrides = {"include_reference": True}
        del rows[2]["reference"]
    out = tmp_path / "run"
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        RejectionSamplingTrainer(
            str(tiny_model_dir), reward_model=reward, args=config(out, **overrides), train_dataset=rows
        )
    if case in ("ends_with_assistant", "empty_prompt", "blank_user_turn"):
        index = {"ends_with_assistant": 1, "empty_prompt": 2, "blank_user_turn": 0}[case]
        assert f"train_dataset[{index}]: field 'prompt'" in str(err.value)  # names the row and the field
    assert not list(out.glob("round_*"))  # nothing generated


def test_output_dir_guard(tiny_model_dir, tmp_path):
    # bug: a run writes into a user's directory, or mixes samples of other settings into an existing store
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty and is not a rejection-sampling run"):
        RejectionSamplingTrainer(str(tiny_model_dir), names_department, config(foreign), train_dataset=prompts(2))
    out = tmp_path / "run"
    # bug (issue 16): an attempt that stopped before its first sample (a bad value found late) made the corrected
    # rerun a dead end ("other settings"): before any sample exists, this run's settings win
    RejectionSamplingTrainer(
        str(tiny_model_dir), names_department, config(out, temperature=0.3), train_dataset=prompts(2)
    )
    trainer = RejectionSamplingTrainer(str(tiny_model_dir), names_department, config(out), train_dataset=prompts(2))
    trainer.train()
    saved = (out / "resolved_config.yaml").read_bytes()
    with pytest.raises(UserError, match=r"other settings \(temperature\)"):
        RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, config(out, temperature=0.7), train_dataset=prompts(2)
        )
    # bug: a changed training key (not in the sampling fingerprint) or another prompt set silently reuses the
    # finished rounds ("round 0 is finished: skipped") and rewrites resolved_config.yaml to claim the new settings
    with pytest.raises(UserError, match=r"other settings \(training.learning_rate: 0.003 -> 0.001\)"):
        RejectionSamplingTrainer(
            str(tiny_model_dir), names_department, config(out, learning_rate=1e-3), train_dataset=prompts(2)
        )
    with pytest.raises(UserError, match=r"other settings \(prompts\)"):
        RejectionSamplingTrainer(str(tiny_model_dir), names_department, config(out), train_dataset=prompts(3))
    assert (out / "resolved_config.yaml").read_bytes() == saved  # the refused runs left the record alone
    # the same run again (only a neutral key changed) is accepted
    RejectionSamplingTrainer(
        str(tiny_model_dir), names_department, config(out, logging_steps=5), train_dataset=prompts(2)
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        # bug: rounds >= 1 sample the stale initial policy an external server keeps serving
        ({"generation_backend": "server", "generation_base_url": "http://127.0.0.1:1/v1", "num_rounds": 2},
         "generation_backend: server with num_rounds=2"),
        # bug: a template without {port} found only after the policy and reward model loaded
        ({"generation_backend": "launch", "generation_server": {"command": "vllm serve {model}"}},
         r"must contain the placeholders \{model\} and \{port\}"),
    ],
)  # fmt: skip
def test_config_refuses_settings_that_cannot_work(overrides, message, tmp_path):
    with pytest.raises(UserError, match=message):
        config(tmp_path / "run", **overrides)


def test_ranked_records_hold_distinct_responses(tiny_model_dir, tmp_path):
    # bug: with dedup_samples off two equal kept answers land in one ranked record, which the reward recipe refuses
    trainer = RejectionSamplingTrainer(
        str(tiny_model_dir), names_department, config(tmp_path / "r", dedup_samples=False, top_k=3),
        train_dataset=prompts(1),
    )  # fmt: skip
    pid = trainer.prompts[0]["id"]
    texts = [("心内科", 1.0), ("心内科", 1.0), ("不知道", 0.0), ("口腔科", 1.0)]
    lines = [{"prompt_id": pid, "text": t, "reward": rw, "kept": True, "source": "policy"}
             for i, (t, rw) in enumerate(texts)]  # fmt: skip
    assert trainer.write_ranked(0, lines) == 1
    (record,) = [json.loads(x) for x in (tmp_path / "r" / "round_0" / "ranked.jsonl").read_text().splitlines()]
    assert record["responses"] == ["心内科", "口腔科", "不知道"]  # by hand: distinct, best first, ties in order


def test_samples_depend_only_on_the_prompt_seed(tiny_model_dir, tokenizer, tmp_path):
    # bug: samples depend on the batch or shard a prompt lands in (1 vs 2 processes would differ), or the
    # reward/kept flags are attached to the wrong prompt after scoring a mixed batch
    from transformers import AutoModelForCausalLM

    from chimed_trl.generation import SamplingParams, TransformersGenerator

    rows = prompts(3)
    trainer = RejectionSamplingTrainer(
        str(tiny_model_dir), names_department, config(tmp_path / "r"), train_dataset=rows
    )
    a, b, c = trainer.prompts
    model = trainer.load_policy(0)
    with trainer.generator(0, model) as generator:
        together = trainer.sample_batch(0, generator, [a, b, c])
        alone = trainer.sample_batch(0, generator, [b])
    assert [x for x in together if x["prompt_id"] == b["id"]] == alone

    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    direct = TransformersGenerator(fresh, tokenizer).generate(
        [b["prompt"]], SamplingParams(4, 1.0, 1.0, 8, prompt_seed(0, 0, b["id"]))
    )[0]
    assert [x["text"] for x in alone] == direct
    assert [x["reward"] for x in alone] == [float("科" in t) for t in direct]
    assert len(set(direct)) > 1  # really sampled


def test_sft_batches_train_on_the_answer_only(tiny_model_dir, tokenizer, tmp_path):
    # bug: the loss also covers the prompt (assistant_only_loss off, or a template without generation markers)
    trainer = RejectionSamplingTrainer(
        str(tiny_model_dir), names_department, config(tmp_path / "r"), train_dataset=prompts(2)
    )
    p = trainer.prompts[0]
    lines = [{"prompt_id": p["id"], "text": "建议到心内科就诊。", "kept": True}]
    sft = trainer.build_sft_trainer(0, trainer.load_policy(0), trainer.sft_dataset(lines))
    batch = next(iter(sft.get_train_dataloader()))
    labels = batch["labels"][0]
    assert tokenizer.decode(labels[labels != -100]) == "建议到心内科就诊。<|im_end|>"


@pytest.mark.slow
def test_rejection_sampling_learns_a_rule(tiny_model_dir, tmp_path):
    # The loop must work, not only run: with a reward for naming a department, fresh samples of the policy
    # after two rounds of fine-tuning (round 2) name one far more often than the initial policy's (round 0).
    # Control: the same loop rewarding the OPPOSITE makes them rarer, so the rise comes from the selection
    # (bugs: kept = first k instead of best k, kept answers not trained on, next round sampling the old policy).
    def avoids_department(prompts, completions):
        return [1.0 - r for r in names_department(prompts, completions)]

    common = dict(num_samples=8, top_k=2, min_reward=1.0, max_new_tokens=12, sampling_top_k=50)
    rows = prompts(16)
    learn = RejectionSamplingTrainer(
        str(tiny_model_dir), names_department, config(tmp_path / "learn", num_rounds=3, **common), train_dataset=rows
    ).train()
    RejectionSamplingTrainer(
        str(tiny_model_dir),
        avoids_department,
        config(tmp_path / "control", num_rounds=2, **common),
        train_dataset=rows,
    ).train()

    def rate(out, r):  # recomputed from the stored texts, not taken from the stats
        lines = [json.loads(x) for x in (out / f"round_{r}" / "samples.jsonl").read_text().split("\n") if x]
        assert len(lines) == 16 * 8
        return sum("科" in x["text"] for x in lines) / len(lines)

    learned = [rate(tmp_path / "learn", r) for r in range(3)]
    controlled = [rate(tmp_path / "control", r) for r in range(2)]
    print("department rate by round:", learned, "control:", controlled)
    assert learned[0] == controlled[0]  # the same seed gives the same first round
    assert learned[2] >= learned[0] + 0.25
    assert controlled[1] < learned[0] < learned[1]
    assert learn["rounds"][2]["reward_mean"] == pytest.approx(learned[2])
    # kept answers: with min_reward 1 only answers naming a department, at most top_k per prompt
    kept = [json.loads(x) for x in (tmp_path / "learn" / "round_0" / "samples.jsonl").read_text().split("\n") if x]
    assert all("科" in x["text"] for x in kept if x["kept"])
    per_prompt = {}
    for x in kept:
        per_prompt.setdefault(x["prompt_id"], []).append(x)
    for xs in per_prompt.values():
        hits = len({x["text"] for x in xs if "科" in x["text"]})
        assert sum(x["kept"] for x in xs) == min(2, hits)
    assert (tmp_path / "learn" / "reward_by_round.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "learn" / "metrics.json").read_text())["rounds"][0]["round"] == 0


@pytest.mark.slow
def test_lora_policy_generates_with_the_current_adapter(tiny_model_dir, tokenizer, tmp_path):
    # bug: round 1 samples from the base model (adapter dropped), or a new adapter replaces the trained one
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    from chimed_trl.generation import SamplingParams, TransformersGenerator

    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    out = tmp_path / "lora"
    args = config(out, num_rounds=2, num_samples=2, top_k=1, learning_rate=5e-2, num_train_epochs=2)
    trainer = RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, prompts(4), peft_config=lora)
    trainer.train()
    assert (out / "round_0" / "policy" / "adapter_config.json").exists()
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()

    p = trainer.prompts[0]
    sampling = SamplingParams(2, 1.0, 1.0, 8, prompt_seed(0, 1, p["id"]))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with_adapter = PeftModel.from_pretrained(base, out / "round_0" / "policy").eval()
    expected = TransformersGenerator(with_adapter, tokenizer).generate([p["prompt"]], sampling)[0]
    stored = [json.loads(x) for x in (out / "round_1" / "samples.jsonl").read_text().split("\n") if x]
    assert [x["text"] for x in stored if x["prompt_id"] == p["id"]] == expected
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert TransformersGenerator(plain, tokenizer).generate([p["prompt"]], sampling)[0] != expected  # not vacuous
    # the round-1 adapter continued the round-0 one: it differs from it
    a0 = (out / "round_0" / "policy" / "adapter_model.safetensors").read_bytes()
    assert a0 != (out / "round_1" / "policy" / "adapter_model.safetensors").read_bytes()


@pytest.mark.slow
def test_launched_server_per_round(tiny_model_dir, tokenizer, tmp_path):
    # bugs: the server of round 1 still serves the initial model, the server is left running, the samples are
    # not marked with their backend. `transformers serve` samples greedily here (no generation_config asked),
    # so each round's answers must equal local greedy answers of that round's checkpoint.
    pytest.importorskip("fastapi")
    from transformers import AutoModelForCausalLM

    from chimed_trl.generation import TransformersGenerator

    command = SERVE_COMMAND.replace("{bindir}", str(Path(sys.executable).parent))
    out = tmp_path / "launch"
    args = config(
        out, num_rounds=2, num_samples=2, top_k=1, learning_rate=5e-2, num_train_epochs=3,
        generation_backend="launch", generation_server={"command": command, "ready_timeout": 120},
    )  # fmt: skip
    trainer = RejectionSamplingTrainer(str(tiny_model_dir), names_department, args, prompts(3))
    trainer.train()
    (server,) = trainer.last_server.servers  # one replica by default
    assert server.process is None and not server.healthy()
    for r, checkpoint in ((0, tiny_model_dir), (1, out / "round_0" / "policy")):
        lines = [json.loads(x) for x in (out / f"round_{r}" / "samples.jsonl").read_text().split("\n") if x]
        assert {x["backend"] for x in lines} == {"launch"} and len(lines) == 6
        model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
        greedy = TransformersGenerator(model, tokenizer, max_new_tokens=8)([p["prompt"] for p in trainer.prompts])
        assert [x["text"] for x in lines if x["sample"] == 0] == greedy
    assert json.loads((out / "round_1" / "stats.json").read_text())["policy"] == str(out / "round_0" / "policy")


def test_a_loaded_model_samples_like_its_path(tiny_model_dir, tmp_path):
    # bug: a model object (the README's library example) rejected, or reloaded from elsewhere instead of used
    from transformers import AutoModelForCausalLM

    stores = []
    for name, model in (
        ("path", str(tiny_model_dir)),
        ("object", AutoModelForCausalLM.from_pretrained(tiny_model_dir)),
    ):
        args = config(tmp_path / name, num_samples=2, max_steps=1)
        RejectionSamplingTrainer(model, names_department, args, prompts(2)).train()
        stores.append((tmp_path / name / "round_0" / "samples.jsonl").read_text())
        assert (tmp_path / name / "metrics.json").exists()
    assert stores[0] == stores[1]
