"""Packed documents never attend to one another: packed logits == each document alone (fp32, CPU)."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from chimed_trl.packing import check_isolation_supported, packing_efficiency


def _documents(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(5, vocab, (n,), generator=g).tolist() for n in (37, 5, 1, 64, 12)]


def _packed_batch(docs, pad_id):
    """The real padding-free collator on one packed row, as the trainer builds it."""
    collator = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True)
    row = {"input_ids": [t for d in docs for t in d], "seq_lengths": [len(d) for d in docs]}
    return collator([row])


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_packed_logits_equal_documents_alone(tiny_model_dir, backend):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=backend, dtype=torch.float32)
    model.eval()
    check_isolation_supported(model)
    docs = _documents(model.config.vocab_size)
    batch = _packed_batch(docs, model.config.pad_token_id)
    assert "attention_mask" not in batch
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**inputs, use_cache=False).logits[0]  # what our trainers pass
        alone = torch.cat([model(input_ids=torch.tensor([d])).logits[0] for d in docs])
    assert packed.shape == alone.shape
    assert torch.allclose(packed, alone, atol=1e-4), (packed - alone).abs().max()


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_cache_on_forward_is_not_isolated(tiny_model_dir, backend):
    """The trap the trainer avoids: with a cache object, transformers ignores the packed boundaries."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=backend).eval()
    docs = _documents(model.config.vocab_size)
    batch = _packed_batch(docs, model.config.pad_token_id)
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([d])).logits[0] for d in docs])
    assert not torch.allclose(leaky, alone, atol=1e-4)


def test_trainer_forward_is_isolated(tiny_model_dir, tmp_path):
    """Through ChimedSFTTrainer.compute_loss: the packed loss equals the loss of the documents alone."""
    from datasets import Dataset
    from trl import SFTConfig

    from chimed_trl.trainers import ChimedSFTTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    docs = _documents(model.config.vocab_size)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_length=256,
        packing=True,
        packing_strategy="bfd",
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to=[],
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    dataset = Dataset.from_list([{"input_ids": d} for d in docs])
    trainer = ChimedSFTTrainer(model=model, args=args, train_dataset=dataset)
    model.eval()
    batch = _packed_batch(docs, model.config.pad_token_id)
    with torch.no_grad():
        packed_loss = trainer.compute_loss(model, dict(batch))
        total, count = 0.0, 0
        for d in docs[:]:
            if len(d) < 2:
                continue
            ids = torch.tensor([d])
            out = model(input_ids=ids, labels=ids)
            total += out.loss.item() * (len(d) - 1)
            count += len(d) - 1
    assert abs(packed_loss.item() - total / count) < 1e-4


def test_packing_efficiency():
    assert packing_efficiency([4096, 2048], 4096) == 0.75
    assert packing_efficiency([], 4096) == 0.0


def test_unknown_backend_is_rejected():
    class Config:
        _attn_implementation = "my_custom_attention"

    class Model:
        config = Config()

    with pytest.raises(ValueError, match="not known to isolate"):
        check_isolation_supported(Model())
