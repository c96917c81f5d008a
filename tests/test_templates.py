"""Label masks of a 3-turn dialogue, token by token, for both shipped templates.

The expected mask is computed independently of TRL: from character offsets, a token is trainable
iff it lies inside an assistant reply or its end-of-turn token. The actual labels come from the
real ``ChimedSFTTrainer`` dataset preparation (the path training uses).
"""

import pytest
from datasets import Dataset
from trl import SFTConfig

from chimed_trl.templates import get_chat_template
from chimed_trl.trainers import ChimedSFTTrainer

DIALOGUE = [
    {"role": "system", "content": "你是一名医生。"},
    {"role": "user", "content": "我头痛三天了。"},
    {"role": "assistant", "content": "有没有发热？"},
    {"role": "user", "content": "没有发热。"},
    {"role": "assistant", "content": "建议先休息，观察血压。"},
    {"role": "user", "content": "需要吃药吗？"},
    {"role": "assistant", "content": "如果持续头痛，请到神经内科就诊。"},
]


def _expected_spans(name: str, eos: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans that must be trained."""
    text, spans = "", []
    for m in DIALOGUE:
        if name == "chatml":
            if m["role"] == "assistant":
                text += "<|im_start|>assistant\n"
                spans.append((len(text), len(text) + len(m["content"] + "<|im_end|>")))
                text += m["content"] + "<|im_end|>\n"
            else:
                text += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
        else:
            if m["role"] == "system":
                text += m["content"] + "\n"
            elif m["role"] == "user":
                text += f"[human]:{m['content']}\n"
            else:
                text += "[bot]:"
                spans.append((len(text), len(text) + len(m["content"] + eos)))
                text += m["content"] + eos + "\n"
    return text, spans


@pytest.mark.parametrize("name", ["chatml", "chimed"])
def test_label_mask_token_by_token(name, tiny_model_dir, tokenizer, tmp_path):
    tokenizer = tokenizer.__class__.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = get_chat_template(name)
    text, spans = _expected_spans(name, tokenizer.eos_token)
    assert tokenizer.apply_chat_template(DIALOGUE, tokenize=False) == text

    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    expected = [any(s <= a and b <= e for s, e in spans) for a, b in encoding["offset_mapping"]]
    assert sum(expected) > 0 and not all(expected)

    args = SFTConfig(
        output_dir=str(tmp_path),
        max_length=1024,
        assistant_only_loss=True,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to=[],
    )
    trainer = ChimedSFTTrainer(
        model=str(tiny_model_dir),
        args=args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list([{"messages": DIALOGUE}]),
    )
    row = trainer.train_dataset[0]
    assert row["input_ids"] == encoding["input_ids"]
    actual = [label != -100 for label in row["labels"]]
    mismatches = [
        (i, tokenizer.decode([t]), e, a)
        for i, (t, e, a) in enumerate(zip(row["input_ids"], expected, actual))
        if e != a
    ]
    assert not mismatches, mismatches
    trained = tokenizer.decode([t for t, a in zip(row["input_ids"], actual) if a])
    assert "我头痛三天了" not in trained and "你是一名医生" not in trained
    for reply in ("有没有发热？", "建议先休息，观察血压。", "如果持续头痛，请到神经内科就诊。"):
        assert reply in trained


def test_unknown_template_name_is_an_error():
    with pytest.raises(ValueError, match="Unknown chat_template"):
        get_chat_template("vicuna")


@pytest.fixture
def bos_tokenizer(tiny_model_dir):
    """The tiny tokenizer made to add a BOS like LLaMA/Ziya (``<|im_start|>`` stands in for ``<s>``, an id the
    tiny model's embeddings hold), built offline with a ``tokenizers`` post-processor."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos = "<|im_start|>"
    bos_id = tok.convert_tokens_to_ids(bos)
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    tok.bos_token = bos
    tok.chat_template = get_chat_template("chimed")
    assert tok("头痛").input_ids[0] == bos_id  # it really adds a BOS, as LLaMA's does
    return tok


def test_bos_starts_every_path_once(bos_tokenizer, tiny_model_dir, tmp_path):
    """The first token of an SFT example, of a scored multiple-choice prompt and of a generation prompt is the BOS,
    once, as the authors' inputs start with <s>. Expected ids come from the tokenizer's own call (independent).

    catches: SFT under the chimed template, choice scoring or generation starting without BOS, or with it twice."""
    import torch
    from transformers import AutoModelForCausalLM

    from chimed_trl.evaluation.choice import predict_letters
    from chimed_trl.generation import TransformersGenerator

    bos = bos_tokenizer.bos_token_id
    args = SFTConfig(
        output_dir=str(tmp_path), max_length=256, assistant_only_loss=True, bf16=False,
        gradient_checkpointing=False, use_cpu=True, report_to=[],
    )  # fmt: skip
    trainer = ChimedSFTTrainer(
        model=str(tiny_model_dir),
        args=args,
        processing_class=bos_tokenizer,
        train_dataset=Dataset.from_list([{"messages": DIALOGUE[:3]}]),
    )
    sft_ids = trainer.train_dataset[0]["input_ids"]
    assert sft_ids[0] == bos and sft_ids[1] != bos

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"]), with_kwargs=True)
    prompt = "题目：高血压患者应\nA. 高盐饮食\nB. 低盐饮食\n答案："
    predict_letters(model, bos_tokenizer, [prompt], [["A", "B"]])
    hook.remove()
    assert seen[0][0].tolist() == bos_tokenizer(prompt).input_ids  # the tokenizer's own call: BOS + text

    captured = []
    original = model.generate
    model.generate = lambda **kw: captured.append(kw["input_ids"]) or original(**kw)
    TransformersGenerator(model, bos_tokenizer, max_new_tokens=2)([[{"role": "user", "content": "头痛怎么办"}]])
    ids = captured[0][0]
    ids = ids[ids != bos_tokenizer.pad_token_id]
    assert ids[0].item() == bos and ids[1].item() != bos and int((ids == bos).sum()) == 1
    assert torch.equal(ids, torch.tensor(bos_tokenizer("[human]:头痛怎么办\n[bot]:").input_ids))
