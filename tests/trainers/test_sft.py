"""ChimedSFTTrainer's own data path keeps packed documents apart; its run counters survive a resume."""

import shutil

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import SFTConfig

from chimed_trl.trainers import ChimedSFTTrainer

DOCUMENTS = [
    "高血压患者应低盐饮食，规律服药。",
    "骨折后需要固定。",
    "糖尿病患者要监测血糖，控制饮食，适量运动。",
    "头痛",
]


def test_packed_batches_from_the_trainer_dataloader_isolate_documents(tiny_model_dir, tokenizer, tmp_path):
    """Every packed row the trainer's dataloader yields gives, per document, the logits of that document run alone
    (plain transformers, one document per forward).

    catches: the collator switched to padding_free=False with packing on (rows then carry one attention mask and
    running positions, and documents attend to each other)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(tmp_path), max_length=64, packing=True, packing_strategy="bfd", per_device_train_batch_size=1,
        bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[], dataset_text_field="text",
    )  # fmt: skip
    trainer = ChimedSFTTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"text": t} for t in DOCUMENTS]),
    )
    model.eval()
    alone = {}
    for text in DOCUMENTS:
        ids = tokenizer(text).input_ids + [tokenizer.eos_token_id]  # TRL appends EOS to plain text
        with torch.no_grad():
            alone[tuple(ids)] = model(input_ids=torch.tensor([ids])).logits[0]
    rows = checked = 0
    for batch in trainer.get_train_dataloader():
        batch = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            packed = model(**batch, use_cache=False).logits[0]
        ids = batch["input_ids"][0].tolist()
        start = 0
        while start < len(ids):  # split the row back into documents by matching the known token sequences
            doc = next(d for d in alone if tuple(ids[start : start + len(d)]) == d)
            assert torch.allclose(packed[start : start + len(doc)], alone[doc], atol=1e-4)
            start += len(doc)
            checked += 1
        rows += 1
    assert checked == len(DOCUMENTS) and rows < len(DOCUMENTS)  # documents really were packed together


def test_run_counters_live_in_the_checkpoint_trainer_state_and_carry_over_a_resume(
    tiny_model_dir, tokenizer, tmp_path
):
    """The totals saved with checkpoint-2 equal a hand count (2 optimizer steps x 2 micro-batches) and TRL's own
    ``num_tokens`` log at step 2; a resume from it ends with the totals of the uninterrupted run.

    catches: counters written outside ``trainer_state.json`` (the file whose presence marks a checkpoint complete),
    taken before the saving step ran (one step stale), or a resume that counts only the part after it."""
    import json

    from chimed_trl.trainers.sft import RunCounters

    def trainer(out, steps):
        args = SFTConfig(
            output_dir=str(out), max_length=64, per_device_train_batch_size=1, gradient_accumulation_steps=2,
            max_steps=steps, save_strategy="steps", save_steps=2, logging_steps=1, bf16=False,
            gradient_checkpointing=False, use_cpu=True, report_to=[], dataset_text_field="text", seed=0,
        )  # fmt: skip
        data = Dataset.from_list([{"text": t} for t in DOCUMENTS * 3])
        return ChimedSFTTrainer(model=str(tiny_model_dir), args=args, processing_class=tokenizer, train_dataset=data)

    whole = trainer(tmp_path / "whole", 4)
    whole.train()
    state = json.loads((tmp_path / "whole" / "checkpoint-2" / "trainer_state.json").read_text())
    saved = state["stateful_callbacks"][RunCounters.__name__]["args"]["totals"]
    logged = next(log["num_tokens"] for log in state["log_history"] if log.get("step") == 2 and "num_tokens" in log)
    assert saved["batches_per_rank"] == [4] and saved["tokens"] == logged > 0
    assert not (tmp_path / "whole" / "checkpoint-2" / "chimed_run_counters.json").exists()

    resumed = trainer(tmp_path / "whole", 4)  # the same output_dir: resume from checkpoint-2 of the whole run
    shutil.rmtree(tmp_path / "whole" / "checkpoint-4")
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    end, want = resumed.run_counters(), whole.run_counters()
    assert end["batches_per_rank"] == want["batches_per_rank"] == [8] and end["tokens"] == want["tokens"]
