"""Rejection sampling's generation phase at scale: batched vs one prompt per call, and a server kept busy.

1. Local (tiny model, CPU): the RS generation phase as the trainer runs it (one ``generate`` per
   ``generation_batch_size`` prompts, per-prompt seeds) vs the old loop (one call per prompt, the same seeds)
   vs plain ``model.generate`` over the same prompts in one batch (``num_return_sequences``, transformers'
   own sampler: the CPU limit). The batched and looped samples must be string-identical (checked). Batched and
   plain are timed ``--repeats`` times, interleaved, and the best of each is kept (a shared machine), in wall
   and in process CPU seconds. Also: ``SeededSampler`` alone per decoding step, k candidates vs whole vocabulary.
2. Server: a stdlib OpenAI-compatible server on 127.0.0.1 answering after a fixed latency
   (``tests/generation/openai_stub.py``); the RS streaming path (every request in flight up to
   ``generation_max_concurrency``) vs the old one-prompt-per-call loop, with ``n`` honoured and not; wall time
   against the all-in-flight ideal (latency x ceil(requests / concurrency)) and the most requests in flight.

    PYTHONPATH=. python benchmarks/rs_scale.py [--prompts 32] [--samples 4] [--max_new_tokens 32]
        [--batch_size 32] [--latency 0.1] [--concurrency 64] [--repeats 3] [--skip_local|--skip_server]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chimed_trl.generation import OpenAIGenerator, SamplingParams, TransformersGenerator  # noqa: E402
from chimed_trl.tiny import SAMPLES, build_tiny  # noqa: E402
from chimed_trl.trainers.rejection_sampling import prompt_seed  # noqa: E402
from tests.generation.openai_stub import StubServer  # noqa: E402


def make_prompts(n: int) -> list[list[dict]]:
    lines = [line for line in (SAMPLES / "corpus.txt").read_text(encoding="utf-8").splitlines() if line]
    texts = [lines[(7 * i) % len(lines)][: 8 + (5 * i) % 40] + "？" for i in range(n)]  # 8-48 characters
    return [[{"role": "user", "content": t}] for t in texts]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def cpu_timed(fn):
    """(result, wall seconds, CPU seconds of this process): CPU time is what the work costs, whatever else runs."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_sampler(vocab: int, rows: int, top_k: int, steps: int = 200) -> dict:
    """SeededSampler per decoding step on top-k-filtered logits: noise for the k candidates vs for the whole
    vocabulary (the same logits with the filtered tokens at -1e4 instead of -inf take the whole-vocabulary path)."""
    from chimed_trl.generation import SeededSampler

    logits = torch.randn(rows, vocab)
    kept = logits.topk(top_k, dim=-1).indices
    filtered = torch.full_like(logits, float("-inf")).scatter(1, kept, logits.gather(1, kept))
    wide = torch.where(filtered.isinf(), -1e4, filtered)
    ids = torch.zeros(rows, 1, dtype=torch.long)
    out = {"rows": rows, "vocab": vocab, "top_k": top_k}
    for name, scores in (("candidates", filtered), ("whole_vocabulary", wide)):
        sampler = SeededSampler(range(rows))
        _, wall, cpu = cpu_timed(lambda s=scores, f=sampler: [f(ids, s) for _ in range(steps)])
        out[f"{name}_ms_per_step_cpu"] = 1000 * cpu / steps
        out[f"{name}_ms_per_step_wall"] = 1000 * wall / steps
    return out


