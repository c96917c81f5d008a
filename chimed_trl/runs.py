"""Deprecated: split into :mod:`chimed_trl.rundir` (the run-directory contract) and :mod:`chimed_trl.runfiles`
(atomic writes, secrets, the resolved config). Every name this module had is re-exported from there."""

import warnings

from chimed_trl.rundir import (  # noqa: F401
    _CHECKPOINT,
    _OUR_TEMP,
    BOOKKEEPING_FILES,
    LOCK_FILE,
    PREVIOUS_DIR,
    RESUME_NEUTRAL_KEYS,
    Claim,
    FinishedRun,
    RunLock,
    _foreign_dir_error,
    _holder_alive,
    _is_ours_hidden,
    _judge,
    _safetensors_problem,
    _visible,
    check_output_dir,
    check_writable,
    checkpoint_problem,
    checkpoints,
    config_differences,
    is_finished,
    last_checkpoint,
    logger,
    move_run_aside,
    prepare_output_dir,
    read_resolved_config,
    recipe_of,
    remove_if_only_ours,
)
from chimed_trl.runfiles import (  # noqa: F401
    ENV_NAME,
    KEY_PREFIX,
    METRICS_FILE,
    RESOLVED_CONFIG,
    SECRET_KEY,
    _as_dict,
    api_key_from_env,
    check_env_name,
    is_secret_key,
    looks_like_secret,
    move_secrets_to_env,
    redact,
    resolve_config,
    save_resolved_config,
    write_atomic,
    write_json,
    write_resolved_config,
)

warnings.warn(
    "chimed_trl.runs is deprecated: import from chimed_trl.rundir (run directories) or chimed_trl.runfiles "
    "(atomic writes, secrets, resolved config)",
    DeprecationWarning,
    stacklevel=2,
)
