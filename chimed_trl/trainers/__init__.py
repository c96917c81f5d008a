from chimed_trl.trainers.sft import ChimedSFTTrainer

__all__ = ["ChimedSFTTrainer"]
