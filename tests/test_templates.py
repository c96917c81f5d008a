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
