"""The policy side of a round: which weights sample, and the fine-tuning on the kept answers.

The update is our :class:`~chimed_trl.trainers.ChimedSFTTrainer` (TRL's ``SFTTrainer``) on the kept answers as
conversations, loss on the answer only, checkpoints in ``round_<r>/train`` (a killed update resumes). A kept
answer whose prompt + answer exceed ``max_length`` never gets here (selection rules it out), so no sequence is
cut by the SFT trainer.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from chimed_trl.rundir import last_checkpoint

logger = logging.getLogger(__name__)


class PolicyUpdate:
    """Mixed into :class:`~chimed_trl.trainers.rejection_sampling.RejectionSamplingTrainer`."""

    def policy_source(self, r: int) -> str:
        return self.model_path if r == 0 else str(self.round_dir(r - 1) / "policy")

    @staticmethod
    def _has_model(path: Path) -> bool:
        return (path / "adapter_config.json").exists() or (path / "config.json").exists()

    def generation_model_dir(self, r: int) -> str:
        """The weights a launched server loads: the initial model or the last round's policy (adapters merged)."""
        source = self.policy_source(r)
        if r == 0 and self.initial_model is not None and not self._has_model(Path(source)):
            source = str(self.round_dir(0) / "initial_policy")  # a model object without a directory: save it once
            if not self._has_model(Path(source)):
                self.initial_model.save_pretrained(source, safe_serialization=True)
                self.tokenizer.save_pretrained(source)
        if not (Path(source) / "adapter_config.json").exists():
            return source
        merged = self.round_dir(r) / "merged_policy"
        if not self._has_model(merged):
            model = self.load_policy(r).merge_and_unload()
            model.save_pretrained(merged, safe_serialization=True)
            self.tokenizer.save_pretrained(merged)
        return str(merged)

    def load_policy(self, r: int):
        """The policy that samples in round ``r``: the initial model, or the policy round ``r - 1`` saved."""
        from transformers import AutoModelForCausalLM

        source = self.policy_source(r)
        if r == 0 and self.initial_model is not None:
            return self.initial_model.to(self.args.device)
        if (Path(source) / "adapter_config.json").exists():
            from peft import PeftConfig, PeftModel

            base = PeftConfig.from_pretrained(source).base_model_name_or_path
            model = AutoModelForCausalLM.from_pretrained(base, **self.model_init_kwargs)
            return PeftModel.from_pretrained(model, source, is_trainable=True)
        model = AutoModelForCausalLM.from_pretrained(source, **self.model_init_kwargs)
        return model.to(self.args.device)

    def sft_dataset(self, lines: list[dict]):
        from datasets import Dataset

        by_id = {p["id"]: p for p in self.prompts}
        rows = [
            {"messages": by_id[x["prompt_id"]]["prompt"] + [{"role": "assistant", "content": x["text"]}]}
            for x in lines
            if x["kept"] and x["prompt_id"] in by_id
        ]
        return Dataset.from_list(rows) if rows else None

    def fine_tune(self, r: int, model, lines: list[dict]):
        policy_dir = self.round_dir(r) / "policy"
        dataset = self.sft_dataset(lines)
        if dataset is None:
            logger.warning("round %d kept no answers: the policy is carried over unchanged", r)
            if self.state.is_main_process:
                model.save_pretrained(policy_dir, safe_serialization=True)
                self.tokenizer.save_pretrained(policy_dir)
            return None
        trainer = self.build_sft_trainer(r, model, dataset)
        trainer.train(resume_from_checkpoint=last_checkpoint(trainer.args.output_dir))
        trainer.save_model(str(policy_dir))
        if self.state.is_main_process:
            self.tokenizer.save_pretrained(policy_dir)
        return trainer

    def build_sft_trainer(self, r: int, model, dataset):
        """The package's SFT trainer on the kept answers; checkpoints in ``round_<r>/train`` (resumable)."""
        from chimed_trl.trainers.sft import ChimedSFTTrainer

        args = copy.copy(self.args)
        args.output_dir = str(self.round_dir(r) / "train")
        # a policy loaded from a saved adapter keeps training that adapter; a full model gets a new one
        peft_config = None if hasattr(model, "peft_config") else self.peft_config
        return ChimedSFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=self.tokenizer,
            peft_config=peft_config, callbacks=self.callbacks,
        )  # fmt: skip
