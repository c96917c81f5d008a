"""The inputs people have: .txt corpora, directories, .tsv, a UTF-8 BOM, .json objects, bad conversations."""

import json

import pytest

from chimed_trl.data.records import DataError
from chimed_trl.data.sources import SourceConfig, load_records


def _texts(source):
    return [r["text"] for r in load_records(source)[0]]


# Bug caught: .txt was "unsupported file type"; the paragraph mode joining or dropping lines.
def test_txt_one_document_per_line_or_per_paragraph(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("高血压的定义。\n诊断标准如下。\n\n糖尿病概述。\n\n\n", encoding="utf-8")
    assert _texts(SourceConfig(formatter="text", path=str(path))) == [
        "高血压的定义。",
        "诊断标准如下。",
        "糖尿病概述。",
    ]
    paragraphs = SourceConfig(formatter="text", path=str(path), txt_documents="paragraph")
    assert _texts(paragraphs) == ["高血压的定义。\n诊断标准如下。", "糖尿病概述。"]


# Bugs caught: a directory (CMMLU's test/) not readable; files read in filesystem order; a BOM kept in
# the first key when the encoding is declared as utf-8.
def test_directory_of_files_in_sorted_order_with_bom(tmp_path):
    data = tmp_path / "test"
    data.mkdir()
    (data / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "乙"}, ensure_ascii=False).encode() + b"\n")
    (data / "a.txt").write_text("甲\n", encoding="utf-8")
    (data / ".hidden.txt").write_text("no\n")
    assert _texts(SourceConfig(formatter="text", path=str(data), encoding="utf-8")) == ["甲", "乙"]
    # the subject of a CMMLU file comes from its own name, not the directory's
    rows = ",Question,A,B,C,D,Answer\n0,高血压的首选药物？,甲,乙,丙,丁,A\n"
    (data / "clinical_knowledge.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
    (data / "a.txt").unlink()
    (data / "b.jsonl").unlink()
    [record] = load_records(SourceConfig(formatter="cmmlu_csv", path=str(data), encoding="utf-8"))[0]
    assert record["subject"] == "clinical_knowledge" and record["answer"] == "A"


# Bug caught: .tsv parsed as comma-separated (one column) and quotes treated as CSV quoting.
def test_tsv_is_tab_separated(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text('text\tsource\n他说"头痛, 发热"\tclinic\n', encoding="utf-8")
    assert _texts(SourceConfig(formatter="text", path=str(path))) == ['他说"头痛, 发热"']


# Bug caught: a .json holding one (pretty-printed) object was sent to the line reader ("malformed JSON").
def test_json_object_or_array_or_lines(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"text": "单个对象"}, ensure_ascii=False, indent=2), encoding="utf-8")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"text": "一"}, {"text": "二"}], ensure_ascii=False, indent=1), encoding="utf-8")
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "行一"}\n{"text": "行二"}\n', encoding="utf-8")
    assert _texts(SourceConfig(formatter="text", path=str(one))) == ["单个对象"]
    assert _texts(SourceConfig(formatter="text", path=str(array))) == ["一", "二"]
    assert _texts(SourceConfig(formatter="text", path=str(lines))) == ["行一", "行二"]


# Bug caught: an SFT conversation ending with a user turn was accepted (nothing is learned from that turn).
def test_conversation_ending_with_user_turn_is_an_error(tmp_path):
    path = tmp_path / "sft.jsonl"
    good = {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}
    bad = {"messages": [*good["messages"], {"role": "user", "content": "还有呢？"}]}
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(bad, ensure_ascii=False) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:2: field 'messages\[2\].role': .*must end with an assistant turn"):
        load_records(SourceConfig(formatter="conversation", path=str(path)))
