"""``ChimedSFTTrainer``: TRL's ``SFTTrainer`` for continued pre-training (packed) and SFT.

What it adds, by subclassing only:

- a guard that packed (padding-free) batches run on an attention backend that isolates documents
  (see :mod:`chimed_trl.packing`);
- the packing efficiency (fraction of real tokens in ``max_length`` rows) of the prepared dataset,
  logged at start-up and kept in ``packing_stats``;
- a per-rank count of micro-batches, gathered at the end (``batches_per_rank``), so a distributed
  run can show that every rank trained;
- run counters that survive a resume (:class:`RunCounters`, a ``TrainerCallback`` with ``ExportableState``):
  each checkpoint's ``trainer_state.json`` holds the micro-batches per rank, tokens and wall time so far,
  read back by ``train(resume_from_checkpoint=...)``, so the totals of a resumed run cover the whole run,
  not only the part after the resume;
- a model card that names the base model when it is a local directory (TRL writes "[None]").

Example::

    from trl import SFTConfig
    from chimed_trl.trainers import ChimedSFTTrainer

    args = SFTConfig(output_dir="runs/x", max_length=512, packing=True, packing_strategy="bfd_split",
                     bf16=False, activation_checkpointing=False, max_steps=5, report_to=[])
    trainer = ChimedSFTTrainer(model="runs/tiny-model", args=args, train_dataset=dataset)
    trainer.train()
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pyarrow.compute as pc
import torch
from transformers import TrainerCallback, TrainerState
from transformers.trainer_callback import ExportableState
from trl import SFTTrainer

from chimed_trl.packing import check_isolation_supported, packing_efficiency
from chimed_trl.runfiles import write_atomic

logger = logging.getLogger(__name__)
RUN_COUNTERS = "chimed_run_counters.json"  # where checkpoints written before RunCounters kept the totals
TRAINER_STATE = "trainer_state.json"


class RunCounters(TrainerCallback, ExportableState):
    """Whole-run totals a resume carries on from: ``{"batches_per_rank", "tokens", "wall_time_s"}``.

    transformers saves :meth:`state` into each checkpoint's ``trainer_state.json`` (``stateful_callbacks``), the
    file whose presence marks a checkpoint complete, so the totals can never be newer or older than their
    checkpoint. They are gathered from every rank (a collective) at the step end that decides to save: the save
    itself runs on the main process only. ``trainer`` is the :class:`ChimedSFTTrainer` whose totals these are.
    """

    def __init__(self, totals: dict | None = None):
        self.totals = totals  # as of the latest save
        self.trainer = None

    def state(self) -> dict:
        return {"args": {"totals": self.totals}, "attributes": {}}

    def _snapshot(self, control) -> None:
        if control.should_save and self.trainer is not None:
            self.totals = self.trainer.run_counters()

    def on_train_begin(self, args, state, control, **kwargs):
        # a checkpoint written before this callback existed has no entry, and the save would look it up
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def on_step_end(self, args, state, control, **kwargs):
        self._snapshot(control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._snapshot(control)


def saved_run_counters(checkpoint: Path) -> dict | None:
    """The totals a checkpoint holds (its ``trainer_state.json``; older checkpoints: ``chimed_run_counters.json``)."""
    state = (
        TrainerState.load_from_json(str(checkpoint / TRAINER_STATE))
        if (checkpoint / TRAINER_STATE).is_file()
        else None
    )
    saved = (state.stateful_callbacks or {}).get(RunCounters.__name__) if state is not None else None
    if isinstance(saved, dict) and saved.get("args", {}).get("totals"):
        return saved["args"]["totals"]
    legacy = checkpoint / RUN_COUNTERS
    return json.loads(legacy.read_text()) if legacy.is_file() else None


class ChimedSFTTrainer(SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._local_batches = 0  # this segment's (since the start or the resume)
        self.run_start_time = time.time()  # a recipe may set it earlier (to count data loading)
        # what the earlier segments of a resumed run did: this rank's micro-batches, tokens, seconds
        self._before = {"batches": 0, "tokens": 0, "wall_time_s": 0.0}
        self.add_callback(RunCounters())
        if self.padding_free:
            check_isolation_supported(self.model)
        self.packing_stats = self._packing_stats(self.train_dataset)
        if self.packing_stats:
            logger.info("packing: %s", self.packing_stats)

    def _packing_stats(self, dataset) -> dict | None:
        if not self.args.packing or dataset is None or not hasattr(dataset, "data"):
            return None
        lengths = pc.list_value_length(dataset.data.column("input_ids")).to_pylist()
        documents = None
        if "seq_lengths" in dataset.column_names:
            documents = int(pc.sum(pc.list_value_length(dataset.data.column("seq_lengths"))).as_py())
        return {
            "rows": len(lengths),
            "documents": documents,
            "tokens": int(sum(lengths)),
            "max_length": self.args.max_length,
            "efficiency": round(packing_efficiency(lengths, self.args.max_length), 6),
        }

    def training_step(self, *args, **kwargs):
        self._local_batches += 1
        self._run_counters_callback().trainer = self  # also a RunCounters transformers re-created on resume
        return super().training_step(*args, **kwargs)

    def _run_counters_callback(self) -> RunCounters:
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, RunCounters))

    def batches_per_rank(self) -> list[int]:
        """Micro-batches each rank ran, over the whole run (a collective: call it on every rank)."""
        local = torch.tensor([self._before["batches"] + self._local_batches], device=self.accelerator.device)
        return [int(x) for x in self.accelerator.gather(local).tolist()]

    def wall_time(self) -> float:
        """Seconds of the whole run: earlier segments (before a resume) plus this process's."""
        return self._before["wall_time_s"] + time.time() - self.run_start_time

    def run_counters(self) -> dict:
        """Totals that a resume must carry on from (a collective). Tokens: TRL's count of this segment's
        (``num_tokens``) plus the earlier segments'."""
        tokens = self._before["tokens"] + int(getattr(self, "_total_train_tokens", 0))
        return {"batches_per_rank": self.batches_per_rank(), "tokens": tokens, "wall_time_s": self.wall_time()}

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:  # Trainer's "the last checkpoint": resolve it here for the counters too
            from chimed_trl.rundir import last_checkpoint

            resume_from_checkpoint = last_checkpoint(self.args.output_dir)
        if isinstance(resume_from_checkpoint, str | os.PathLike):
            self._restore_run_counters(Path(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _restore_run_counters(self, checkpoint: Path) -> None:
        counters = saved_run_counters(checkpoint)
        if counters is None:
            logger.warning("%s holds no run counters: run totals count from this resume only", checkpoint)
            return
        self._run_counters_callback().totals = counters
        per_rank, world = counters["batches_per_rank"], self.accelerator.num_processes
        if len(per_rank) == world:
            batches = per_rank[self.accelerator.process_index]
        else:
            logger.warning("resuming on %d processes a run saved on %d", world, len(per_rank))
            batches = sum(per_rank) // world
        self._before = {"batches": batches, "tokens": counters["tokens"], "wall_time_s": counters["wall_time_s"]}

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        base = getattr(self.model.config, "_name_or_path", "")
        card = Path(self.args.output_dir) / "README.md"
        # TRL names only Hub bases; a local base (the previous stage, the tiny model) came out as "[None]"
        if self.is_world_process_zero() and base and os.path.isdir(base) and card.is_file():
            text = card.read_text(encoding="utf-8")
            text = text.replace("[None](https://huggingface.co/None)", f"the local model `{os.path.abspath(base)}`")
            write_atomic(card, text)
