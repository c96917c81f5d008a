"""ListwiseRewardTrainer on the real tiny model, through the trainer's own dataloaders."""

import itertools
import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from chimed_trl.errors import UserError
from chimed_trl.trainers import ListwiseRewardConfig, ListwiseRewardTrainer, sequence_scores
from chimed_trl.trainers.listwise_reward import list_statistics

Q = [{"role": "user", "content": "头痛怎么办？"}]
RANKED = [
    {"prompt": Q, "responses": ["建议神经内科就诊。", "可能是偏头痛。", "多喝热水。", "不用管。"]},
    {"prompt": Q, "responses": ["先量血压。", "休息一下。", "忍着。"], "ranks": [0, 0, 2]},
    {"prompt": Q, "responses": ["看医生。", "不知道。"]},
]


def config(tmp_path, **kw):
    base = dict(bf16=False, use_cpu=True, gradient_checkpointing=False, report_to=[], save_strategy="no")
    base.update(per_device_train_batch_size=3, per_device_eval_batch_size=3, learning_rate=1e-2, seed=0)
    return ListwiseRewardConfig(str(tmp_path / "out"), **{**base, **kw})


def reward_model(path, **kw):
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kw)


def rows(records):
    """Ranked rows with all keys present (datasets needs one schema)."""
    return Dataset.from_list([{"ranks": None, **r} for r in records])


def reference_score(model, ids):
    """Plain transformers on one unpadded sequence: the score head applied to the last token's hidden state."""
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        return (model.score.weight @ hidden).item()


# Catches: lists expanded into pairs (12 rows for a K=4 list), responses attached to the wrong list, ranks not padded
# with -1, ties lost, or a prompt/response tokenized differently from the chat template.
def test_collator_flattens_one_sequence_per_response(tiny_model_dir, tokenizer, tmp_path):
    trainer = ListwiseRewardTrainer(
        reward_model(tiny_model_dir), config(tmp_path), train_dataset=rows(RANKED), processing_class=tokenizer
    )
    batch = next(iter(trainer.get_eval_dataloader(trainer.train_dataset)))
    assert batch["input_ids"].shape[0] == 4 + 3 + 2
    assert batch["ranks"].tolist() == [[0, 1, 2, 3], [0, 0, 2, -1], [0, 1, -1, -1]]
    assert batch["group_sizes"].tolist() == [4, 3, 2]
    n = 0
    for record in RANKED:
        for response in record["responses"]:
            messages = record["prompt"] + [{"role": "assistant", "content": response}]
            expected = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            row = batch["input_ids"][n][batch["attention_mask"][n].bool()].tolist()
            assert row == list(expected)
            n += 1


# Catches: reading the reward at a pad position, or (pad == EOS, the LLaMA/Ziya case) at the token before the final
# EOS as transformers' own pooling does; on both padding sides.
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_reward_read_at_last_real_token_with_pad_equal_eos(tiny_model_dir, tmp_path, padding_side):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = tok.eos_token  # pad == EOS
    model = reward_model(tiny_model_dir)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    data = Dataset.from_list(
        [{"prompt": "问：头痛？答：", "responses": ["看医生", "多喝热水，观察几天吧"], "ranks": [0, 1]}] * 2
    )
    args = config(tmp_path, padding_side=padding_side)
    trainer = ListwiseRewardTrainer(model, args, train_dataset=data, processing_class=tok)
    assert model.config.pad_token_id == tok.eos_token_id
    batch = next(iter(trainer.get_eval_dataloader(trainer.train_dataset)))
    model.eval()
    with torch.no_grad():
        scores, outputs = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
    for n in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][n][batch["attention_mask"][n].bool()].tolist()
        assert ids[-1] == tok.eos_token_id  # the sequence really ends with the pad-equal EOS
        assert scores[n].item() == pytest.approx(reference_score(model, ids), abs=1e-5)
    # the trap is real: transformers' pooling skips the final EOS here, so it disagrees with the reference
    assert not torch.allclose(outputs.logits[:, 0], scores, atol=1e-3)


