"""A fixed held-out set of *original* preference pairs, shared by reward runs that train on different data.

The ablation question (binary pairs vs augmented ranked lists) needs both reward models scored on the same
pairs. A held-out record, binary or ranked, is reduced to its original pair: the best-ranked response
(the human-accepted answer) against the worst-ranked one (the human-rejected answer), which is exactly the
CMD-Reward pair an augmented list was built from. Each pair gets an id from its normalised text, so two runs
can prove they were scored on the same pairs by comparing ids.

Training records whose prompt is a held-out prompt are left out of training (an augmented list of a held-out
pair would otherwise teach the model the very pair it is scored on).
"""

from __future__ import annotations

import json
from pathlib import Path

from chimed_trl.data.mixtures import build_mixture, normalise, record_key
from chimed_trl.data.sources import SourceConfig, parse_sources, resolve
from chimed_trl.errors import ConfigError
from chimed_trl.runfiles import write_atomic

PAIRS_FILE = "heldout_pairs.jsonl"


def parse_eval_sources(entries) -> list[SourceConfig]:
    """``eval_datasets`` entries -> SourceConfigs; mistakes name ``eval_datasets[i]``."""
    return parse_sources(entries, "eval_datasets")


def check_eval_sources(sources: list[SourceConfig]) -> None:
    for i, source in enumerate(sources):
        fmt = resolve(source)[1]
        if fmt != "ranked":
            raise ConfigError(
                f"eval_datasets[{i}] ({source.label}) gives {fmt} records; held-out pairs must be ranked"
            )


def original_pair(record: dict) -> dict:
    """The record's best-ranked response against its worst-ranked one, as a K=2 ranked record with an ``id``."""
    responses = list(record["responses"])
    ranks = list(record.get("ranks") or range(len(responses)))
    best = ranks.index(min(ranks))  # first of the best: the accepted answer comes first in a list
    worst = len(ranks) - 1 - ranks[::-1].index(max(ranks))  # last of the worst: the rejected answer
    pair = {"prompt": record["prompt"], "responses": [responses[best], responses[worst]], "ranks": [0, 1]}
    return {"id": record_key(pair).hex(), **pair}


def prompt_key(record: dict) -> str:
    """The normalised prompt text: a training record with the same key as a held-out pair is left out."""
    return normalise("\n".join(m["content"] for m in record.get("prompt") or []))


def load_heldout_pairs(sources: list[SourceConfig], seed: int) -> list[dict]:
    """The held-out pairs, unique by id, in a seeded order; ``count:``/``fraction:`` on a source pick a subset.

    ``seed`` is the held-out set's own seed (not the training seed), so runs trained with different seeds still
    share one held-out set."""
    check_eval_sources(sources)
    data, _ = build_mixture(sources, seed, test_size=0, dedup=True)
    pairs, seen = [], set()
    for record in data["train"]:
        pair = original_pair(record)
        if pair["id"] not in seen:  # `count:` above a source's size upsamples: a pair counts once
            seen.add(pair["id"])
            pairs.append(pair)
    return pairs


def without_heldout_prompts(dataset, pairs: list[dict]):
    """``(dataset without the records sharing a held-out prompt, number left out)``."""
    held = {prompt_key(p) for p in pairs}
    kept = dataset.filter(lambda record: prompt_key(record) not in held)
    return kept, len(dataset) - len(kept)


def write_pairs(output_dir: str | Path, pairs: list[dict]) -> Path:
    """``heldout_pairs.jsonl``: the pairs the run was scored on (ids and text), for comparison across runs."""
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    return write_atomic(Path(output_dir) / PAIRS_FILE, lines)


def read_pair_ids(run_dir: str | Path) -> list[str]:
    path = Path(run_dir) / PAIRS_FILE
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
