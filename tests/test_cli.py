"""The ``chimed-trl`` console command: dispatch, help and mistakes in one line."""

import subprocess
import sys

import pytest

from chimed_trl.cli import ALIASES, STAGE_COMMANDS, TOOL_COMMANDS, main

from .conftest import REPO


def test_unknown_command_is_one_line_with_a_suggestion(capsys):
    """catches: a typo'd subcommand ending in a traceback or argparse's usage wall instead of one line."""
    with pytest.raises(SystemExit) as exit_info:
        main(["sfft", "--config", "x.yaml"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "unknown command 'sfft'" in err[0] and "did you mean sft" in err[0]


def test_every_stage_command_is_a_recipe_and_every_recipe_a_command():
    """catches: a recipe without a console subcommand (or a subcommand naming a recipe that does not exist)."""
    recipes = {p.stem for p in (REPO / "recipes").glob("*.py")}
    assert set(STAGE_COMMANDS) == recipes
    assert set(ALIASES.values()) <= set(STAGE_COMMANDS) | set(TOOL_COMMANDS)


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("tiny", "--seed"),
        ("merge", "--adapter"),
        ("pipeline", "--dry-run"),
        ("demo", "--from"),
        ("sft", "--max_length"),
        ("augment", "--responder_model"),  # its arguments dataclass lives in the stage module itself
    ],
)
def test_help_reaches_the_commands_own_parser(command, flag, tmp_path):
    """catches: the dispatcher swallowing or rewriting argv (the command's own --help must answer), and a stage
    run as ``__main__`` under the console script, where its config dataclass's annotations cannot resolve."""
    proc = subprocess.run(
        [sys.executable, "-c", "from chimed_trl.cli import main; main()", command, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert flag in proc.stdout  # the command's own flags, from any working directory


def test_config_with_an_equals_sign_is_read(tmp_path, capsys):
    """catches: ``--config=FILE`` silently ignored (TrlParser only knows ``--config FILE``), so a config's mistakes
    went unreported and the run went on with defaults (found by review)."""
    config = tmp_path / "sft.yaml"
    config.write_text("stage: sft\nlearning_rte: 0.1\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", f"--config={config}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert str(config) in err[0] and "'learning_rte'" in err[0] and "learning_rate" in err[0]
