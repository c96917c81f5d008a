"""A tiny model whose greedy answers depend on the prompt (the embedded one answers every prompt with newlines)."""

import pytest


def make_diverse(tiny_model_dir, out_dir):
    """The tiny model with its matrices redrawn from N(0, 0.3): random, but prompt-dependent text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.3, generator=generator)
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def diverse_model_dir(tiny_model_dir, tmp_path_factory):
    return make_diverse(tiny_model_dir, tmp_path_factory.mktemp("diverse"))


@pytest.fixture(scope="session")
def diverse_model(diverse_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(diverse_model_dir).eval()


PROMPTS = [
    "头痛怎么办？",
    "发烧",
    "咳嗽三天了，晚上更厉害，需要去医院吗？",
    [{"role": "system", "content": "你是医生。"}, {"role": "user", "content": "胃痛"}],
    "我最近总是失眠，白天没精神，怎么办",
    "高血压",
    "孩子出疹子",
]