# Catches: K=2 data not training exactly like TRL (tokenization, pooling, loss, centring) when given plain
# chosen/rejected rows; compared with TRL's own RewardTrainer on the same model and data.
def test_chosen_rejected_rows_match_trl_reward_trainer(tiny_model_dir, tokenizer, tmp_path):
    from trl import RewardConfig, RewardTrainer

    pairs = Dataset.from_list(
        [
            {
                "prompt": Q,
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
            }
            for c, r in [("看医生。", "不用管。"), ("量血压。", "忍着。"), ("休息。", "喝酒。")]
        ]
    )
    model = reward_model(tiny_model_dir)
    torch.nn.init.normal_(model.score.weight, std=0.5)
    common = dict(bf16=False, use_cpu=True, gradient_checkpointing=False, report_to=[], per_device_eval_batch_size=3)
    common["center_rewards_coefficient"] = 0.01
    ours_args = config(tmp_path, loss_type="pairwise", center_rewards_coefficient=0.01)
    ours = ListwiseRewardTrainer(model, ours_args, train_dataset=pairs, eval_dataset=pairs, processing_class=tokenizer)
    theirs = RewardTrainer(
        model,
        RewardConfig(str(tmp_path / "trl"), **common),
        train_dataset=pairs,
        eval_dataset=pairs,
        processing_class=tokenizer,
    )
    ours_eval, theirs_eval = ours.evaluate(), theirs.evaluate()
    assert ours_eval["eval_loss"] == pytest.approx(theirs_eval["eval_loss"], rel=1e-5)
    assert ours_eval["eval_pairwise_accuracy"] == pytest.approx(theirs_eval["eval_accuracy"])


def tau_b(scores, ranks):
    """Kendall tau-b by hand between scores and quality (-rank)."""
    c = d = ties_r = ties_s = n0 = 0
    for i, j in itertools.combinations(range(len(scores)), 2):
        n0 += 1
        ds, dq = scores[i] - scores[j], ranks[j] - ranks[i]
        ties_r += dq == 0
        ties_s += ds == 0
        if ds * dq > 0:
            c += 1
        elif ds * dq < 0:
            d += 1
    return (c - d) / math.sqrt((n0 - ties_r) * (n0 - ties_s))


# Catches: pairwise accuracy counting tied pairs, top-1 failing on ties, tau without the tie correction, rewards per
# rank/source attributed to the wrong column.
def test_list_statistics_match_hand_counts():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 4, generator=g)
    ranks = torch.tensor([[0, 1, 2, 3], [0, 0, 2, -1], [0, 1, 1, 1]])
    sources = torch.tensor([[0, 1, 1, 0], [1, 0, 1, -1], [0, 0, 1, 1]])
    out = list_statistics(scores, ranks, sources, n_ranks=4, n_sources=2)
    for b in range(3):
        k = int((ranks[b] >= 0).sum())
        s, r = scores[b, :k].tolist(), ranks[b, :k].tolist()
        ordered = [(i, j) for i in range(k) for j in range(k) if r[i] < r[j]]
        assert out[b, 0] == sum(s[i] > s[j] for i, j in ordered) and out[b, 1] == len(ordered)
        assert out[b, 2] == (r[max(range(k), key=lambda i: s[i])] == min(r))  # no ties in random scores
        assert out[b, 4].item() == pytest.approx(tau_b(s, r), abs=1e-6)
    for rank in range(4):
        mask = ranks == rank
        assert out[:, 6 + rank].sum().item() == pytest.approx(scores[mask].sum().item(), abs=1e-5)
        assert out[:, 10 + rank].sum().item() == mask.sum().item()
    for src in range(2):
        mask = (sources == src) & (ranks >= 0)
        assert out[:, 14 + src].sum().item() == pytest.approx(scores[mask].sum().item(), abs=1e-5)


