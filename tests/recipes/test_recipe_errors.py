"""A user's mistakes end a recipe with one line on stderr and exit code 2 (run in-process: no training happens)."""

import importlib.util
import json

import pytest
from trl import SFTConfig

from chimed_trl.cli import parse_recipe_args
from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments

from ..conftest import REPO

TYPES = (ChimedScriptArguments, SFTConfig, ChimedModelConfig)


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fails_with_one_line(capsys, recipe, argv) -> str:
    """Run ``recipes/<recipe>.py`` as its __main__ does; return its one stderr line."""
    from chimed_trl.cli import run_recipe

    capsys.readouterr()  # drop what the test itself printed
    with pytest.raises(SystemExit) as e:
        run_recipe(_recipe(recipe).main, TYPES, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _args(tmp_path, tiny_model_dir, config="recipes/tiny/sft.yaml"):
    return [
        "--config",
        str(REPO / config),
        "--output_dir",
        str(tmp_path / "out"),
        "--model_name_or_path",
        str(tiny_model_dir),
    ]


# Bug caught: a value of the wrong type printed argparse's 147-line usage text.
def test_wrong_type_is_one_line_naming_key_and_yaml(capsys, tmp_path, tiny_model_dir):
    line = fails_with_one_line(capsys, "sft", [*_args(tmp_path, tiny_model_dir), "--learning_rate", "fast"])
    assert "--learning_rate" in line and "'fast'" in line and "recipes/tiny/sft.yaml" in line


# Bugs caught: max_length 0 became a torch sampler traceback; the old `weight:` key silently meant two things.
def test_config_values_are_checked_before_data(capsys, tmp_path, tiny_model_dir):
    line = fails_with_one_line(
        capsys, "pretrain", [*_args(tmp_path, tiny_model_dir, "recipes/tiny/pretrain.yaml"), "--max_length", "0"]
    )
    assert "max_length: must be a number of tokens >= 1" in line and "pretrain.yaml" in line
    assert not (tmp_path / "out" / "data_stats.json").exists()  # refused before the data was read
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (REPO / "recipes/tiny/sft.yaml").read_text().replace("path: chimed_trl", "weight: 2\n    path: chimed_trl")
    )
    line = fails_with_one_line(capsys, "sft", ["--config", str(bad), "--output_dir", str(tmp_path / "o2")])
    assert "datasets[0]: `weight` is ambiguous" in line and "bad.yaml" in line


# Bug caught: an unwritable output_dir was found only at the first checkpoint save, after data loading.
def test_unwritable_output_dir(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "f").write_text("x")
    args = _args(tmp_path, tiny_model_dir)
    args[args.index("--output_dir") + 1] = str(tmp_path / "f" / "run")
    assert "cannot be written" in fails_with_one_line(capsys, "sft", args)


