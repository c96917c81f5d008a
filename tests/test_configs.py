"""Every accelerate config parses with accelerate; every recipe YAML parses with TrlParser (unknown keys fail)."""

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from trl import SFTConfig, TrlParser

from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.data.sources import resolve

from .conftest import REPO

ACCELERATE = sorted((REPO / "accelerate_configs").glob("*.yaml"))
RECIPES = sorted(p for p in (REPO / "recipes").glob("*/*.yaml") if yaml.safe_load(p.read_text()).get("stage"))


def test_all_accelerate_configs_present():
    names = {p.stem for p in ACCELERATE}
    assert names >= {
        "single_gpu",
        "multi_gpu",
        "deepspeed_zero2",
        "deepspeed_zero3",
        "deepspeed_zero3_offload",
        "fsdp2",
        "cpu_2proc",
    }


# What each file's name promises: (distributed_type, num_processes). A mismatch such as single_gpu.yaml saying
# num_processes: 8 with distributed_type NO makes accelerate start 8 processes on a multi-GPU host.
EXPECTED = {
    "single_gpu": ("NO", 1),
    "multi_gpu": ("MULTI_GPU", 8),
    "deepspeed_zero2": ("DEEPSPEED", 8),
    "deepspeed_zero3": ("DEEPSPEED", 8),
    "deepspeed_zero3_offload": ("DEEPSPEED", 8),
    "fsdp2": ("FSDP", 8),
    "cpu_2proc": ("MULTI_GPU", 2),
}


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.stem)
def test_accelerate_config_parses(path):
    config = load_config_from_file(str(path))
    # catches: a file whose process count or distribution type contradicts its name (single_gpu with 8 processes)
    assert (config.distributed_type.value, config.num_processes) == EXPECTED[path.stem]
    if "deepspeed" in path.stem:
        assert config.deepspeed_config["zero_stage"] == (2 if "zero2" in path.stem else 3)
        if "offload" in path.stem:
            assert config.deepspeed_config["offload_param_device"] == "cpu"


def test_deepspeed_imports_on_cpu():
    import deepspeed  # noqa: F401


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_config_parses(path):
    parser = TrlParser((ChimedScriptArguments, SFTConfig, ChimedModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(
        ["--config", str(path), "--bf16", "false", "--use_cpu", "true"]
    )
    assert script_args.datasets
    for source in script_args.datasets:
        resolve(source)  # card and formatter exist
    if script_args.stage == "pretrain":
        assert training_args.packing
    else:
        assert training_args.assistant_only_loss
    if path.name == "sft_authors.yaml":  # the authors' published SFT script: 8 epochs at 1024 tokens
        assert (training_args.num_train_epochs, training_args.max_length) == (8, 1024)
    if path.parent.name == "chimed-gpt":
        assert training_args.max_length == (1024 if path.name == "sft_authors.yaml" else 4096)
        assert training_args.learning_rate == 2e-5
        assert (training_args.adam_beta1, training_args.adam_beta2) == (0.9, 0.98)
        assert training_args.weight_decay == 1e-4 and training_args.warmup_steps == 0.01
        assert training_args.per_device_train_batch_size == 2 and not model_args.use_peft


def test_unknown_recipe_key_is_an_error(tmp_path, repo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text((repo_root / "recipes/tiny/sft.yaml").read_text() + "learning_rat: 1.0\n")
    parser = TrlParser((ChimedScriptArguments, SFTConfig, ChimedModelConfig))
    with pytest.raises(ValueError, match="learning_rat"):
        parser.parse_args_and_config(["--config", str(bad)])


def test_bad_dataset_entry_names_its_place():
    with pytest.raises(ValueError, match=r"datasets\[1\]: unknown keys \['pth'\]"):
        ChimedScriptArguments(datasets=[{"card": "tiny_sft", "path": "x"}, {"card": "tiny_sft", "pth": "x"}])
    with pytest.raises(ValueError, match=r"datasets\[0\]: dataset source .*give a `card` or a `formatter`"):
        ChimedScriptArguments(datasets=[{"path": "x.jsonl"}])


def test_recipe_refuses_the_other_stage(repo_root):
    from chimed_trl.stages.lm import train_lm

    parser = TrlParser((ChimedScriptArguments, SFTConfig, ChimedModelConfig))
    args = parser.parse_args_and_config(["--config", str(repo_root / "recipes/tiny/sft.yaml")])
    with pytest.raises(ValueError, match="this recipe runs stage 'pretrain'; the config says stage: 'sft'"):
        train_lm(*args, expected_stage="pretrain")


# Bugs caught: a config whose report_to names a reporter that is not installed (tensorboard) failed only after
# the data had loaded; our own `gradient_checkpointing` key raised a FutureWarning on every run.
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_reporters_set_up_and_keys_are_current(path):
    import warnings

    from transformers.integrations import get_reporting_integration_callbacks

    from chimed_trl.cli import parse_recipe_args

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, training_args, _ = parse_recipe_args(
            (ChimedScriptArguments, SFTConfig, ChimedModelConfig),
            ["--config", str(path), "--bf16", "false", "--use_cpu", "true"],
        )
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]
    callbacks = [cls() for cls in get_reporting_integration_callbacks(training_args.report_to)]
    assert len(callbacks) == len(training_args.report_to)  # each named reporter is installed and set up


def test_test_size_from_the_command_line_keeps_what_was_typed():
    # Bug caught: a float-typed field turned `--test_size 1` into 1.0, which the mixture refuses as ambiguous
    from trl import SFTConfig

    from chimed_trl.cli import parse_recipe_args
    from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments

    types = (ChimedScriptArguments, SFTConfig, ChimedModelConfig)
    for typed, expected in (("1", 1), ("0.25", 0.25), ("2000", 2000)):
        argv = ["--config", str(REPO / "recipes/tiny/sft.yaml"), "--output_dir", "/tmp/unused", "--test_size", typed]
        got = parse_recipe_args(types, argv)[0].test_size
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "path", sorted((REPO / "recipes").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_a_tiny_build_path_is_written_as_a_local_path(path):
    """Bug caught: ``build_tiny_model: true`` with ``model_name_or_path: runs/tiny-model`` works only where a ``runs/``
    folder already exists; from a fresh directory (``chimed-trl reward --config recipes/tiny/reward.yaml``) the tiny
    builder refuses it as a Hub id (``namespace/name``). ``./`` or an absolute path is never a Hub id."""
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if config.get("build_tiny_model"):
        assert str(config["model_name_or_path"]).startswith(("./", "/")), config["model_name_or_path"]