# Catches: top-1 taking the first maximum (argmax) among tied scores: lists are stored best first, so a constant
# scorer would score 1.0. Reference: the hit counted by hand as (best-ranked among the tied) / (number tied).
def test_list_statistics_top1_shares_ties():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, 0.0], [0.0, 3.0, 3.0, 3.0], [5.0, 5.0, 5.0, 9.0]])
    ranks = torch.tensor([[0, 1, 2, 3], [0, 0, 1, -1], [0, 1, 1, 0], [0, 1, 2, -1]])
    sources = torch.zeros_like(ranks)
    out = list_statistics(scores, ranks, sources, n_ranks=4, n_sources=1)
    # row 0: 4 tied, 1 best -> 1/4; row 1: 2 tied, both best -> 1; row 2: 3 tied (items 1..3), item 3 best -> 1/3;
    # row 3: the 9.0 is padding, 3 tied among the real ones, item 0 best -> 1/3
    assert out[:, 2].tolist() == pytest.approx([1 / 4, 1.0, 1 / 3, 1 / 3])


# Catches: eval metrics averaged per batch instead of summed over lists, or computed on different scores than
# predict() returns (hand-computed pairwise accuracy over predict()'s scores must equal evaluate()'s).
def test_evaluate_metrics_agree_with_predictions(tiny_model_dir, tokenizer, tmp_path):
    model = reward_model(tiny_model_dir)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    data = rows(RANKED * 3)
    trainer = ListwiseRewardTrainer(
        model,
        config(tmp_path, per_device_eval_batch_size=2),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate()
    scores, ranks = trainer.predict(data).predictions
    correct = total = 0
    for s, r in zip(scores, ranks):
        for i, j in itertools.permutations(range(len(r)), 2):
            if 0 <= r[i] < r[j]:
                total += 1
                correct += s[i] > s[j]
    assert total == 3 * (6 + 2 + 1)
    assert metrics["eval_pairwise_accuracy"] == pytest.approx(correct / total)


# Catches: bad rows passing silently or failing with a KeyError/traceback instead of naming the row and field.
@pytest.mark.parametrize(
    "record, field",
    [
        ({"prompt": Q, "responses": ["a", "a"]}, "responses"),
        ({"prompt": Q, "responses": ["a"]}, "responses"),
        ({"prompt": Q, "responses": ["a", "b"], "ranks": [0, 0]}, "ranks"),
        ({"prompt": Q, "responses": ["a", "b"], "ranks": [0, 1, 2]}, "ranks"),
    ],
)
def test_bad_rows_name_row_and_field(tiny_model_dir, tokenizer, tmp_path, record, field):
    data = rows([RANKED[2], record])
    with pytest.raises(UserError, match=rf"train dataset row 1: field '{field}'"):
        ListwiseRewardTrainer(
            reward_model(tiny_model_dir), config(tmp_path), train_dataset=data, processing_class=tokenizer
        )


# Catches: over-long responses silently dropped (TRL's behaviour) or not counted; the drop policy keeping a list with
# one response left.
def test_over_length_truncate_and_drop_are_counted(tiny_model_dir, tokenizer, tmp_path):
    long = "很长的回答" * 40
    data = rows([{"prompt": Q, "responses": ["好", long, "差"]}, {"prompt": Q, "responses": [long, "差"]}])
    lengths = [
        len(tokenizer.apply_chat_template(Q + [{"role": "assistant", "content": x}], return_dict=True)["input_ids"])
        for x in ("好", long)
    ]
    max_length = lengths[0] + 5
    assert lengths[1] > max_length
    trunc = ListwiseRewardTrainer(
        reward_model(tiny_model_dir),
        config(tmp_path, max_length=max_length),
        train_dataset=data,
        processing_class=tokenizer,
    )
    assert trunc.data_report["train"]["truncated_responses"] == 2
    assert max(len(ids) for row in trunc.train_dataset["response_ids"] for ids in row) == max_length
    drop = ListwiseRewardTrainer(
        reward_model(tiny_model_dir),
        config(tmp_path, max_length=max_length, over_length="drop"),
        train_dataset=data,
        processing_class=tokenizer,
    )
    report = drop.data_report["train"]
    assert (report["dropped_responses"], report["dropped_lists"], report["lists_kept"]) == (2, 1, 1)
    assert drop.train_dataset[0]["ranks"] == [0, 2]


# Catches: truncation leaving responses that are token-identical (a long prompt cut before any response token, or two
# responses sharing their first max_length tokens) kept and trained on as if they differed. Hand counts: row 0 loses
# all 3 responses (and the list), row 1 keeps "好" and the first long answer (truncated), drops the second.
def test_truncation_drops_responses_left_identical(tiny_model_dir, tokenizer, tmp_path):
    long_prompt = [{"role": "user", "content": "头痛" * 100}]
    long = "很长的回答" * 40
    records = [
        {"prompt": long_prompt, "responses": ["建议到神经内科就诊。", "多喝热水。", "不用管。"]},
        {"prompt": Q, "responses": ["好", long + "甲", long + "乙"]},
    ]

    def full_ids(record, i):
        messages = record["prompt"] + [{"role": "assistant", "content": record["responses"][i]}]
        return list(tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"])

    max_length = len(full_ids(records[1], 0)) + 5
    # independent evidence of the premise: the cut leaves identical sequences in both rows
    assert len({tuple(full_ids(records[0], i)[:max_length]) for i in range(3)}) == 1
    assert full_ids(records[1], 1)[:max_length] == full_ids(records[1], 2)[:max_length]
    trainer = ListwiseRewardTrainer(
        reward_model(tiny_model_dir),
        config(tmp_path, max_length=max_length),
        train_dataset=rows(records),
        processing_class=tokenizer,
    )
    report = trainer.data_report["train"]
    assert report == {
        "lists_in": 2,
        "lists_kept": 1,
        "truncated_responses": 1,
        "dropped_responses": 4,
        "dropped_lists": 1,
    }
    row = trainer.train_dataset[0]
    assert row["ranks"] == [0, 1]
    assert row["response_ids"] == [full_ids(records[1], 0), full_ids(records[1], 1)[:max_length]]


# Catches: a multi-label head accepted (the loss would silently use logit 0 only).
def test_head_that_is_not_a_single_score_is_refused(tiny_model_dir, tokenizer, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    with pytest.raises(UserError, match="single score"):
        ListwiseRewardTrainer(model, config(tmp_path), train_dataset=rows(RANKED), processing_class=tokenizer)


# Catches: the reward model not built from a causal-LM checkpoint (the SFT policy): backbone weights not carried over.
def test_reward_model_initialises_from_the_causal_lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from chimed_trl.configs import ChimedModelConfig
    from chimed_trl.modeling.load import load_model

    model = load_model(ChimedModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32"), task="reward")
    causal = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.num_labels == 1 and model.score.weight.shape == (1, 64)
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight, causal.model.layers[1].mlp.up_proj.weight)


# Catches: the score head frozen or not saved with LoRA (TRL does not add it to modules_to_save), an adapter that
# reloads to different scores, a merge that loses the head; and merge writing into a non-empty directory.
@pytest.mark.slow
def test_lora_trains_and_saves_head_and_merges(tiny_model_dir, tokenizer, tmp_path):
    from peft import LoraConfig, PeftModel

    model = reward_model(tiny_model_dir)
    head_before = model.score.weight.detach().clone()
    peft_config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = ListwiseRewardTrainer(
        model,
        config(tmp_path, max_steps=3),
        train_dataset=rows(RANKED * 2),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    adapter = tmp_path / "adapter"
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(adapter)
    trained = trainer.model.eval()
    head_after = trained.base_model.model.score.modules_to_save["default"].weight
    assert not torch.allclose(head_before, head_after)
    batch = next(iter(trainer.get_eval_dataloader(trainer.train_dataset)))
    with torch.no_grad():
        expected, _ = sequence_scores(trained, batch["input_ids"], batch["attention_mask"])
        reloaded = PeftModel.from_pretrained(reward_model(tiny_model_dir), adapter).eval()
        assert torch.allclose(
            sequence_scores(reloaded, batch["input_ids"], batch["attention_mask"])[0], expected, atol=1e-5
        )
    from chimed_trl.modeling.merge import main as merge_main

    merged_dir = tmp_path / "merged"
    argv = ["--base", str(tiny_model_dir), "--adapter", str(adapter), "--output", str(merged_dir)]
    merge_main(argv)  # the `python -m chimed_trl.modeling.merge` entry point, in process
    assert (merged_dir / "model.safetensors").exists() and not (merged_dir / "adapter_config.json").exists()
    merged = reward_model(merged_dir).eval()
    with torch.no_grad():
        scores, _ = sequence_scores(merged, batch["input_ids"], batch["attention_mask"])
    assert (scores - expected).abs().max().item() < 1e-4
    with pytest.raises(SystemExit) as refused:
        merge_main(argv)
    assert refused.value.code == 2


# Catches: several eval sets (the held-out pairs and the train sample) logged under one name, so that one set's
# accuracy overwrites the other's in the log history. The same lists with the order reversed score the complementary
# pairwise accuracy (random head, no ties), so the two names must carry a and 1 - a, each as its own evaluate() says.
def test_each_eval_set_logs_its_metrics_under_its_own_name(tiny_model_dir, tokenizer, tmp_path):
    model = reward_model(tiny_model_dir)
    torch.manual_seed(0)  # a fixed random head: the accuracy below is strictly between 0 and 1 for this seed
    torch.nn.init.normal_(model.score.weight, std=1.0)
    pairs = [{"prompt": r["prompt"], "responses": r["responses"][:2]} for r in RANKED[:1] + RANKED[2:]] * 2
    pairs += [{"prompt": Q, "responses": ["请到医院检查。", "没事。"]}]
    forward = rows(pairs)
    reverse = rows([{**p, "responses": p["responses"][::-1]} for p in pairs])
    trainer = ListwiseRewardTrainer(
        model,
        config(tmp_path),
        train_dataset=forward,
        eval_dataset={"heldout": forward, "train_sample": reverse},
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate()
    alone = trainer.evaluate(trainer.eval_dataset["heldout"], metric_key_prefix="eval_heldout")
    accuracy = metrics["eval_heldout_pairwise_accuracy"]
    assert 0 < accuracy < 1  # both names would agree on 0 or 1 only by chance of the head
    assert metrics["eval_train_sample_pairwise_accuracy"] == pytest.approx(1 - accuracy)
    assert alone["eval_heldout_pairwise_accuracy"] == pytest.approx(accuracy)
    assert "eval_pairwise_accuracy" not in metrics  # never the unnamed key TRL would give every set
    logged = [h for h in trainer.state.log_history if "eval_train_sample_pairwise_accuracy" in h]
    assert logged and logged[0]["eval_train_sample_pairwise_accuracy"] == pytest.approx(1 - accuracy)
    assert "eval_heldout_reward_rank_0" in metrics and "eval_train_sample_margin" in metrics


# Catches: dataset_num_proc ignored by the ranked tokenization (one process for millions of lists), or rows put
# out of order / reported differently when tokenized in 2 processes (compared with a hand count and 1 process).
def test_dataset_num_proc_tokenizes_in_processes_with_the_same_result(tiny_model_dir, tokenizer, tmp_path, capfd):
    records = RANKED * 4  # 12 lists
    one = ListwiseRewardTrainer(
        reward_model(tiny_model_dir), config(tmp_path / "a"), train_dataset=rows(records), processing_class=tokenizer
    )
    two = ListwiseRewardTrainer(
        reward_model(tiny_model_dir),
        config(tmp_path / "b", dataset_num_proc=2),
        train_dataset=rows(records),
        processing_class=tokenizer,
    )
    assert "Tokenizing train rankings (num_proc=2)" in capfd.readouterr().err  # datasets' own progress line
    assert two.train_dataset.to_list() == one.train_dataset.to_list()
    assert len(two.train_dataset) == len(records) and two.data_report["train"] == one.data_report["train"]
