"""ChimedSFTTrainer's own data path keeps packed documents apart."""

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
