import json

import pytest

from chimed_trl.data.cards import all_cards, load_card, parse_card
from chimed_trl.data.formatters import get_formatter
from chimed_trl.data.mixtures import build_mixture, normalise
from chimed_trl.data.sources import SourceConfig

PAPER_CARDS = {
    "cmd_pretrain",
    "cmd_sft",
    "cmd_reward",
    "toyhom",
    "het_mc",
    "meddialog_cn",
    "safety_prompts",
    "chimed_qa",
    "ceval",
    "cmmlu",
    "medqa_mcmle",
    "ccks2019",
    "chimst",
    "cami",
    "mica",
}


def test_every_card_parses_and_names_a_real_formatter():
    cards = {c.name: c for c in all_cards()}
    assert PAPER_CARDS <= set(cards)
    for card in cards.values():
        assert card.path.stem == card.name
        assert get_formatter(card.formatter).format == card.format
        body = card.path.read_text(encoding="utf-8")
        for section in (
            "## What it is",
            "## Raw schema",
            "## How the paper used it",
            "## Licence and access",
            "## Known pitfalls",
        ):
            assert section in body, (card.name, section)
    assert cards["toyhom"].encoding == "gb18030"


def test_card_errors(tmp_path):
    bad = tmp_path / "x.md"
    bad.write_text("# no front matter\n")
    with pytest.raises(ValueError, match="front matter"):
        parse_card(bad)
    bad.write_text("---\nname: x\n---\n")
    with pytest.raises(ValueError, match="missing source, formatter, format, license"):
        parse_card(bad)
    with pytest.raises(ValueError, match="Unknown data card 'nope'"):
        load_card("nope")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_mixture_weights_dedup_split_and_stats(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"text": f"文档{i}"} for i in range(10)] + [{"text": ""}])
    b = _jsonl(
        tmp_path / "b.jsonl", [{"text": "文档 1"}, {"text": "ＡＢＣ"}] + [{"text": f"其他{i}"} for i in range(4)]
    )
    sources = [
        SourceConfig(formatter="text", path=a, fraction=0.5, name="a"),
        SourceConfig(formatter="text", path=b, count=12, name="b"),
    ]
    data, rows = build_mixture(sources, seed=3, test_size=0.1, output_dir=tmp_path / "out")
    by_name = {r["name"]: r for r in rows}
    assert by_name["a"] == {**by_name["a"], "read": 11, "kept": 10, "skipped_total": 1, "duplicates": 0}
    # "文档 1" duplicates "文档1" after normalisation; 15 unique records, round(0.1 * 15) = 2 held out first,
    # then a keeps half of its remaining records and b is upsampled from its remaining ones to 12
    assert by_name["b"]["duplicates"] == 1 and by_name["b"]["selected"] == 12
    assert by_name["a"]["held_out"] + by_name["b"]["held_out"] == 2 == len(data["test"])
    assert by_name["a"]["selected"] == round(0.5 * (10 - by_name["a"]["held_out"]))
    assert len(data["train"]) == by_name["a"]["selected"] + 12
    assert not set(data["test"]["text"]) & set(data["train"]["text"])
    saved = json.loads((tmp_path / "out" / "data_stats.json").read_text())
    assert saved["splits"] == {"train": len(data["train"]), "test": 2}
    again, _ = build_mixture(sources, seed=3, test_size=0.1)
    assert again["train"]["text"] == data["train"]["text"]  # same seed, same mixture
    assert normalise(" Ａ b\nC ") == "abc"


def test_mixture_rejects_mixed_formats(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    with pytest.raises(ValueError, match="mixes record formats"):
        build_mixture([SourceConfig(formatter="text", path=a), SourceConfig(formatter="conversation", path=a)])


def test_source_needs_card_or_formatter():
    with pytest.raises(ValueError, match="give a `card` or a `formatter`"):
        SourceConfig(path="x.jsonl")
