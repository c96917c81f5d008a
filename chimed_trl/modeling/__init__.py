"""Loading models, tokenizers and adapters (:mod:`.load`), reward-head checks (:mod:`.reward_head`), merging a
LoRA adapter into its base (:mod:`.merge`). Nothing is imported here, so ``import chimed_trl.modeling`` stays cheap."""
