from chimed_trl.trainers.rejection_sampling import RejectionSamplingConfig, RejectionSamplingTrainer
from chimed_trl.trainers.sft import ChimedSFTTrainer

__all__ = ["ChimedSFTTrainer", "RejectionSamplingConfig", "RejectionSamplingTrainer"]
