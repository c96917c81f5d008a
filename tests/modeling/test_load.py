import json

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from trl import SFTConfig, TrlParser, get_peft_config, get_quantization_config

from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.modeling.load import load_config, load_model


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory, tiny_model_dir):
    """The tiny model re-saved with a native context of 1,024 positions."""
    path = tmp_path_factory.mktemp("short")
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 1024
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(**config)).save_pretrained(path)
    return path


@pytest.mark.parametrize("rope_type", ["linear", "dynamic", "yarn"])
def test_rope_scaling_runs_native_1024_at_4096(short_context_model, rope_type):
    args = ChimedModelConfig(
        model_name_or_path=str(short_context_model),
        dtype="float32",
        rope_scaling_type=rope_type,
        rope_scaling_factor=4.0,
    )
    config = load_config(args)
    assert config.max_position_embeddings == 4096
    assert config.rope_parameters["rope_type"] == rope_type and config.rope_parameters["factor"] == 4.0
    model = load_model(args).eval()
    ids = torch.randint(5, model.config.vocab_size, (1, 4096), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    assert logits.shape == (1, 4096, model.config.vocab_size) and torch.isfinite(logits).all()
    # scaling changes the rotary frequencies: the scaled model is not the unscaled one
    if rope_type == "linear":
        plain = load_model(ChimedModelConfig(model_name_or_path=str(short_context_model), dtype="float32")).eval()
        with torch.no_grad():
            assert not torch.allclose(plain(input_ids=ids[:, :64]).logits, model(input_ids=ids[:, :64]).logits)


def test_bad_rope_settings_are_errors():
    with pytest.raises(ValueError, match="rope_scaling_type"):
        ChimedModelConfig(model_name_or_path="x", rope_scaling_type="ntk", rope_scaling_factor=2.0)
    with pytest.raises(ValueError, match="rope_scaling_factor"):
        ChimedModelConfig(model_name_or_path="x", rope_scaling_type="linear")


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_qlora_config_is_valid_on_cpu(repo_root, stage):
    """QLoRA needs a GPU to run; on CPU we check what it would build, and that loading says why it can't."""
    parser = TrlParser((ChimedScriptArguments, SFTConfig, ChimedModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(
        ["--config", str(repo_root / f"recipes/qlora/{stage}.yaml"), "--bf16", "false", "--use_cpu", "true"]
    )
    quant = get_quantization_config(model_args)
    assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4" and quant.bnb_4bit_use_double_quant
    peft = get_peft_config(model_args)
    assert peft.r == 64 and set(peft.target_modules) >= {"q_proj", "v_proj", "down_proj"}
    assert training_args.max_length == 4096 and training_args.gradient_checkpointing
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            load_model(model_args)


def test_quantization_without_peft_is_an_error():
    with pytest.raises(ValueError, match="use_peft"):
        ChimedModelConfig(model_name_or_path="x", load_in_4bit=True)


def test_model_source_mistakes_are_one_line_errors(tmp_path, tiny_model_dir, monkeypatch):
    """catches: a missing local directory or an unreachable hub id ending in hub tracebacks, and .bin-only
    weights loaded (pickle) or failing obscurely instead of naming safetensors and the conversion."""
    import shutil

    from chimed_trl.errors import UserError
    from chimed_trl.modeling.load import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"model directory .*no_such_model does not exist"):
        load_model(ChimedModelConfig(model_name_or_path=str(tmp_path / "no_such_model")))
    with pytest.raises(UserError, match=r"'someone/not-cached' is not a local directory and could not be loaded"):
        load_tokenizer(ChimedModelConfig(model_name_or_path="someone/not-cached"))
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    shutil.copy(tiny_model_dir / "config.json", bin_only / "config.json")
    (bin_only / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(
        UserError, match=r"only PyTorch .bin weights; chimed-trl loads safetensors only.*save_pretrained"
    ):
        load_model(ChimedModelConfig(model_name_or_path=str(bin_only)))


def _seq_cls_adapter(tiny_model_dir, out):
    """A SEQ_CLS LoRA adapter on the tiny reward twin with non-zero LoRA weights and a changed score head."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / "reward", num_labels=1)
    peft = get_peft_model(
        base, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj"], init_lora_weights=False)
    )
    with torch.no_grad():
        peft.base_model.model.score.modules_to_save["default"].weight.mul_(3.0)
    peft.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_reward_model_loads_in_the_dtype_asked(tiny_model_dir, tmp_path):
    """catches: the reward model loaded in fp32 whatever the run's ``dtype`` says (full weights and adapter),
    and a bf16 model that is not scored in bf16 (scores come back from fp32 weights)."""
    from chimed_trl.modeling.load import load_reward_model
    from chimed_trl.scoring import build_scorer

    adapter = _seq_cls_adapter(tiny_model_dir, tmp_path / "adapter")
    for path in (tiny_model_dir / "reward", adapter):
        model, _ = load_reward_model(path, dtype="bfloat16")
        base_dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}  # peft keeps LoRA in fp32
        assert base_dtypes == {torch.bfloat16}, path
        assert {p.dtype for p in load_reward_model(path)[0].parameters()} == {torch.float32}  # the default
    scorer = build_scorer(str(tiny_model_dir / "reward"), dtype="bfloat16")
    assert next(scorer.model.parameters()).dtype == torch.bfloat16
    assert len(scorer([[{"role": "user", "content": "头晕"}]], ["心内科"])) == 1


def test_adapter_loads_like_base_plus_peft_by_hand(tiny_model_dir, tmp_path):
    """catches: an adapter directory loaded without its LoRA weights or trained score head (base scores), on the
    wrong base, or as a causal LM; compared with plain peft (base + PeftModel.from_pretrained) done here."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from chimed_trl.modeling.load import load_adapter, load_reward_model

    adapter = _seq_cls_adapter(tiny_model_dir, tmp_path / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / "reward", num_labels=1)
    by_hand = PeftModel.from_pretrained(base, adapter).eval()
    bare = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / "reward", num_labels=1).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7], [8, 9, 10, 11, 12]])
    with torch.no_grad():
        want = by_hand(input_ids=ids).logits
        for model in (load_adapter(adapter, task="reward").eval(), load_reward_model(adapter)[0]):
            assert type(model).__name__ == "PeftModelForSequenceClassification"
            assert torch.allclose(model(input_ids=ids).logits, want, atol=1e-6)
        assert not torch.allclose(bare(input_ids=ids).logits, want, atol=1e-3)  # the adapter changes the scores


def test_pad_token_falls_back_to_eos_once(tiny_model_dir, tmp_path):
    """catches: a tokenizer without a pad token (LLaMA/Ziya) left without one (batching fails), a reward model
    whose config has no pad_token_id (transformers refuses batches > 1), or a pad token set over an existing one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from chimed_trl.modeling.load import ensure_pad_token, load_reward_model, load_tokenizer

    no_pad = tmp_path / "no_pad"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir / "reward")
    tokenizer.pad_token = None
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir / "reward", num_labels=1)
    model.config.pad_token_id = None
    model.save_pretrained(no_pad)
    tokenizer.save_pretrained(no_pad)
    assert AutoTokenizer.from_pretrained(no_pad).pad_token is None  # the fixture really has none
    eos = tokenizer.eos_token_id
    assert load_tokenizer(ChimedModelConfig(model_name_or_path=str(no_pad))).pad_token_id == eos
    rm, rm_tokenizer = load_reward_model(no_pad)
    assert rm_tokenizer.pad_token_id == eos and rm.config.pad_token_id == eos
    kept = ensure_pad_token(AutoTokenizer.from_pretrained(tiny_model_dir))
    assert kept.pad_token == "<|pad|>" and kept.pad_token_id != eos  # an existing pad token is kept