# Bug caught (issue item 1 through the recipe): build_tiny_model: true with a user's model deleted its shards.
def test_recipe_refuses_to_build_tiny_over_a_user_model(capsys, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    user = tmp_path / "mine"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(user, max_shard_size="500KB")
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    args = _args(tmp_path, user)
    line = fails_with_one_line(capsys, "sft", args)
    assert "mine: build_tiny_model: true refuses this directory" in line
    assert {p.name: p.read_bytes() for p in user.iterdir()} == before


# Bug caught: --datasets on the command line failed with "invalid Any value" although --help advertises it.
def test_datasets_as_json_on_the_command_line(capsys):
    entry = [{"card": "cmmlu", "path": "data/cmmlu/test"}, {"formatter": "text", "path": "c.txt", "fraction": 0.5}]
    cpu = ["--output_dir", "x", "--bf16", "false", "--use_cpu", "true"]
    script_args, _, _ = parse_recipe_args(TYPES, ["--datasets", json.dumps(entry), *cpu])
    assert [(s.card, s.formatter, s.path, s.fraction) for s in script_args.datasets] == [
        ("cmmlu", None, "data/cmmlu/test", None),
        (None, "text", "c.txt", 0.5),
    ]
    line = fails_with_one_line(capsys, "sft", ["--datasets", "[{card: cmmlu}]", *cpu])
    assert "argument --datasets: expects JSON" in line


# Bugs caught: invalid YAML (a tab, an unclosed list) was a PyYAML traceback; a typo'd key got HF's developer
# wording ("add them to the dataclass, or set fail_with_unknown_args=False") with no suggestion, and only after
# the dataclasses' own checks had failed on something else.
@pytest.mark.parametrize(
    "text, expected",
    [
        ("learning_rate: 0.1\nstage: sft\ndatasets:\n\t- {card: tiny_sft}\n", r"bad.yaml:4:1: invalid YAML: .*tabs"),
        ("datasets: [a, b\nstage: sft\n", r"bad.yaml:2:6: invalid YAML: expected ',' or ']'"),
        ("learning_rte: 0.1\n", r"bad.yaml: unknown key 'learning_rte'; did you mean 'learning_rate'\?"),
        ("- a\n- b\n", r"bad.yaml: expected a mapping of key: value at the top level"),
    ],
    ids=["tab", "unclosed_list", "typo", "not_a_mapping"],
)
def test_yaml_mistakes_are_one_line_with_file_line_and_column(capsys, tmp_path, text, expected):
    import re

    (tmp_path / "bad.yaml").write_text(text)
    line = fails_with_one_line(capsys, "sft", ["--config", str(tmp_path / "bad.yaml")])
    assert re.search(expected, line), line
    assert not list(tmp_path.glob("runs*"))


# Bug caught: a typo'd flag on the command line reported without the key it was probably meant to be.
def test_unknown_flag_gets_did_you_mean(capsys, tmp_path, tiny_model_dir):
    line = fails_with_one_line(capsys, "sft", [*_args(tmp_path, tiny_model_dir), "--per_device_train_bach_size", "2"])
    assert "unknown key 'per_device_train_bach_size'; did you mean 'per_device_train_batch_size'" in line


# Bugs caught: learning_rate -1 was a torch traceback after the data had loaded; a zero batch size or
# accumulation reached the trainer. Each is one line naming the key, before data or models load and before
# the output directory is claimed (nothing is written, so the corrected rerun starts clean).
@pytest.mark.parametrize(
    "recipe, flag, value",
    [
        ("sft", "learning_rate", "-1"),
        ("sft", "per_device_train_batch_size", "0"),
        ("pretrain", "gradient_accumulation_steps", "0"),
        ("reward", "learning_rate", "0"),
        ("sft", "lora_dropout", "1.5"),
    ],
)
def test_out_of_range_settings_are_refused_before_anything_loads(
    capsys, tmp_path, tiny_model_dir, recipe, flag, value
):
    config = {
        "sft": "recipes/tiny/sft.yaml",
        "pretrain": "recipes/tiny/pretrain.yaml",
        "reward": "recipes/tiny/reward.yaml",
    }
    module = _recipe(recipe)
    from chimed_trl.cli import run_recipe

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_recipe(
            module.main, module.ARGUMENT_TYPES, [*_args(tmp_path, tiny_model_dir, config[recipe]), f"--{flag}", value]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {flag}: must be "), err
    assert not (tmp_path / "out").exists()


# Bug caught: "Unterminated string starting at at column 5" (JSON's message already ends in "at").
def test_json_errors_read_without_doubled_words(tmp_path):
    from chimed_trl.data.readers import read_jsonl
    from chimed_trl.errors import UserError

    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "unterminated', encoding="utf-8")
    with pytest.raises(UserError) as e:
        list(read_jsonl(bad))
    message = str(e.value)
    assert "Unterminated string starting at: column 10" in message and "at at" not in message
    assert f"{bad}:2" in message


# Bug caught: without --config the command-line flags were never checked, so a typo'd flag surfaced as whatever a
# config dataclass raised first (transformers' "Your setup doesn't support bf16/gpu" on a CPU machine), not its name.
def test_unknown_flag_without_a_config_is_named(capsys):
    line = fails_with_one_line(capsys, "sft", ["--use_cpu", "true", "--learning_rte", "0.1"])
    assert "command line: unknown key 'learning_rte'; did you mean 'learning_rate'" in line


# Bug caught: the unknown-flag check knew only the dataclass field names, so with --config it refused what the
# parser itself offers: --help ("unknown key 'help'"), the --no_<flag> of a bool that defaults to true (listed
# by --help as [--no_dedup]) and HF's dashed aliases.
def test_the_parsers_own_flags_pass_the_unknown_key_check(capsys):
    config = ["--config", str(REPO / "recipes/tiny/sft.yaml")]
    script, training, _ = parse_recipe_args(TYPES, [*config, "--no_dedup", "--learning-rate", "0.25"])
    assert script.dedup is False and training.learning_rate == 0.25
    with pytest.raises(SystemExit) as e:
        parse_recipe_args(TYPES, [*config, "--help"])
    assert e.value.code == 0 and "--per_device_train_batch_size" in capsys.readouterr().out
