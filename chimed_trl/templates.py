"""Chat templates that are *training-compatible*: assistant text sits inside ``{% generation %}``.

TRL's ``assistant_only_loss`` builds the loss mask from those markers, so every assistant turn (and
its end-of-turn token, so the model learns to stop) is trained and nothing else is.

- ``chatml``: ``<|im_start|>role\\ncontent<|im_end|>\\n`` (the tiny model's native format).
- ``chimed``: the ChiMed-GPT / Ziya dialogue format ``[human]:{user}\\n[bot]:{assistant}``, each
  assistant turn closed by the tokenizer's EOS, so one can continue training from released weights.

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
