import json
import subprocess
import sys

from chimed_trl.data.sources import SourceConfig, load_records

from ..conftest import REPO


def test_hub_style_source_streams(tmp_path):
    """A source with no `path` streams rows through `datasets.load_dataset(..., streaming=True)`."""
    folder = tmp_path / "cmd"
    folder.mkdir()
    rows = [{"instruction": f"问题{i}", "input": "", "output": f"回答{i}"} for i in range(5)] + [
        {"instruction": "空回答", "input": "", "output": ""}
    ]
    (folder / "train.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    records, stats = load_records(SourceConfig(formatter="cmd_sft", hub_id=str(folder), split="train"))
    assert len(records) == 5 and stats.skipped == {"empty message": 1}
    assert records[0]["messages"][0] == {"role": "user", "content": "问题0"}


def test_inspector_stats_and_show():
    sample = "chimed_trl/data/samples/pretrain.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "chimed_trl.data", "stats", "--card", "tiny_pretrain", "--path", sample],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["records"] == 40 and stats["skipped"] == {"empty text": 5}
    assert 0 < stats["length_tokens"]["p50"] <= stats["length_tokens"]["p100"]
    show = subprocess.run(
        [
            sys.executable,
            "-m",
            "chimed_trl.data",
            "show",
            "--card",
            "tiny_sft",
            "--path",
            "chimed_trl/data/samples/sft.jsonl",
            "-n",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert show.returncode == 0 and len(show.stdout.splitlines()) == 2
    assert "messages" in json.loads(show.stdout.splitlines()[0])
    bad = subprocess.run(
        [sys.executable, "-m", "chimed_trl.data", "show", "--formatter", "text", "--path", "missing.jsonl"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "missing.jsonl: no such file" in bad.stderr


def test_unreachable_hub_source_names_the_fix(monkeypatch):
    import pytest

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"could not open hub dataset 'shibing624/medical'.*set `path:`"):
        load_records(SourceConfig(card="cmd_sft"))


# Bugs caught: the inspector printed transformers' "sequence length is longer than the specified maximum"
# warning for every long real document, and did not say which tokenizer its token counts are in.
def test_inspector_is_quiet_on_long_documents_and_names_its_tokenizer(tmp_path, tiny_model_dir):
    long_doc = tmp_path / "long.txt"
    long_doc.write_text("高血压患者应定期监测血压。" * 1500 + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "chimed_trl.data", "stats", "--formatter", "text", "--path", str(long_doc)]
    out = subprocess.run(
        [*cmd, "--tokenizer", str(tiny_model_dir)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["tokenizer"] == str(tiny_model_dir) and stats["length_tokens"]["p100"] > 4096
    assert "longer than" not in out.stderr, out.stderr
