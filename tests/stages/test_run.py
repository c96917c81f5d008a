"""guarded_run: what a run interrupted before any result leaves behind."""

import pytest

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
