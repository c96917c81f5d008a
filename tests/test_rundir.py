"""chimed_trl.rundir / chimed_trl.runfiles: the split of chimed_trl.runs keeps its old import path whole."""

import importlib

# every name chimed_trl.runs defined before the split (written out by hand from that module, not read from it)
OLD_RUNS_NAMES = """BOOKKEEPING_FILES Claim ENV_NAME FinishedRun KEY_PREFIX LOCK_FILE METRICS_FILE PREVIOUS_DIR RESOLVED_CONFIG
RESUME_NEUTRAL_KEYS RunLock SECRET_KEY _CHECKPOINT _OUR_TEMP _as_dict _foreign_dir_error _holder_alive _is_ours_hidden
_judge _safetensors_problem _visible api_key_from_env check_env_name check_output_dir check_writable
checkpoint_problem checkpoints config_differences is_finished is_secret_key last_checkpoint logger looks_like_secret
move_run_aside move_secrets_to_env prepare_output_dir read_resolved_config recipe_of redact remove_if_only_ours
resolve_config save_resolved_config write_atomic write_json write_resolved_config""".split()


def test_old_runs_module_reexports_every_name():
    """catches: a name dropped from the deprecated chimed_trl.runs (other branches and user code import
    ``_as_dict``, ``RunLock``, ``write_json`` ... from it), or a re-export bound to a stale copy instead of the
    new home (two ``FinishedRun`` classes: ``except runs.FinishedRun`` would miss rundir's)."""
    runs = importlib.import_module("chimed_trl.runs")
    rundir = importlib.import_module("chimed_trl.rundir")
    runfiles = importlib.import_module("chimed_trl.runfiles")
    missing = [name for name in OLD_RUNS_NAMES if not hasattr(runs, name)]
    assert missing == []
    for name in OLD_RUNS_NAMES:
        home = rundir if hasattr(rundir, name) and name not in vars(runfiles) else runfiles
        assert getattr(runs, name) is getattr(home, name), name
