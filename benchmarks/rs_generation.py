"""Rejection-sampling generation speed on the embedded tiny model (CPU), one run.

1. Local: samples/s of :class:`~chimed_trl.generation.TransformersGenerator` (length-sorted batches,
   ``num_return_sequences`` in the GenerationConfig, KV cache; sharded when launched on several
   processes) vs a loop calling plain ``model.generate`` for one sample at a time. 64 prompts x 8
   samples, the same ``max_new_tokens`` and temperature. Target: >= 4x.
2. Server: samples/s through :class:`~chimed_trl.generation.OpenAIGenerator` against ``transformers serve``
   (tiny model, 127.0.0.1, fan-out: one request per sample) with ``max_concurrency`` 1 vs 8.

    python benchmarks/rs_generation.py [--prompts 64] [--samples 8] [--max_new_tokens 32] [--batch_size 16]
        [--server_prompts 16] [--server_samples 4] [--server_args=--continuous-batching] [--skip_local|--skip_server]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chimed_trl.generation import LaunchedServer, OpenAIGenerator, SamplingParams, TransformersGenerator
from chimed_trl.tiny import SAMPLES, build_tiny


def make_prompts(n: int) -> list[str]:
    lines = [line for line in (SAMPLES / "corpus.txt").read_text(encoding="utf-8").splitlines() if line]
    return [lines[(7 * i) % len(lines)][: 8 + (5 * i) % 40] + "？" for i in range(n)]  # 8-48 characters


def one_at_a_time(model, tokenizer, prompts, sampling: SamplingParams) -> int:
    """The baseline: plain transformers generate, one prompt and one sample per call."""
    count = 0
    for prompt in prompts:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        for _ in range(sampling.n):
            model.generate(
                **enc,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=True,
                temperature=sampling.temperature,
                top_k=0,
            )
            count += 1
    return count


def bench_local(model_dir: Path, args) -> dict:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = make_prompts(args.prompts)
    sampling = SamplingParams(n=args.samples, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    generator = TransformersGenerator(model, tokenizer, batch_size=args.batch_size, show_progress=False)
    generator.generate(prompts[:2], sampling)  # warm-up (first-call allocations) for both paths
    start = time.perf_counter()
    samples = generator.generate(prompts, sampling)
    batched_s = time.perf_counter() - start
    torch.manual_seed(0)
    start = time.perf_counter()
    looped = one_at_a_time(model, tokenizer, prompts, sampling)
    loop_s = time.perf_counter() - start
    total = sum(len(s) for s in samples)
    assert total == looped == args.prompts * args.samples
    return {
        "samples": total,
        "batched_samples_per_s": total / batched_s,
        "loop_samples_per_s": looped / loop_s,
        "speedup": (total / batched_s) / (looped / loop_s),
        "batched_s": batched_s,
        "loop_s": loop_s,
    }


def bench_server(model_dir: Path, args) -> dict:
    command = (
        f"{Path(sys.executable).parent}/transformers serve {{model}} --host 127.0.0.1 --port {{port}} --device cpu"
    )
    command += f" {args.server_args}" if args.server_args else ""
    prompts = make_prompts(args.server_prompts)
    sampling = SamplingParams(n=args.server_samples, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    out = {"samples": len(prompts) * sampling.n, "server_args": args.server_args}
    with LaunchedServer(command, model=str(model_dir), ready_timeout=300) as server:
        for concurrency in (1, 8):
            gen = OpenAIGenerator(
                server.base_url,
                server.model,
                max_concurrency=concurrency,
                sampling_via="generation_config",
                show_progress=False,
            )
            gen.generate(prompts[:1], sampling)  # warm-up: the server loads the model on the first request
            start = time.perf_counter()
            got = gen.generate(prompts, sampling)
            elapsed = time.perf_counter() - start
            assert sum(len(s) for s in got) == out["samples"]
            out[f"concurrency_{concurrency}_samples_per_s"] = out["samples"] / elapsed
    out["speedup"] = out["concurrency_8_samples_per_s"] / out["concurrency_1_samples_per_s"]
    return out


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--server_prompts", type=int, default=16)
    parser.add_argument("--server_samples", type=int, default=4)
    parser.add_argument("--server_args", default="", help="extra `transformers serve` flags")
    parser.add_argument("--skip_local", action="store_true")
    parser.add_argument("--skip_server", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(Path(tmp) / "tiny", seed=0)
        results = {"torch_threads": torch.get_num_threads()}
        if not args.skip_local:
            results["local"] = bench_local(model_dir, args)
        if not args.skip_server:
            results["server"] = bench_server(model_dir, args)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
