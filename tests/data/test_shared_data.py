"""The real public samples in ../shared/data convert with zero errors (skipped when the folder is absent)."""

import pytest

from chimed_trl.data.sources import SourceConfig, load_records

CASES = [
    ("toyhom", "toyhom/sample_IM_gb18030.csv", None, 7644),
    ("medicalgpt_sft", "medicalgpt/sft_1k.jsonl", None, 1000),
    ("medicalgpt_dpo", "medicalgpt/dpo_zh_500.jsonl", None, 500),
    ("cmd_reward", "medicalgpt/reward_test.jsonl", None, 100),
    ("het_mc", "het_mc/train.dialog", None, 360),
    ("het_mc", "het_mc/test.dialog", "het_mc_eval", 18),
    ("cami", "bias_scales/cami_zh.jsonl", None, 40),
    ("mica", "bias_scales/mica_zh.jsonl", None, 16),
]


@pytest.mark.parametrize("card, rel, formatter, expected", CASES, ids=lambda x: str(x))
def test_real_file_converts(shared_data, card, rel, formatter, expected):
    records, stats = load_records(SourceConfig(card=card, path=str(shared_data / rel), formatter=formatter))
    assert stats.read == expected and stats.kept + sum(stats.skipped.values()) == stats.read
    assert len(records) == stats.kept > 0


def test_cmmlu_all_files(shared_data):
    from chimed_trl.evaluation.choice import PRESETS

    total = 0
    for subject in PRESETS["cmmlu_paper"]:
        records, stats = load_records(SourceConfig(card="cmmlu", path=str(shared_data / f"cmmlu/test/{subject}.csv")))
        assert not stats.skipped and all(r["subject"] == subject for r in records)
        total += len(records)
    assert total == 1166  # the paper's denominator
    for path in sorted((shared_data / "cmmlu").glob("*/*.csv")):
        load_records(SourceConfig(card="cmmlu", path=str(path)))


def test_gb18030_read_as_utf8_names_the_option(shared_data):
    from chimed_trl.data.records import DataError

    with pytest.raises(DataError, match="encoding: gb18030"):
        load_records(SourceConfig(formatter="toyhom_csv", path=str(shared_data / "toyhom/sample_IM_gb18030.csv")))
