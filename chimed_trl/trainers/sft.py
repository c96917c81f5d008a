"""``ChimedSFTTrainer``: TRL's ``SFTTrainer`` for continued pre-training (packed) and SFT.

What it adds, by subclassing only:

- a guard that packed (padding-free) batches run on an attention backend that isolates documents
  (see :mod:`chimed_trl.packing`);
- the packing efficiency (fraction of real tokens in ``max_length`` rows) of the prepared dataset,
  logged at start-up and kept in ``packing_stats``;
- a per-rank count of micro-batches, gathered at the end (``batches_per_rank``), so a distributed
  run can show that every rank trained;
- run counters that survive a resume: each checkpoint holds ``chimed_run_counters.json`` (micro-batches
  per rank, tokens, wall time so far), read back by ``train(resume_from_checkpoint=...)``, so the
  totals of a resumed run cover the whole run, not only the part after the resume;
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
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import SFTTrainer

from chimed_trl.packing import check_isolation_supported, packing_efficiency
from chimed_trl.runfiles import write_atomic, write_json

logger = logging.getLogger(__name__)
RUN_COUNTERS = "chimed_run_counters.json"


class ChimedSFTTrainer(SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._local_batches = 0
        self.run_start_time = time.time()  # a recipe may set it earlier (to count data loading)
        self._wall_time_before = 0.0  # spent by the earlier segments of a resumed run
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
        return super().training_step(*args, **kwargs)

    def batches_per_rank(self) -> list[int]:
        """Micro-batches each rank ran, over the whole run (a collective: call it on every rank)."""
        local = torch.tensor([self._local_batches], device=self.accelerator.device)
        return [int(x) for x in self.accelerator.gather(local).tolist()]

    def wall_time(self) -> float:
        """Seconds of the whole run: earlier segments (before a resume) plus this process's."""
        return self._wall_time_before + time.time() - self.run_start_time

    def run_counters(self) -> dict:
        """Totals that a resume must carry on from (a collective)."""
        tokens = int(getattr(self, "_total_train_tokens", 0))
        return {"batches_per_rank": self.batches_per_rank(), "tokens": tokens, "wall_time_s": self.wall_time()}

    def _save_checkpoint(self, model, trial):
        # written before the trainer state, whose presence marks the checkpoint complete
        counters = self.run_counters()
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            write_json(folder / RUN_COUNTERS, counters)
        super()._save_checkpoint(model, trial)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:  # Trainer's "the last checkpoint": resolve it here for the counters too
            from chimed_trl.rundir import last_checkpoint

            resume_from_checkpoint = last_checkpoint(self.args.output_dir)
        if isinstance(resume_from_checkpoint, str | os.PathLike):
            self._restore_run_counters(Path(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _restore_run_counters(self, checkpoint: Path) -> None:
        path = checkpoint / RUN_COUNTERS
        if not path.is_file():
            logger.warning("%s has no %s: run totals count from this resume only", checkpoint, RUN_COUNTERS)
            return
        counters = json.loads(path.read_text())
        per_rank = counters["batches_per_rank"]
        if len(per_rank) == self.accelerator.num_processes:
            self._local_batches = per_rank[self.accelerator.process_index]
        else:
            logger.warning("resuming on %d processes a run saved on %d", self.accelerator.num_processes, len(per_rank))
            self._local_batches = sum(per_rank) // self.accelerator.num_processes
        self._total_train_tokens = counters["tokens"]
        self._wall_time_before = counters["wall_time_s"]

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        base = getattr(self.model.config, "_name_or_path", "")
        card = Path(self.args.output_dir) / "README.md"
        # TRL names only Hub bases; a local base (the previous stage, the tiny model) came out as "[None]"
        if self.is_world_process_zero() and base and os.path.isdir(base) and card.is_file():
            text = card.read_text(encoding="utf-8")
            text = text.replace("[None](https://huggingface.co/None)", f"the local model `{os.path.abspath(base)}`")
            write_atomic(card, text)