def bench_local(model_dir: Path, args) -> dict:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = make_prompts(args.prompts)
    seeds = [prompt_seed(0, 0, str(i)) for i in range(len(prompts))]
    sampling = SamplingParams(args.samples, 1.0, 1.0, args.max_new_tokens, None, top_k=50)
    batched_gen = TransformersGenerator(model, tokenizer, batch_size=args.batch_size, show_progress=False)
    loop_gen = TransformersGenerator(model, tokenizer, batch_size=1, show_progress=False)
    batched_gen.generate(prompts[:2], sampling, seeds[:2])  # warm-up (first-call allocations)

    def loop():
        return [
            loop_gen.generate([p], SamplingParams(args.samples, 1.0, 1.0, args.max_new_tokens, s, top_k=50))[0]
            for p, s in zip(prompts, seeds)
        ]

    def plain():  # one left-padded batch, transformers' own sampling: no per-row seeds, the CPU limit
        tokenizer.padding_side = "left"
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            return model.generate(
                **enc, max_new_tokens=args.max_new_tokens, do_sample=True, top_k=50, num_return_sequences=args.samples
            )

    batched_times, plain_times, batched_cpu, plain_cpu = [], [], [], []
    with torch.no_grad():
        looped, loop_s = timed(loop)
        for _ in range(args.repeats):  # interleaved, best of each: the 2 shared cores make single runs noisy
            batched, seconds, cpu = cpu_timed(lambda: batched_gen.generate(prompts, sampling, seeds))
            batched_times.append(seconds)
            batched_cpu.append(cpu)
            _, seconds, cpu = cpu_timed(plain)
            plain_times.append(seconds)
            plain_cpu.append(cpu)
    assert batched == looped, "batched samples differ from the per-prompt loop"
    batched_s, plain_s = min(batched_times), min(plain_times)
    total = len(prompts) * args.samples
    return {
        "batched_seconds": batched_times,
        "plain_generate_seconds": plain_times,
        "batched_cpu_seconds": batched_cpu,
        "plain_generate_cpu_seconds": plain_cpu,
        "batched_vs_plain_generate_cpu": min(plain_cpu) / min(batched_cpu),
        "samples": total,
        "batched_samples_per_s": total / batched_s,
        "loop_samples_per_s": total / loop_s,
        "plain_generate_samples_per_s": total / plain_s,
        "batched_vs_loop": loop_s / batched_s,
        "batched_vs_plain_generate": plain_s / batched_s,
        "identical_to_loop": True,
    }


def bench_server(args) -> dict:
    prompts = make_prompts(args.prompts)
    seeds = [prompt_seed(0, 0, str(i)) for i in range(len(prompts))]
    out = {"prompts": len(prompts), "samples_per_prompt": args.samples, "latency_s": args.latency}
    for honours_n in (True, False):
        out["honours_n" if honours_n else "fan_out"] = bench_server_mode(prompts, seeds, honours_n, args)
    return out


def bench_server_mode(prompts, seeds, honours_n: bool, args) -> dict:
    requests = len(prompts) * (1 if honours_n else args.samples)
    ideal = args.latency * math.ceil(requests / args.concurrency)
    row = {"requests": requests, "all_in_flight_ideal_s": ideal}
    sampling = SamplingParams(args.samples, 1.0, max_new_tokens=8)
    with StubServer(latency=args.latency, honours_n=honours_n) as server:
        gen = OpenAIGenerator(server.base_url, "m", max_concurrency=args.concurrency, honours_n=honours_n,
                              show_progress=False)  # fmt: skip
        gen.generate(prompts[:1], sampling, seeds[:1])  # warm-up: the client (openai import, connection pool)
        server.peak = 0
        _, streamed_s = timed(lambda: gen.generate(prompts, sampling, seeds))
        row.update(streamed_s=streamed_s, streamed_vs_ideal=streamed_s / ideal, max_in_flight=server.peak)
        server.peak = 0
        _, loop_s = timed(
            lambda: [gen.generate([p], SamplingParams(args.samples, 1.0, max_new_tokens=8, seed=s))
                     for p, s in zip(prompts, seeds)]
        )  # fmt: skip
        row.update(per_prompt_loop_s=loop_s, loop_max_in_flight=server.peak, speedup=loop_s / streamed_s)
    return row


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="local: timings of batched and plain (best kept)")
    parser.add_argument("--skip_local", action="store_true")
    parser.add_argument("--skip_server", action="store_true")
    args = parser.parse_args()
    results = {"torch_threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0]}
    if not args.skip_local:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = build_tiny(Path(tmp) / "tiny", seed=0)
            vocab = AutoModelForCausalLM.from_pretrained(model_dir).config.vocab_size
            results["sampler"] = bench_sampler(vocab, args.batch_size * args.samples, 50)
            results["local"] = bench_local(model_dir, args)
    if not args.skip_server:
        results["server"] = bench_server(args)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
