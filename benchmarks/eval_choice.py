"""Multiple-choice scoring speed: batched letter scoring vs one question at a time, same predictions.

On the embedded tiny model (CPU), 400 four-option questions generated from the bundled sample
table. Target: batched >= 4x the questions/s of one at a time, with identical predictions.

    python benchmarks/eval_choice.py [--questions 400] [--batch_size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chimed_trl.data.samples.build_samples import CONDITIONS
from chimed_trl.evaluation.choice import build_prompt, predict_letters
from chimed_trl.tiny import build_tiny


def make_questions(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        row = rng.choice(CONDITIONS)
        others = rng.sample([c for c in CONDITIONS if c[0] != row[0]], 3)
        options = [row[0]] + [o[0] for o in others]
        rng.shuffle(options)
        out.append(
            {
                "id": str(i),
                "subject": "导诊",
                "question": f"{row[1]}应首先到哪个科室就诊？",
                "options": dict(zip("ABCD", options)),
                "answer": "ABCD"[options.index(row[0])],
            }
        )
    return out


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny(tmp)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
    questions = make_questions(args.questions)
    prompts = [build_prompt(q) for q in questions]
    options = [list(q["options"]) for q in questions]
    predict_letters(model, tokenizer, prompts[:8], options[:8], batch_size=8)  # warm-up

    t_single, t_batched = [], []
    for _ in range(args.repeats):  # alternate the two, keep the median of each
        start = time.perf_counter()
        single = [predict_letters(model, tokenizer, [p], [o], batch_size=1)[0][0] for p, o in zip(prompts, options)]
        t_single.append(time.perf_counter() - start)
        start = time.perf_counter()
        batched = [x for x, _ in predict_letters(model, tokenizer, prompts, options, batch_size=args.batch_size)]
        t_batched.append(time.perf_counter() - start)
    t_single, t_batched = statistics.median(t_single), statistics.median(t_batched)
    result = {
        "questions": len(questions),
        "batch_size": args.batch_size,
        "single_questions_per_s": round(len(questions) / t_single, 1),
        "batched_questions_per_s": round(len(questions) / t_batched, 1),
        "speedup": round(t_single / t_batched, 2),
        "same_predictions": single == batched,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
