"""guarded_run: what a run interrupted before any result leaves behind."""

import pytest
import yaml

from chimed_trl.cli import run_recipe
from chimed_trl.stages import rejection_sampling as rs_stage

from ..conftest import REPO


def test_ctrl_c_before_the_trainer_claims_leaves_nothing_that_blocks_a_rerun(tmp_path, tiny_model_dir, monkeypatch):
    """catches: rejection sampling interrupted (Ctrl-C, a crash) after its train.log and data_stats.json were written
    but before resolved_config.yaml: the folder then holds no marker of ours, and every rerun, even with
    --overwrite_output_dir, was refused as someone else's folder (found by review)."""
    (tmp_path / "interrupt.py").write_text("raise KeyboardInterrupt\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "rs"
    argv = ["--config", str(REPO / "recipes/tiny/rejection_sampling.yaml"), "--output_dir", str(out)]
    argv += ["--model_name_or_path", str(tiny_model_dir), "--build_tiny_model", "false", "--use_cpu", "true"]
    with pytest.raises(KeyboardInterrupt):
        run_recipe(rs_stage.main, rs_stage.ARGUMENT_TYPES, [*argv, "--reward_funcs", "interrupt.f"])
    assert not out.exists()  # the run created it and wrote only its bookkeeping: all removed


def test_a_crash_after_the_claim_keeps_the_log_of_the_run(tmp_path, tiny_model_dir, monkeypatch):
    """catches: the clean-up above reaching too far: a run that crashes once its directory is marked as ours
    (resolved_config.yaml written) must keep its train.log for diagnosis (the rerun resumes or starts over)."""
    (tmp_path / "crash.py").write_text("def f(prompts, completions, **kw):\n    raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = yaml.safe_load((REPO / "recipes/tiny/rejection_sampling.yaml").read_text(encoding="utf-8"))
    config["reward_model_path"] = None  # the reward function alone scores
    (tmp_path / "rs.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "rs"
    argv = ["--config", str(tmp_path / "rs.yaml"), "--output_dir", str(out), "--max_prompts", "2"]
    argv += ["--model_name_or_path", str(tiny_model_dir), "--build_tiny_model", "false", "--use_cpu", "true"]
    with pytest.raises(KeyboardInterrupt):
        run_recipe(rs_stage.main, rs_stage.ARGUMENT_TYPES, [*argv, "--reward_funcs", "crash.f"])
    assert (out / "resolved_config.yaml").is_file() and (out / "train.log").is_file()
