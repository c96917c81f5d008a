"""``RejectionSamplingConfig``: the SFT settings of each round's policy update plus sampling, scoring and selection.

Every numeric and enum setting a user can get wrong is checked in ``__post_init__``, before any data or
model loads, as one :class:`~chimed_trl.errors.ConfigError` line naming the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from chimed_trl.errors import ConfigError, UserError
from chimed_trl.rundir import RESUME_NEUTRAL_KEYS

BACKENDS = ("transformers", "server", "launch")
PROMPT_OVERFLOW = ("drop", "truncate_left", "error")
# settings that do not change what a rerun samples, scores or trains (where and how fast it runs)
RERUN_NEUTRAL_KEYS = RESUME_NEUTRAL_KEYS | frozenset(
    "generation_batch_size generation_base_url generation_api_key_env generation_server reward_batch_size "
    "generation_max_concurrency".split()
)


@dataclass
class RejectionSamplingConfig(SFTConfig):
    """``SFTConfig`` (the fine-tuning of each round) plus the sampling, scoring and selection settings."""

    num_rounds: int = field(default=1, metadata={"help": "Sample -> score -> keep -> fine-tune rounds."})
    num_samples: int = field(default=4, metadata={"help": "Answers sampled per prompt per round."})
    top_k: int = field(default=1, metadata={"help": "Answers kept per prompt (best first), after the filters."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    sampling_top_k: int = field(
        default=0, metadata={"help": "Sample among the k most likely tokens (0: all; `top_k` is the answers kept)."}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer, in tokens."})
    min_reward: float | None = field(default=None, metadata={"help": "Drop answers scoring below this."})
    min_margin: float | None = field(
        default=None, metadata={"help": "Keep only answers scoring at least this much above the prompt's mean."}
    )
    dedup_samples: bool = field(default=True, metadata={"help": "Drop exact duplicate answers of a prompt."})
    keep_truncated: bool = field(
        default=False,
        metadata={"help": "Keep answers that hit max_new_tokens (no EOS / finish_reason length); off: never kept."},
    )
    prompt_overflow: str = field(
        default="drop",
        metadata={
            "help": "A prompt leaving fewer than max_new_tokens of max_length: drop (counted, logged), "
            "truncate_left (oldest turns, then the start of the text, cut to fit) or error."
        },
    )
    include_reference: bool = field(
        default=False, metadata={"help": "The dataset's reference answer competes as one more candidate."}
    )
    generation_backend: str = field(
        default="transformers",
        metadata={"help": "transformers (in process), server (generation_base_url) or launch (generation_server)."},
    )
    generation_batch_size: int = field(
        default=8, metadata={"help": "Prompts per local generate call and per store write (x num_samples rows)."}
    )
    generation_base_url: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "server: an OpenAI-compatible URL, or a list of replicas (least-loaded dispatch, failover)."
        },
    )
    generation_model: str | None = field(default=None, metadata={"help": "server: the served model's name."})
    generation_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "server: the environment variable holding the key."}
    )
    generation_server: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": 'launch: {command: "vllm serve {model} --port {port} ...", ready_timeout: 900, replicas: 1, '
            "gpus_per_replica: G} (K replicas: each its own port and CUDA_VISIBLE_DEVICES group of G devices)."
        },
    )
    generation_honours_n: bool = field(
        default=False,
        metadata={"help": "server/launch: one request with `n` per prompt (vLLM, SGLang); else one per sample."},
    )
    generation_max_concurrency: int = field(
        default=64, metadata={"help": "server/launch: requests in flight at once (over all replicas)."}
    )
    generation_sampling_via: str = field(
        default="openai",
        metadata={
            "help": "server/launch: `openai` (temperature/top_p fields: vLLM, SGLang) or `generation_config` "
            "(extra_body, what `transformers serve` needs to sample at all)."
        },
    )
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model directory (full or LoRA SEQ_CLS adapter)."}
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward callables by dotted path (TRL GRPO style: (prompts, completions, **kwargs) -> list[float "
            "| None]), e.g. [chimed_trl.scoring.repetition_penalty]; with or instead of the reward model."
        },
    )
    reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "One weight per reward (the reward model first, when there is one); default all 1.0."},
    )
    reward_batch_size: int = field(default=16, metadata={"help": "Pairs per reward-model forward pass."})
    reward_max_length: int = field(default=2048, metadata={"help": "Tokens kept (from the end) per scored pair."})
    write_ranked: bool = field(default=True, metadata={"help": "Write round_<r>/ranked.jsonl of kept answers."})
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Loss on the kept answer only (needs a template with generation markers)."}
    )

    def __post_init__(self):
        self._check_values()  # before SFTConfig's own set-up: a bad value is one line naming the key
        super().__post_init__()
        if isinstance(self.generation_server, str):
            self.generation_server = json.loads(self.generation_server)
        self.generation_base_url = _parse_urls(self.generation_base_url)
        if self.generation_backend == "server" and not self.generation_base_url:
            raise ConfigError("generation_backend: server needs generation_base_url")
        if self.generation_backend == "server" and self.num_rounds > 1:
            # an external server keeps serving the initial policy: rounds >= 1 would sample a stale model
            raise ConfigError(
                f"generation_backend: server with num_rounds={self.num_rounds}: the external server would serve the "
                "initial policy in every round; use generation_backend: launch (a server started on each round's "
                "policy) or num_rounds: 1"
            )
        if self.generation_backend == "launch":
            self._check_generation_server()
        self.reward_funcs = _as_list(self.reward_funcs, "reward_funcs")
        self.reward_weights = _as_list(self.reward_weights, "reward_weights")

    @property
    def base_urls(self) -> list[str]:
        """The server replicas (one or more), as a list."""
        return list(self.generation_base_url or [])

    def _check_values(self) -> None:
        """Numbers and enums, in the order a user reads the config; the first bad key is reported."""
        at_least_one = ("num_rounds", "num_samples", "top_k", "max_new_tokens", "generation_batch_size",
                        "generation_max_concurrency", "reward_batch_size", "reward_max_length",
                        "per_device_train_batch_size", "gradient_accumulation_steps")  # fmt: skip
        for key in at_least_one:
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}={value!r} must be an integer >= 1")
        if self.top_k > self.num_samples + int(self.include_reference):
            raise ConfigError(
                f"top_k={self.top_k} is larger than num_samples={self.num_samples}: "
                "there are not that many answers to keep per prompt"
            )
        positive = {
            "learning_rate": self.learning_rate,
            "temperature": self.temperature,
            "num_train_epochs": self.num_train_epochs,
        }
        for key, value in positive.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                what = " for sampling" if key == "temperature" else ""
                raise ConfigError(f"{key} must be > 0{what}, got {value!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p!r} must be in (0, 1]")
        if self.sampling_top_k < 0:
            raise ConfigError(f"sampling_top_k={self.sampling_top_k!r} must be >= 0 (0: no top-k filter)")
        if self.max_length is not None and self.max_length <= self.max_new_tokens:
            raise ConfigError(
                f"max_length={self.max_length} leaves no room for a prompt with max_new_tokens={self.max_new_tokens} "
                "(the fine-tuned sequence is prompt + answer): raise max_length or lower max_new_tokens"
            )
        enums = {"generation_backend": BACKENDS, "prompt_overflow": PROMPT_OVERFLOW,
                 "generation_sampling_via": ("openai", "generation_config")}  # fmt: skip
        for key, allowed in enums.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")

    def _check_generation_server(self) -> None:
        """The launch block is checked here, before any model loads, by its one home (a bad template would fail
        after the policy and reward model loaded)."""
        from chimed_trl.generation.server import GenerationServerConfig

        if not self.generation_server:
            raise UserError('generation_backend: launch needs generation_server: {command: "... {model} {port}"}')
        GenerationServerConfig.from_dict(self.generation_server)


def _parse_urls(value) -> list[str] | None:
    """One URL, a list of them, or a JSON list given on the command line -> a list (None when unset)."""
    if value is None or value == []:
        return None
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [u.strip() for u in text.split(",")]
    urls = [str(u).strip().rstrip("/") for u in value if str(u).strip()]
    if not urls:
        return None
    if len(set(urls)) != len(urls):
        raise ConfigError(f"generation_base_url lists a replica twice: {urls}")
    return urls


def _as_list(value, key: str) -> list | None:
    """A YAML list, one value, or a JSON list given on the command line -> a list (None when unset)."""
    if value is None or isinstance(value, list | tuple):
        return None if value is None else list(value)
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{key}={value!r}: not a JSON list ({err})") from None
    return [value]
