from chimed_trl.trainers.listwise_data import DataCollatorForRankedResponses
from chimed_trl.trainers.listwise_reward import ListwiseRewardConfig, ListwiseRewardTrainer, sequence_scores
from chimed_trl.trainers.rejection_sampling import RejectionSamplingConfig, RejectionSamplingTrainer
from chimed_trl.trainers.sft import ChimedSFTTrainer

__all__ = [
    "ChimedSFTTrainer",
    "DataCollatorForRankedResponses",
    "ListwiseRewardConfig",
    "ListwiseRewardTrainer",
    "RejectionSamplingConfig",
    "RejectionSamplingTrainer",
    "sequence_scores",
]
