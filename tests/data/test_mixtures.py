"""Mixture semantics: split before weighting (no train/test leakage), unambiguous fraction/count/test_size."""

import json

import pytest

from chimed_trl.data.mixtures import build_mixture
from chimed_trl.data.sources import SourceConfig, source_from_config
from chimed_trl.errors import UserError


def _texts(path, n, prefix="文档"):
    path.write_text("".join(json.dumps({"text": f"{prefix}{i}"}, ensure_ascii=False) + "\n" for i in range(n)))
    return str(path)


# Bug caught (seen on main): upsampling before the split put every held-out record into train too
# (weight: 80 on 40 records, test_size 8 -> all 8 test records also in train).
def test_upsampled_source_never_leaks_held_out_records_into_train(tmp_path):
    path = _texts(tmp_path / "a.jsonl", 40)
    data, rows = build_mixture([SourceConfig(formatter="text", path=path, count=3200)], seed=0, test_size=8)
    test, train = data["test"]["text"], data["train"]["text"]
    assert len(test) == 8 and len(set(test)) == 8
    assert not set(test) & set(train)  # hand check: no held-out text anywhere in train
    assert len(train) == 3200 and set(train) == {f"文档{i}" for i in range(40)} - set(test)
    # 3200 from 32 unique train records: exactly 100 copies each
    assert {train.count(t) for t in set(train)} == {100}
    assert rows[0]["held_out"] == 8 and rows[0]["selected"] == 3200


# Bug caught: test_size 1.0 meant "one record" while 0.99 meant "99 %".
def test_test_size_means_one_thing(tmp_path):
    path = _texts(tmp_path / "a.jsonl", 100)
    source = [SourceConfig(formatter="text", path=path)]
    assert len(build_mixture(source, test_size=1)[0]["test"]) == 1
    assert len(build_mixture(source, test_size=0.99)[0]["test"]) == 99
    assert len(build_mixture(source, test_size=0.5)[0]["test"]) == 50
    with pytest.raises(UserError, match=r"test_size 1.0 is ambiguous: write 1 to hold out one record"):
        build_mixture(source, test_size=1.0)


# Bug caught: weight <= 1 was a fraction and > 1 a count, so weight 1.5 kept one record.
def test_weight_is_refused_and_fraction_count_are_exclusive(tmp_path):
    with pytest.raises(UserError, match=r"datasets\[0\]: `weight` is ambiguous.*`fraction: 0.3`.*`count: 200000`"):
        source_from_config({"formatter": "text", "path": "x.jsonl", "weight": 1.5}, "datasets[0]")
    with pytest.raises(UserError, match="give `fraction` or `count`, not both"):
        SourceConfig(formatter="text", path="x", fraction=0.5, count=3)
    with pytest.raises(UserError, match=r"fraction must be in \(0, 1\], got 1.5"):
        SourceConfig(formatter="text", path="x", fraction=1.5)
    path = _texts(tmp_path / "a.jsonl", 10)
    data, _ = build_mixture([SourceConfig(formatter="text", path=path, fraction=0.3)], seed=1)
    assert len(data["train"]) == 3


# Bug caught: a source whose every record was skipped (or duplicated) vanished from the mixture silently.
def test_a_source_with_no_records_is_an_error(tmp_path):
    good = _texts(tmp_path / "good.jsonl", 5)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n{"text": "  "}\n')
    with pytest.raises(UserError, match=r"source empty \(.*empty.jsonl\) yielded no records: read 2, skipped"):
        build_mixture([SourceConfig(formatter="text", path=good), SourceConfig(formatter="text", path=str(empty))])
