"""The embedded tiny model: a tokenizer trained locally and a randomly initialised Qwen2.

Everything offline and deterministic: ``python -m chimed_trl.tiny OUT_DIR [--seed 0]`` writes

- ``OUT_DIR/`` a causal LM (``Qwen2ForCausalLM``) with its tokenizer, and
- ``OUT_DIR/reward/`` its sequence-classification twin (one scalar head) for reward models,

as safetensors. The same seed gives byte-identical files. The tokenizer is a byte-level BPE trained
on the bundled sample corpus, with ChatML special tokens and the training-compatible ChatML template.

The round-trip trap: saved beside a qwen2 ``config.json``, ``AutoTokenizer`` reloads *any* tokenizer as
``Qwen2Tokenizer``, which rebuilds it from vocab/merges with Qwen2's own normalizer and pre-tokenizer
(not the ones in ``tokenizer.json``). A tokenizer trained with another pre-tokenizer then reloads
with different ids. So we train with exactly Qwen2's pre-tokenization; ``tests/test_tiny.py`` checks
the reloaded class, the ids on mixed text and the chat template.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from chimed_trl.templates import CHATML

SAMPLES = Path(__file__).parent / "data" / "samples"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
EOS_TOKEN = "<|endoftext|>"
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
PAD_TOKEN = "<|pad|>"

# A few million parameters at most; 4,096 positions so the 4k packing path runs for real.
TINY_MODEL_CONFIG = dict(
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


def train_tokenizer(vocab_size: int = 2048, corpus: Path | None = None):
    """Train a byte-level BPE on the sample corpus; returns a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = corpus or SAMPLES / "corpus.txt"
    lines = corpus.read_text(encoding="utf-8").splitlines()
    tok = Tokenizer(models.BPE())
    # Exactly Qwen2's normalizer and pre-tokenizer, so that every load path (the generic class or
    # Qwen2Tokenizer, which rebuilds these from scratch) tokenizes identically.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Training text: the corpus plus the ASCII the templates and prompts use.
    extra = ["[human]: [bot]: system user assistant A B C D E F 0 1 2 3 4 5 6 7 8 9 答案：\n"]
    tok.train_from_iterator(lines + extra, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=TINY_MODEL_CONFIG["max_position_embeddings"],
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def build_tiny(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny causal LM, its reward twin and the tokenizer to ``out_dir``; return the path."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    eos_id, pad_id = tokenizer.convert_tokens_to_ids([EOS_TOKEN, PAD_TOKEN])
    im_end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        **TINY_MODEL_CONFIG,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, im_end_id], pad_token_id=pad_id)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    torch.manual_seed(seed)
    reward_config = {k: v for k, v in config.to_dict().items() if k not in ("id2label", "label2id")}
    reward = Qwen2ForSequenceClassification(Qwen2Config(**reward_config, num_labels=1))
    reward.config.pad_token_id = pad_id
    reward.save_pretrained(out / "reward", safe_serialization=True)
    tokenizer.save_pretrained(out / "reward")
    return out


def ensure_tiny(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny model unless ``out_dir`` already holds a model (idempotent for ``make demo``)."""
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    return build_tiny(out, seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny(args.out_dir, seed=args.seed)
    print(path)


if __name__ == "__main__":
    main()
