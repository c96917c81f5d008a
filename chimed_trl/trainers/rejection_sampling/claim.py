"""Claiming ``output_dir`` for a rejection-sampling run: the run's fingerprint, and what a rerun changed.

A run writes only into a directory it created or into a rerun of the same run (same fingerprint and config,
up to the neutral keys); anything else is one line that says what differs.
"""

from __future__ import annotations

import hashlib
import json

import yaml
from accelerate.utils import broadcast_object_list

from chimed_trl.errors import UserError
from chimed_trl.rundir import BOOKKEEPING_FILES, config_differences
from chimed_trl.runfiles import RESOLVED_CONFIG, write_json, write_resolved_config
from chimed_trl.trainers.rejection_sampling.config import RERUN_NEUTRAL_KEYS

RUN_FILE = "rejection_sampling_run.json"


class OutputClaim:
    """Mixed into the trainer: needs ``args``, ``prompts``, ``model_path``, ``reward``, ``reward_name``,
    ``output_dir``, ``resolved_config`` and ``state``."""

    def _fingerprint(self) -> dict:
        """What decides the samples: a rerun with other values must not mix its samples into this store."""
        a = self.args
        keys = ("seed", "num_samples", "top_k", "sampling_top_k", "temperature", "top_p", "max_new_tokens", "min_reward",
                "min_margin", "dedup_samples", "include_reference")  # fmt: skip
        prompts = json.dumps([[p["id"], p["prompt"], p["reference"]] for p in self.prompts], ensure_ascii=False)
        prompts_hash = hashlib.blake2b(prompts.encode(), digest_size=16).hexdigest()
        rewards = (
            {"reward_funcs": self.reward.names, "reward_weights": self.reward.weights} if self.reward.funcs else {}
        )
        return {"model": self.model_path, "reward": str(self.reward_name), "prompts": prompts_hash,
                **{k: getattr(a, k) for k in keys}, **rewards}  # fmt: skip

    def _rerun_differences(self) -> list[str]:
        """What differs from the run already in ``output_dir``: fingerprint keys, then config keys (old -> new)."""
        previous = json.loads((self.output_dir / RUN_FILE).read_text())
        current = self._fingerprint()
        changed = sorted(k for k in previous if previous[k] != current.get(k))
        saved_path = self.output_dir / RESOLVED_CONFIG
        if saved_path.is_file():
            saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
            diffs = config_differences(saved, self.resolved_config, RERUN_NEUTRAL_KEYS)
            changed += [d for d in diffs if d.split(":")[0].split(".")[-1] not in changed]
        return changed

    def _claim_output_dir(self) -> None:
        """Write only into a directory this run created (or a rerun of the same run), never over other data."""
        problem = [None]
        if self.state.is_main_process:  # one process decides, so a race cannot make the ranks disagree
            marker = self.output_dir / RUN_FILE
            started = marker.exists() and any(self.output_dir.glob("round_*"))
            # the recipe's own bookkeeping (lock, train.log, data_stats.json) and the marker are not "other data"
            others = [
                p.name
                for p in (self.output_dir.iterdir() if self.output_dir.is_dir() else [])
                if p.name not in BOOKKEEPING_FILES | {RUN_FILE} and not p.name.startswith(".")
            ]
            if started:
                changed = self._rerun_differences()
                if changed:
                    problem[0] = (
                        f"{self.output_dir} holds a rejection-sampling run with other settings "
                        f"({'; '.join(changed)}); rerun with its settings, set overwrite_output_dir: true (the old "
                        "run moves to .previous/<time>/), or use a new output_dir"
                    )
            elif others:
                problem[0] = f"output_dir {self.output_dir} is not empty and is not a rejection-sampling run"
            else:  # fresh, or an earlier attempt that stopped before its first sample: this run's settings win
                write_json(marker, self._fingerprint())
            if problem[0] is None:  # a fresh run or the same run again: the config on disk is this run's
                write_resolved_config(self.output_dir, self.resolved_config)
        if self.state.num_processes > 1:
            broadcast_object_list(problem)
        if problem[0]:
            raise UserError(problem[0])
