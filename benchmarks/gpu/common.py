"""What every check shares: the run context, result records, a step timer, memory and device facts."""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import math
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
STATUSES = ("passed", "failed", "skipped")
GIB = 2**30
# Peak dense bf16 tensor-core rate by the vendor's datasheets (no sparsity), in FLOP/s; the first name contained
# in the device name wins. H200 SXM (plain "NVIDIA H200") has the H100 SXM's compute; NVL/PCIe parts are slower.
PEAK_BF16 = {
    "H200 NVL": 835.5e12,
    "H200": 989.4e12,
    "H100 NVL": 835.5e12,
    "H100 PCIe": 756.5e12,
    "H100": 989.4e12,
    "A100": 312e12,
}
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "bitsandbytes")
OPTIONAL = ("flash_attn", "vllm")
# Why some backends are never exercised on the lent GPU: its machine has no network, and what travels is
# capped at 64 MiB with the project.
CANNOT_TRAVEL = {
    "flash_attn": "flash-attn is not installed on the GPU image and its wheels (hundreds of MB, built per torch/CUDA) "
    "cannot travel within the 64 MiB carry limit",
    "vllm": "vLLM is not installed on the GPU image and its wheel (~336 MB) cannot travel within the 64 MiB carry limit",
}


@dataclass
class Context:
    """How this run executes: on CUDA with published shapes, or a CPU dry run with tiny ones."""

    dry_run: bool
    workdir: Path
    deepspeed_on_cpu: bool = False
    _tokenizer: object = field(default=None, repr=False)

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.dry_run else torch.bfloat16

    def tokenizer(self):
        """The embedded tokenizer (trained offline, ChatML template): random-token data needs only its ids."""
        if self._tokenizer is None:
            from chimed_trl.tiny import train_tokenizer

            self._tokenizer = train_tokenizer()
        return self._tokenizer

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    def trainer_flags(self) -> dict:
        """SFTConfig/RewardConfig fields that differ between the GPU run and the CPU dry run."""
        return dict(
            bf16=not self.dry_run,
            use_cpu=self.dry_run,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            dataloader_num_workers=0,
            seed=0,
        )


def result(check: str, ctx: Context, status: str, figures: dict | None = None, **extra) -> dict:
    return {
        "check": check,
        "mode": "dry-run" if ctx.dry_run else "cuda",
        "status": status,
        "figures": figures or {},
        **extra,
    }


def skipped(reason: str, **extra) -> dict:
    return {"status": "skipped", "reason": reason, **extra}


def overall(parts: dict[str, dict]) -> str:
    """A check passes when every part that ran passed; skipped parts are reported, never counted as passed."""
    statuses = {p["status"] for p in parts.values()}
    if "failed" in statuses:
        return "failed"
    return "passed" if "passed" in statuses else "skipped"


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(ctx: Context) -> dict:
    """Peak GPU memory since the last reset (None on the CPU dry run: there is nothing comparable to measure)."""
    if ctx.dry_run:
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
    }


class StepTimer:
    """A ``TrainerCallback`` timing each optimizer step (synchronised on CUDA) and keeping the logged losses."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []
                self.losses: list[float] = []
                self.tokens: list[int] = []  # TRL's cumulative num_tokens, one entry per logged step
                self._start = 0.0

            def on_step_begin(self, args, state, control, **kwargs):
                sync()
                self._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                sync()
                self.times.append(time.perf_counter() - self._start)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    self.losses.append(float(logs["loss"]))
                if logs and "num_tokens" in logs:
                    self.tokens.append(int(float(logs["num_tokens"])))

            def steady(self, warmup: int) -> float:
                """Median step time after ``warmup`` steps (all steps when there are no more)."""
                kept = self.times[warmup:] or self.times
                return statistics.median(kept)

            def tokens_per_s(self, warmup: int) -> float:
                """Tokens the timed steps trained (TRL's own count, logged every step) over their summed time."""
                warmup = warmup if len(self.times) > warmup else 0
                before = self.tokens[warmup - 1] if warmup else 0
                return (self.tokens[-1] - before) / sum(self.times[warmup:])

            def losses_finite(self) -> bool:
                return bool(self.losses) and all(math.isfinite(x) for x in self.losses)

        return _Timer()


def matmul_rate(dry_run: bool) -> float:
    """Measured dense matmul rate in FLOP/s: 8192^3 bf16 on CUDA (mean of 10 after 3 warm-ups), 256^3 fp32 on CPU."""
    n, dtype, device = (256, torch.float32, "cpu") if dry_run else (8192, torch.bfloat16, "cuda")
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    return 2 * n**3 * 10 / (time.perf_counter() - start)


def assumed_peak_bf16(device_name: str | None) -> float | None:
    if not device_name:
        return None
    return next((rate for key, rate in PEAK_BF16.items() if key in device_name), None)


def versions() -> dict:
    out = {}
    for name in PACKAGES + ("flash-attn", "vllm"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out


def device_facts() -> dict:
    facts = {"device": "cpu", "driver": None, "memory_gib": None}
    if not torch.cuda.is_available():
        return facts
    facts["device"] = torch.cuda.get_device_name(0)
    facts["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        facts["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        facts["driver"] = None
    return facts


def environment() -> dict:
    return {
        **device_facts(),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def random_documents(n_tokens: int, vocab_size: int, seed: int = 0, median: int = 298, sigma: float = 1.3):
    """Pre-tokenized documents with log-normal lengths (as ``benchmarks/packing.py``), ``n_tokens`` in all.

    Ids avoid the first 16 (special tokens of the embedded tokenizer), so EOS never ends a document early.
    """
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    docs, total = [], 0
    while total < n_tokens:
        length = int(max(1, min(4 * 4096, median * math.exp(sigma * torch.randn(1, generator=g).item()))))
        docs.append(torch.randint(16, vocab_size, (length,), generator=g).tolist())
        total += length
    return Dataset.from_dict({"input_ids": docs})


def json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=False)
