import hashlib

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from chimed_trl.templates import CHATML
from chimed_trl.tiny import build_tiny, train_tokenizer

MIXED_TEXT = [
    "医生您好，我最近头晕、头痛，血压150/95，2026年体检正常。",
    "Patient's BP is 140/90 mmHg; HbA1c 7.2%.\n\n  双下肢水肿？",
    "<|im_start|>user\n胸闷<|im_end|>\n[human]:咳嗽\n[bot]:",
]


def _digests(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tiny_model_dir, tmp_path):
    again = build_tiny(tmp_path / "again", seed=0)
    assert _digests(again) == _digests(tiny_model_dir)
    assert "model.safetensors" in _digests(again) and not list(again.rglob("*.bin"))


def test_tokenizer_round_trip_keeps_class_ids_and_template(tiny_model_dir):
    fresh = train_tokenizer()
    reloaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in MIXED_TEXT:
        assert reloaded(text).input_ids == fresh(text).input_ids, text
    assert reloaded.chat_template == CHATML
    assert reloaded.eos_token == "<|endoftext|>" and reloaded.pad_token == "<|pad|>"
    assert reloaded.convert_tokens_to_ids("<|im_end|>") == fresh.convert_tokens_to_ids("<|im_end|>")
    # special tokens are single ids, never split into bytes
    assert len(reloaded("<|im_start|>").input_ids) == 1


def test_tiny_model_shape(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.model_type == "qwen2" and config.max_position_embeddings >= 4096
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    reward = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / "reward")
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == config.pad_token_id
