"""``ChimedSFTTrainer``: TRL's ``SFTTrainer`` for continued pre-training (packed) and SFT.

What it adds, by subclassing only:

- a guard that packed (padding-free) batches run on an attention backend that isolates documents
  (see :mod:`chimed_trl.packing`);
- the packing efficiency (fraction of real tokens in ``max_length`` rows) of the prepared dataset,
  logged at start-up and kept in ``packing_stats``;
- a per-rank count of micro-batches, gathered at the end (``batches_per_rank``), so a distributed
  run can show that every rank trained.

Example::

    from trl import SFTConfig
    from chimed_trl.trainers import ChimedSFTTrainer

    args = SFTConfig(output_dir="runs/x", max_length=512, packing=True, packing_strategy="bfd_split",
                     bf16=False, gradient_checkpointing=False, max_steps=5, report_to=[])
    trainer = ChimedSFTTrainer(model="runs/tiny-model", args=args, train_dataset=dataset)
    trainer.train()
"""

from __future__ import annotations

import logging

import pyarrow.compute as pc
import torch
from trl import SFTTrainer

from chimed_trl.packing import check_isolation_supported, packing_efficiency

logger = logging.getLogger(__name__)


class ChimedSFTTrainer(SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._local_batches = 0
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
        """Micro-batches each rank ran (a collective: call it on every rank)."""
        local = torch.tensor([self._local_batches], device=self.accelerator.device)
        return [int(x) for x in self.accelerator.gather(local).tolist()]
