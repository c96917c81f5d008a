"""Listwise reward model: a TRL ``RewardTrainer`` that trains on K-way rankings in one forward per response.

Input records are ranked lists (``prompt``, ``responses`` best first, optional ``ranks`` (lower is better, ties
allowed), optional ``sources`` labels) or plain TRL preference rows (``chosen``/``rejected``, optional ``prompt`` and
``margin``), which train as K=2 with no conversion. Prompts are message lists (chat template) or plain strings.

Memory: ``per_device_train_batch_size`` counts *lists*. A step forwards ``sum(K_b)`` sequences (a K=4 list costs 4
sequences, never the 12 of its 6 expanded pairs), so activation memory grows linearly with K: a batch of B lists of
K responses costs about what an SFT batch of ``B*K`` rows does. For K=4 use 1-2 lists per device and raise
``gradient_accumulation_steps``.

The reward is read at the last real token of each sequence (the last position whose attention mask is 1), on
either padding side, also when the pad token equals EOS (LLaMA/Ziya), where transformers' own pooling (the
rightmost token that is not the pad id) would read the token before the final EOS. Use :func:`sequence_scores`
to score with the same pooling outside the trainer.

Example (runs offline on the embedded tiny model)::

    >>> from datasets import Dataset
    >>> from transformers import AutoModelForSequenceClassification, AutoTokenizer
    >>> from chimed_trl import ListwiseRewardConfig, ListwiseRewardTrainer, build_tiny
    >>> path = build_tiny("/tmp/chimed-tiny-doc")
    >>> model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    >>> data = Dataset.from_list([
    ...     {"prompt": [{"role": "user", "content": "头痛怎么办？"}],
    ...      "responses": ["建议到神经内科就诊。", "可能是偏头痛。", "多喝热水。", "不用管。"]},
    ... ] * 8)
    >>> args = ListwiseRewardConfig("/tmp/chimed-rm-doc", loss_type="listmle", max_steps=2, bf16=False,
    ...                             use_cpu=True, gradient_checkpointing=False, report_to=[])
    >>> trainer = ListwiseRewardTrainer(model, args=args, train_dataset=data,
    ...                                 processing_class=AutoTokenizer.from_pretrained(path))
    >>> trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from datasets import Dataset, IterableDataset
from trl import RewardConfig, RewardTrainer
from trl.trainer.utils import global_then_local_main_first

from chimed_trl.errors import UserError
from chimed_trl.losses import LOSS_TYPES, best_worst_index, center_penalty, ranking_loss
from chimed_trl.modeling.reward_head import check_reward_head, reward_head
from chimed_trl.trainers.listwise_data import (  # noqa: F401  (the collator and tokenizer beside the trainer)
    PREPARED,
    DataCollatorForRankedResponses,
    as_ranked,
    tokenize_ranked,
)

logger = logging.getLogger(__name__)
OVER_LENGTH = ("truncate", "drop")


@dataclass
class ListwiseRewardConfig(RewardConfig):
    """TRL's ``RewardConfig`` plus the ranking loss and the handling of over-long responses.

    ``max_length`` (inherited) bounds each prompt+response sequence; ``center_rewards_coefficient`` (inherited) adds
    ``coef * mean((s_i + s_j)**2)`` over the pairs of each list (TRL's term at K=2).
    """

    loss_type: str = field(
        default="listmle", metadata={"help": "listmle (Plackett-Luce), pairwise (K-choose-2) or bt (best vs worst)."}
    )
    rank_margin: float = field(
        default=0.0,
        metadata={"help": "pairwise/bt: margin per unit of rank gap, -log sigmoid(s_i - s_j - margin * gap)."},
    )
    over_length: str = field(
        default="truncate",
        metadata={
            "help": "Responses longer than max_length: truncate (keep the first max_length tokens) or drop the "
            "response (the list is dropped when fewer than 2 ranked responses remain). A truncated response left "
            "with no response token, or with the same tokens as an earlier kept one, is dropped. Counted and logged."
        },
    )
    padding_side: str = field(default="right", metadata={"help": "Padding side of the collated sequences."})
    metric_max_rank: int = field(
        default=8, metadata={"help": "Mean reward is reported per rank value 0..metric_max_rank-1."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type not in LOSS_TYPES:
            raise UserError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.max_length is not None and (isinstance(self.max_length, bool) or self.max_length < 1):
            raise UserError(
                f"max_length must be a positive number of tokens (or null for no limit), got {self.max_length!r}"
            )
        if self.over_length not in OVER_LENGTH:
            raise UserError(f"over_length must be 'truncate' or 'drop', got {self.over_length!r}")
        if self.padding_side not in ("left", "right"):
            raise UserError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.loss_type == "listmle" and self.rank_margin:
            raise UserError("rank_margin applies to loss_type pairwise or bt, not listmle")


def sequence_scores(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """``(scores [N], model outputs)``: the head's output at the last position whose attention mask is 1.

    The head runs on every position; a forward hook keeps its per-token output so that we pool by the attention
    mask rather than by the pad id (which would skip a final EOS equal to the pad token). The model itself is
    called as usual, so DDP/DeepSpeed/PEFT wrappers see a normal forward.
    """
    captured = {}
    handle = reward_head(model).register_forward_hook(lambda module, args, out: captured.__setitem__("out", out))
    try:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    token_scores = captured["out"][..., 0]
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.to(positions.dtype)).argmax(dim=1)
    return token_scores[torch.arange(token_scores.shape[0], device=token_scores.device), last], outputs


def list_statistics(
    scores: torch.Tensor, ranks: torch.Tensor, source_ids: torch.Tensor, n_ranks: int, n_sources: int
) -> torch.Tensor:
    """Fixed-width per-list statistics ``[B, 6 + 2*n_ranks + 2*n_sources]`` (summable across lists and processes).

    Columns: correct ordered pairs, ordered pairs, top-1 hit (a fraction when scores tie at the top), lists, Kendall tau-b sum, lists with a defined tau,
    then the reward sums per rank value, their counts, the reward sums per source id and their counts.
    """
    valid = ranks >= 0
    both = valid[:, :, None] & valid[:, None, :]
    upper = torch.triu(torch.ones_like(both[0]), 1)
    ordered = both & (ranks[:, :, None] < ranks[:, None, :])
    correct = (ordered & (scores[:, :, None] > scores[:, None, :])).sum(dim=(1, 2))
    n_ordered = ordered.sum(dim=(1, 2))
    masked = torch.where(valid, scores, torch.full_like(scores, float("-inf")))
    best_rank = torch.where(valid, ranks, torch.full_like(ranks, torch.iinfo(ranks.dtype).max)).min(dim=1).values
    # top-1 hit, shared among the responses tied at the top score: lists are stored best first, so an argmax (first
    # maximum) would credit a constant scorer with every list
    at_max = valid & (masked == masked.max(dim=1, keepdim=True).values)
    is_best = valid & (ranks == best_rank[:, None])
    top1 = (at_max & is_best).sum(dim=1).to(scores.dtype) / at_max.sum(dim=1).clamp(min=1).to(scores.dtype)
    # Kendall tau-b between the scores and the quality order (-rank), pairs i < j of real responses
    pairs = both & upper
    score_sign = torch.sign(scores[:, :, None] - scores[:, None, :])
    quality_sign = torch.sign(ranks[:, None, :] - ranks[:, :, None]).to(scores.dtype)
    concordance = torch.where(pairs, score_sign * quality_sign, torch.zeros_like(score_sign)).sum(dim=(1, 2))
    n0 = pairs.sum(dim=(1, 2)).to(scores.dtype)
    n_rank_ties = (pairs & (quality_sign == 0)).sum(dim=(1, 2))
    n_score_ties = (pairs & (score_sign == 0)).sum(dim=(1, 2))
    denominator = ((n0 - n_rank_ties) * (n0 - n_score_ties)).sqrt()
    has_tau = denominator > 0
    tau = torch.where(has_tau, concordance / denominator.clamp(min=1e-12), torch.zeros_like(denominator))
    columns = [correct, n_ordered, top1 * (n_ordered > 0), n_ordered > 0, tau, has_tau]
    columns = [c.to(scores.dtype) for c in columns]
    rank_onehot = (ranks[:, :, None] == torch.arange(n_ranks, device=ranks.device)) & valid[:, :, None]
    source_onehot = (source_ids[:, :, None] == torch.arange(n_sources, device=ranks.device)) & valid[:, :, None]
    per_group = []
    for onehot in (rank_onehot, source_onehot):
        weights = onehot.to(scores.dtype)
        per_group += [(weights * scores[:, :, None]).sum(dim=1), weights.sum(dim=1)]
    return torch.cat([torch.stack(columns, dim=1), *per_group], dim=1)


class ListwiseRewardTrainer(RewardTrainer):
    """``RewardTrainer`` on K-way rankings: one forward per response, losses ``listmle``/``pairwise``/``bt``.

    Same constructor as :class:`trl.RewardTrainer`. Logged metrics (train and ``eval_``): ``loss``,
    ``pairwise_accuracy`` (all strictly ordered pairs), ``top1_accuracy``, ``kendall_tau``, ``margin`` (best minus
    worst), ``min/mean/max_reward``, ``reward_rank_<r>`` and ``reward_source_<label>``. ``predict()`` takes raw
    records and returns ``predictions = (scores, ranks)``, each ``[N, K_max]``; entries with a negative rank are padding.
    ``data_report[split]`` counts the truncated and dropped responses and lists. With several eval sets
    (``eval_dataset={"heldout": ..., "train_sample": ...}``) each set's metrics are logged under its own name
    (``eval_heldout_pairwise_accuracy``, ...). ``margin`` is the mean over lists.
    """

    _tag_names = ["trl", "reward-trainer", "listwise", "chimed-trl"]

    def __init__(self, model, args: ListwiseRewardConfig | None = None, data_collator=None, *pargs, **kwargs):
        if args is None:
            raise UserError("ListwiseRewardTrainer needs a ListwiseRewardConfig (args=...)")
        if not isinstance(args, ListwiseRewardConfig):
            raise UserError(f"args must be a ListwiseRewardConfig, got {type(args).__name__}")
        if not isinstance(model, str):
            check_reward_head(model)
        self.source_names: list[str] = []
        self.data_report: dict[str, dict] = {}
        own_collator = data_collator is None
        placeholder = DataCollatorForRankedResponses(pad_token_id=0)
        super().__init__(model, args, data_collator or placeholder, *pargs, **kwargs)
        check_reward_head(self.model)
        if own_collator:  # the pad id is only known once TRL has settled the tokenizer's pad token
            self.data_collator = DataCollatorForRankedResponses(
                pad_token_id=self.processing_class.pad_token_id,
                pad_to_multiple_of=args.pad_to_multiple_of,
                padding_side=args.padding_side,
            )
        self._sums = {"train": None, "eval": None}
        self._eval_prefix = "eval"  # the metric prefix of the eval set being scored (see log)

    # ---- data --------------------------------------------------------------------------------------------------
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if PREPARED in (dataset.column_names or []):
            return dataset  # idempotent: evaluate() calls it again on prepared datasets
        if isinstance(dataset, Dataset) and "sources" in dataset.column_names:
            labels = {s for row in dataset["sources"] if row for s in row}
            self.source_names += sorted(labels - set(self.source_names))
        source_index = {name: i for i, name in enumerate(self.source_names)}
        report = {"lists_in": 0, "lists_kept": 0, "truncated_responses": 0, "dropped_responses": 0, "dropped_lists": 0}
        map_kwargs = {}
        if isinstance(dataset, Dataset):  # an IterableDataset maps lazily, in the data loader's workers
            map_kwargs = {"desc": f"Tokenizing {dataset_name} rankings", "num_proc": args.dataset_num_proc}
        with global_then_local_main_first():
            dataset = dataset.map(
                tokenize_ranked,
                with_indices=True,
                remove_columns=dataset.column_names,
                fn_kwargs=dict(
                    tokenizer=processing_class,
                    max_length=args.max_length,
                    over_length=args.over_length,
                    source_index=source_index,
                    where=f"{dataset_name} dataset",
                ),
                **map_kwargs,
            )
            if isinstance(dataset, Dataset):
                report["lists_in"] = len(dataset)
                report["truncated_responses"] = sum(dataset["n_truncated"])
                report["dropped_responses"] = sum(dataset["n_dropped"])
                dataset = dataset.filter(lambda keep: keep, input_columns="keep", num_proc=args.dataset_num_proc)
                report["lists_kept"] = len(dataset)
                report["dropped_lists"] = report["lists_in"] - report["lists_kept"]
            else:
                dataset = dataset.filter(lambda keep: keep, input_columns="keep")
            dataset = dataset.remove_columns(["keep", "n_truncated", "n_dropped"])
        self.data_report[dataset_name] = report
        if report["truncated_responses"] or report["dropped_responses"]:
            logger.warning(
                "%s: %d responses over max_length=%s truncated, %d dropped, %d lists dropped",
                dataset_name,
                report["truncated_responses"],
                args.max_length,
                report["dropped_responses"],
                report["dropped_lists"],
            )
        if not isinstance(dataset, IterableDataset) and len(dataset) == 0:
            raise UserError(f"{dataset_name} dataset: no list left after over_length={args.over_length!r} handling")
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [PREPARED, "ranks", "source_ids", "margin"]

    # ---- loss and metrics ----------------------------------------------------------------------------------------
    def _margin(self, inputs) -> float | torch.Tensor:
        margin = inputs.get("margin")
        if margin is None:
            return self.args.rank_margin
        if self.args.loss_type == "listmle":
            raise UserError("the dataset has a `margin` column, which loss_type listmle cannot use: use pairwise/bt")
        return margin + self.args.rank_margin

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        ranks = inputs["ranks"]
        flat, outputs = sequence_scores(model, inputs["input_ids"], inputs["attention_mask"])
        scores = flat.new_zeros(ranks.shape).masked_scatter(ranks >= 0, flat)
        loss = ranking_loss(self.args.loss_type, scores, ranks, self._margin(inputs))
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * center_penalty(scores, ranks)
        self._record_metrics(mode, inputs, flat.detach(), scores.detach())
        return (loss, {"scores": scores, "logits": flat[:, None]}) if return_outputs else loss

    def _record_metrics(self, mode: str, inputs, flat: torch.Tensor, scores: torch.Tensor) -> None:
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        ranks = inputs["ranks"]
        rows = list_statistics(
            scores.float(), ranks, inputs["source_ids"], self.args.metric_max_rank, len(self.source_names)
        )
        # each list's margin (best minus worst) and a count: the logged margin is the mean over lists, not over
        # batches (a short last batch would otherwise weigh as much as a full one)
        best, worst = best_worst_index(ranks)
        batch = torch.arange(ranks.shape[0], device=ranks.device)
        list_margins = scores.float()[batch, best] - scores.float()[batch, worst]
        rows = torch.cat([rows, list_margins[:, None], torch.ones_like(list_margins)[:, None]], dim=1)
        # fixed-size tensors only: [B, D] per process (B equal across processes) and scalars; never ragged ones
        rows = self.accelerator.gather_for_metrics(rows).sum(dim=0).cpu()
        self._sums[mode] = rows if self._sums[mode] is None else self._sums[mode] + rows
        extremes = torch.stack([flat.min(), flat.max(), flat.sum(), torch.tensor(float(flat.numel()))])
        extremes = self.accelerator.gather_for_metrics(extremes[None].float()).cpu()
        self._metrics[mode]["min_reward"].append(extremes[:, 0].min().item())
        self._metrics[mode]["max_reward"].append(extremes[:, 1].max().item())
        self._metrics[mode]["mean_reward"].append((extremes[:, 2].sum() / extremes[:, 3].sum()).item())

    def summary_metrics(self, mode: str) -> dict[str, float]:
        """Ratios from the summed statistics since the last log (accuracies, tau, mean rewards)."""
        sums = self._sums.get(mode)
        if sums is None:
            return {}
        *sums, margin_sum, n_lists = sums.tolist()  # the last two columns: see _record_metrics
        out = {"margin": margin_sum / n_lists} if n_lists else {}
        if sums[1]:
            out["pairwise_accuracy"] = sums[0] / sums[1]
        if sums[3]:
            out["top1_accuracy"] = sums[2] / sums[3]
        if sums[5]:
            out["kendall_tau"] = sums[4] / sums[5]
        n_ranks = self.args.metric_max_rank
        labels = [f"rank_{r}" for r in range(n_ranks)] + [f"source_{s}" for s in self.source_names]
        n_sources = len(self.source_names)
        rank_block, source_block = sums[6 : 6 + 2 * n_ranks], sums[6 + 2 * n_ranks :]
        totals = rank_block[:n_ranks] + source_block[:n_sources]
        counts = rank_block[n_ranks:] + source_block[n_sources:]
        for label, total, count in zip(labels, totals, counts):
            if count:
                out[f"reward_{label}"] = total / count
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        for key, value in self.summary_metrics(mode).items():
            self._metrics[mode][key] = [value]
        self._sums[mode] = None
        if mode == "eval" and self._eval_prefix != "eval":
            # several eval sets (eval_dataset={"heldout": ..., "train_sample": ...}) are scored one after the other;
            # TRL would name every set's metrics eval_<key>, so name them after their set: eval_heldout_<key>
            for key, values in self._metrics["eval"].items():
                logs[f"{self._eval_prefix}_{key}"] = sum(values) / len(values)
            self._metrics["eval"].clear()
        super().log(logs, start_time)

    # ---- evaluation and prediction ------------------------------------------------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Loss, and scores/ranks as ``[B, K_max]`` tensors (equal first dimension on every process)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        return loss, (outputs["scores"].detach(), inputs["ranks"]), None

    def _reset_eval_metrics(self) -> None:
        self._sums["eval"] = None
        self._metrics["eval"] = defaultdict(list)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        self._reset_eval_metrics()
        outer, self._eval_prefix = self._eval_prefix, metric_key_prefix  # a dict of sets re-enters once per set
        try:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._eval_prefix = outer

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """Scores raw ranked (or chosen/rejected) records: ``predictions = (scores, ranks)``, ``[N, K_max]`` each."""
        test_dataset = self._prepare_dataset(test_dataset, self.processing_class, self.args, metric_key_prefix)
        self._reset_eval_metrics()
        try:
            return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._reset_eval_metrics()


__all__ = [
    "DataCollatorForRankedResponses",
    "ListwiseRewardConfig",
    "ListwiseRewardTrainer",
    "check_reward_head",
    "list_statistics",
    "sequence_scores",
]
