"""The embedded tiny model: a tokenizer trained locally and a randomly initialised Qwen2.

Everything offline and deterministic: ``python -m chimed_trl.tiny OUT_DIR [--seed 0] [--with-reward-twin]``
writes into a new or empty ``OUT_DIR``

- a causal LM (``Qwen2ForCausalLM``) with its tokenizer, as safetensors;
- ``tiny_build.json``: the marker that says "this directory is a tiny build" (builder version, seed and
  the SHA-256 of every file written), so that :func:`ensure_tiny` can tell its own build from a user's model;
- only when asked (``with_reward_twin=True``), ``OUT_DIR/reward/``: a sequence-classification twin (one
  scalar head, randomly initialised). A reward model normally needs no twin: it is initialised from the
  causal LM (or the SFT checkpoint) with ``AutoModelForSequenceClassification``, which adds a fresh score
  head, exactly as :func:`chimed_trl.modeling.load.load_model` does with ``task="reward"``.

The same seed gives byte-identical files. The tokenizer is a byte-level BPE trained
on the bundled sample corpus, with ChatML special tokens and the training-compatible ChatML template.

Never over a user's model: :func:`build_tiny` writes only into a missing or empty directory (the
files are written to a temporary sibling and renamed into place), and :func:`ensure_tiny` reuses a
directory only when it holds a complete, unmodified tiny build; anything else is refused with a
:class:`~chimed_trl.errors.UserError`. A name that looks like a Hub id (``Qwen/Qwen2.5-0.5B``) and is
not a local directory is refused too: write ``./Qwen/...`` to really build there.

The round-trip trap: saved beside a qwen2 ``config.json``, ``AutoTokenizer`` reloads *any* tokenizer as
``Qwen2Tokenizer``, which rebuilds it from vocab/merges with Qwen2's own normalizer and pre-tokenizer
(not the ones in ``tokenizer.json``). A tokenizer trained with another pre-tokenizer then reloads
with different ids. So we train with exactly Qwen2's pre-tokenization; ``tests/test_tiny.py`` checks
the reloaded class, the ids on mixed text and the chat template.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from chimed_trl.errors import UserError
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


TINY_BUILD_MARKER = "tiny_build.json"
TINY_BUILD_VERSION = 1  # bump when the builder's output changes, so old builds are not taken for new ones
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_model(out: Path, seed: int, with_reward_twin: bool) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

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
    if with_reward_twin:
        torch.manual_seed(seed)
        reward_config = {k: v for k, v in config.to_dict().items() if k not in ("id2label", "label2id")}
        reward = Qwen2ForSequenceClassification(Qwen2Config(**reward_config, num_labels=1))
        reward.config.pad_token_id = pad_id
        reward.save_pretrained(out / "reward", safe_serialization=True)
        tokenizer.save_pretrained(out / "reward")


def build_tiny(out_dir: str | os.PathLike, seed: int = 0, with_reward_twin: bool = False) -> Path:
    """Write the tiny causal LM and its tokenizer (and, if asked, the reward twin) into a new or empty
    ``out_dir``; return the path. A non-empty ``out_dir`` is refused: it may be someone's model."""
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UserError(f"{out}: not building the tiny model there: it exists and is not an empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target and rename into place: a crash never leaves a half-built model at `out`
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        _write_model(staging, seed, with_reward_twin)
        files = {p.relative_to(staging).as_posix(): _sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        marker = {
            "builder": "chimed_trl.tiny",
            "version": TINY_BUILD_VERSION,
            "seed": seed,
            "with_reward_twin": with_reward_twin,
            "files": files,
        }
        (staging / TINY_BUILD_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def looks_like_hub_id(name: str) -> bool:
    """``namespace/name`` (relative, no ``./``) whose namespace is not a local directory."""
    parts = str(name).split("/")
    return len(parts) == 2 and all(_HUB_NAME.match(p) for p in parts) and not Path(parts[0]).is_dir()


def tiny_build_problem(out: Path, seed: int | None = None, with_reward_twin: bool = False) -> str | None:
    """Why ``out`` is not a complete, unmodified tiny build (with that seed, if given), or None if it is."""
    marker_path = out / TINY_BUILD_MARKER
    if not marker_path.is_file():
        return f"it is not empty and holds no {TINY_BUILD_MARKER}, so it is not a tiny build (it may be your model)"
    try:
        marker = json.loads(marker_path.read_text())
        files = marker["files"]
    except (ValueError, KeyError, TypeError):
        return f"its {TINY_BUILD_MARKER} is unreadable"
    if marker.get("builder") != "chimed_trl.tiny" or marker.get("version") != TINY_BUILD_VERSION:
        return f"it was built by another builder version ({marker.get('version')}, expected {TINY_BUILD_VERSION})"
    if seed is not None and marker.get("seed") != seed:
        return f"it is a tiny build with seed {marker.get('seed')}, not the requested seed {seed}"
    if with_reward_twin and not marker.get("with_reward_twin"):
        return "it is a tiny build without the reward/ twin that was asked for"
    for name, digest in files.items():
        path = out / name
        if not path.is_file() or _sha256(path) != digest:
            return f"{name} is missing or differs from the tiny build (modified or half-written)"
    return None


def ensure_tiny(out_dir: str | os.PathLike, seed: int | None = None, with_reward_twin: bool = False) -> Path:
    """The tiny model at ``out_dir``: built when the directory is missing or empty, reused when it holds a
    complete tiny build (with ``seed``, when given) or a finished run of this package (a model trained from
    the tiny one: ``metrics.json`` + ``resolved_config.yaml``), refused otherwise (for ``build_tiny_model: true``)."""
    out = Path(out_dir)
    if not out.exists():
        if looks_like_hub_id(str(out_dir)):
            raise UserError(
                f"model_name_or_path {str(out_dir)!r} looks like a Hugging Face Hub id and is not a local directory: "
                "build_tiny_model: true only builds the tiny model at a local path. Set build_tiny_model: false to "
                f"load that model, or write ./{out_dir} to build the tiny model there."
            )
        return _build_or_join(out, seed, with_reward_twin)
    if out.is_dir() and not any(out.iterdir()):
        return _build_or_join(out, seed, with_reward_twin)
    if (out / "metrics.json").is_file() and (out / "resolved_config.yaml").is_file():
        # a finished run of this package (e.g. the pre-training stage an SFT config starts from): a model we
        # trained, loaded as asked and never written to
        return out
    problem = tiny_build_problem(out, seed, with_reward_twin) if out.is_dir() else "it is a file"
    if problem:
        raise UserError(
            f"{out}: build_tiny_model: true refuses this directory: {problem}. To train or evaluate the model in it, "
            "set build_tiny_model: false; to build the tiny model, point model_name_or_path at a new or empty "
            "directory."
        )
    return out


def _build_or_join(out: Path, seed: int | None, with_reward_twin: bool) -> Path:
    """Build the tiny model at ``out``; if another process (another rank, a parallel test) finished the same
    build there first, use theirs: the rename into place is atomic, so it is complete or absent."""
    seed = 0 if seed is None else seed
    try:
        return build_tiny(out, seed=seed, with_reward_twin=with_reward_twin)
    except (OSError, UserError):
        if out.is_dir() and tiny_build_problem(out, seed, with_reward_twin) is None:
            return out
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--with-reward-twin", action="store_true", help="also write reward/, a seq-cls twin (not needed for reward)"
    )
    args = parser.parse_args(argv)
    try:
        path = build_tiny(args.out_dir, seed=args.seed, with_reward_twin=args.with_reward_twin)
    except UserError as e:  # exit 2 like every other command (SystemExit("...") would exit 1)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(path)


if __name__ == "__main__":
    main()
