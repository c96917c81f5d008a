"""Regenerate the bundled sample data: ``python -m chimed_trl.data.samples.build_samples``.

The samples are written for this project (no third-party text): a small table of conditions by
department, expanded through sentence patterns into a pre-training corpus, multi-turn SFT
conversations and ranked preference lists. Deterministic: the same files every run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from chimed_trl.data.samples.facts import (  # noqa: F401  (CONDITIONS is imported from here too)
    CONDITIONS,
    PRETRAIN_PATTERNS,
    QUESTION_PATTERNS,
    SYSTEM_PROMPTS,
)

HERE = Path(__file__).parent


def _fill(pattern: str, row: tuple) -> str:
    d, c, s, e, t, a = row
    return pattern.format(d=d, c=c, s=s, e=e, t=t, a=a)


def build_corpus() -> list[str]:
    """One sentence per line: the tokenizer's training text."""
    return [_fill(p, row) for row in CONDITIONS for p in PRETRAIN_PATTERNS]


def build_pretrain(rng: random.Random) -> list[dict]:
    """Documents of varied length (a few sentences to a few dozen), the shape packing must handle."""
    sentences = build_corpus()
    docs = []
    for i, row in enumerate(CONDITIONS):
        own = [_fill(p, row) for p in PRETRAIN_PATTERNS]
        n_extra = rng.choice([0, 0, 2, 5, 12, 30])
        extra = rng.sample(sentences, n_extra)
        docs.append({"text": "".join(own[: rng.randint(2, len(own))] + extra)})
        if i % 8 == 0:
            docs.append({"text": ""})  # empty documents are skipped and counted
    return docs


def build_sft(rng: random.Random) -> list[dict]:
    """Multi-turn conversations: question, answer, follow-up, answer (some with a system prompt)."""
    records = []
    for i, row in enumerate(CONDITIONS):
        d, c, s, e, t, a = row
        messages = []
        if i % 3 == 0:
            messages.append({"role": "system", "content": SYSTEM_PROMPTS[i % 2]})
        messages += [
            {"role": "user", "content": _fill(rng.choice(QUESTION_PATTERNS), row)},
            {"role": "assistant", "content": f"这些表现可能与{c}有关，建议到{d}就诊，医生会安排{e}。"},
            {"role": "user", "content": f"如果确诊{c}，怎么治疗？"},
            {"role": "assistant", "content": f"{c}一般采用{t}。平时要{a}。"},
        ]
        if i % 4 == 0:
            messages += [
                {"role": "user", "content": "还有什么需要注意的吗？"},
                {"role": "assistant", "content": f"请按时复诊，如果{s}明显加重，要尽快就医。"},
            ]
        records.append({"messages": messages})
    return records


def build_ranked(rng: random.Random) -> list[dict]:
    """Ranked answers, best first: accepted > detailed > vague > wrong department."""
    records = []
    for i, row in enumerate(CONDITIONS):
        d, c, s, e, t, a = row
        wrong = CONDITIONS[(i + 7) % len(CONDITIONS)]
        records.append(
            {
                "prompt": [{"role": "user", "content": _fill(rng.choice(QUESTION_PATTERNS), row)}],
                "responses": [
                    f"可能是{c}，建议到{d}做{e}，确诊后{t}，同时{a}。",
                    f"可能是{c}，建议去{d}检查。",
                    "建议多喝热水，观察几天。",
                    f"这是{wrong[1]}，去{wrong[0]}就行。",
                ],
                "sources": ["accepted", "detailed", "vague", "rejected"],
            }
        )
    return records


def build_reward_pairs(ranked: list[dict]) -> list[dict]:
    """CMD-Reward's raw schema (question, response_chosen, response_rejected): best and worst of each list,
    the pairs the augmentation recipe turns back into 4-way lists."""
    return [
        {
            "question": r["prompt"][0]["content"],
            "response_chosen": r["responses"][0],
            "response_rejected": r["responses"][-1],
        }
        for r in ranked
    ]


def build_choice(rng: random.Random, n: int) -> list[dict]:
    """Four-option triage questions: which department first (canonical choice records)."""
    out = []
    for i in range(n):
        row = CONDITIONS[i % len(CONDITIONS)]
        others = rng.sample(sorted({c[0] for c in CONDITIONS} - {row[0]}), 3)
        options = [row[0], *others]
        rng.shuffle(options)
        out.append(
            {
                "id": f"triage-{i}",
                "subject": "triage",
                "question": f"{row[1]}患者应首先到哪个科室就诊？",
                "options": dict(zip("ABCD", options)),
                "answer": "ABCD"[options.index(row[0])],
            }
        )
    return out


def build_ner() -> list[dict]:
    """Short clinical notes with disease, examination and treatment spans (end exclusive)."""
    records = []
    for i, (_, c, s, e, t, _) in enumerate(CONDITIONS):
        parts = [("患者因", None), (s, "症状"), ("就诊，行", None), (e, "检查"), ("，诊断为", None), (c, "疾病和诊断")]
        parts += [("，予", None), (t, "治疗"), ("。", None)]
        text, entities = "", []
        for piece, kind in parts:
            if kind:
                entities.append({"start": len(text), "end": len(text) + len(piece), "type": kind})
            text += piece
        records.append({"id": f"note-{i}", "text": text, "entities": entities})
    return records


def build_dialogue_eval(sft: list[dict]) -> list[dict]:
    """Predict the last assistant turn of each sample conversation."""
    out = []
    for i, record in enumerate(sft):
        messages = record["messages"]
        last = max(j for j, m in enumerate(messages) if m["role"] == "assistant")
        out.append({"id": f"dialogue-{i}", "messages": messages[:last], "reference": messages[last]["content"]})
    return out


def build_scale_items() -> list[dict]:
    """Placeholder statements with the CAMI/MICA item numbering, NOT the scales' wording (for plumbing only)."""
    items = [
        {"scale": "CAMI", "item": i, "text": f"（示例陈述，非量表原文）关于精神疾病患者的第{i}条看法。"}
        for i in range(1, 41)
    ]
    items += [
        {"scale": "MICA", "item": i, "text": f"（示例陈述，非量表原文）关于心理疾病患者的第{i}条看法。"}
        for i in range(1, 17)
    ]
    return items


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(0)
    (HERE / "corpus.txt").write_text("\n".join(build_corpus()) + "\n", encoding="utf-8")
    _write_jsonl(HERE / "pretrain.jsonl", build_pretrain(rng))
    _write_jsonl(HERE / "sft.jsonl", build_sft(rng))
    _write_jsonl(HERE / "ranked.jsonl", build_ranked(rng))
    eval_rng = random.Random(1)  # its own stream: the files above stay byte-identical
    _write_jsonl(HERE / "choice_test.jsonl", build_choice(eval_rng, 40))
    _write_jsonl(
        HERE / "choice_dev.jsonl", [{**q, "id": q["id"].replace("triage", "dev")} for q in build_choice(eval_rng, 5)]
    )
    _write_jsonl(HERE / "ner.jsonl", build_ner())
    _write_jsonl(HERE / "dialogue_eval.jsonl", build_dialogue_eval(build_sft(random.Random(0))))
    _write_jsonl(HERE / "scale_items.jsonl", build_scale_items())
    _write_jsonl(HERE / "reward_pairs.jsonl", build_reward_pairs(build_ranked(random.Random(0))))


if __name__ == "__main__":
    main()
