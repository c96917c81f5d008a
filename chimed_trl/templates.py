"""Chat templates that are *training-compatible*: assistant text sits inside ``{% generation %}``.

TRL's ``assistant_only_loss`` builds the loss mask from those markers, so every assistant turn (and
its end-of-turn token, so the model learns to stop) is trained and nothing else is.

- ``chatml``: ``<|im_start|>role\\ncontent<|im_end|>\\n`` (the tiny model's native format).
- ``chimed``: the ChiMed-GPT / Ziya dialogue format ``[human]:{user}\\n[bot]:{assistant}``, each
  assistant turn closed by the tokenizer's EOS, so one can continue training from released weights.
  It starts with the tokenizer's BOS when it has one: the authors' inputs start with ``<s>`` (their
  LLaMA tokenizer adds it), and TRL tokenises rendered conversations with ``add_special_tokens=False``,
  so the template is the one place the BOS can come from (and it is not doubled).

Plain-text prompts (multiple-choice scoring) go through :func:`encode_prompt`, which starts them
as the tokenizer's own call would (BOS for LLaMA/Ziya, nothing for Qwen) without a trailing EOS.

Both reject unknown roles inside the template (the data validators reject them earlier, with the
file and line).
"""

from __future__ import annotations

CHATML = (
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('Unknown role: ' + message['role']) }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CHIMED = (
    "{%- if bos_token %}{{- bos_token }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}"
    "{{- message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'user' %}"
    "{{- '[human]:' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '[bot]:' }}"
    "{%- generation %}{{- message['content'] + eos_token }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- raise_exception('Unknown role: ' + message['role']) }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '[bot]:' }}{%- endif %}"
)

CHAT_TEMPLATES = {"chatml": CHATML, "chimed": CHIMED}


def get_chat_template(name: str) -> str:
    """Return a template by name, or the string itself when it already is a Jinja template."""
    if name in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name]
    if "{%" in name or "{{" in name:
        return name
    raise ValueError(f"Unknown chat_template {name!r}: expected one of {sorted(CHAT_TEMPLATES)} or a Jinja string.")


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's own call starts a text with its BOS token (LLaMA/Ziya yes, Qwen no)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Ids of a plain-text prompt as the model saw text in training: BOS first when the tokenizer adds
    one, and no trailing special token (an EOS would end the prompt we score the next token of)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return [tokenizer.bos_token_id, *ids] if tokenizer_adds_bos(tokenizer) else ids
