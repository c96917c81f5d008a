"""Every formatter on a fixture written in its raw schema, and bad input reported with file:line:field."""

import json

import pytest

from chimed_trl.data.formatters import FORMATTERS, bio_to_spans
from chimed_trl.data.records import DataError
from chimed_trl.data.sources import SourceConfig, load_records


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def convert(formatter, path, **kw):
    return load_records(SourceConfig(formatter=formatter, path=str(path), **kw))


def test_cmd_pretrain_sft_reward(tmp_path):
    recs, stats = convert(
        "cmd_pretrain", write_jsonl(tmp_path / "p.jsonl", [{"text": "胃炎是常见病。"}, {"text": ""}])
    )
    assert recs == [{"text": "胃炎是常见病。"}] and stats.skipped == {"empty text": 1}
    recs, _ = convert(
        "cmd_sft",
        write_jsonl(tmp_path / "s.jsonl", [{"instruction": "头痛怎么办", "input": "三天了", "output": "休息"}]),
    )
    assert recs[0]["messages"] == [
        {"role": "user", "content": "头痛怎么办\n三天了"},
        {"role": "assistant", "content": "休息"},
    ]
    recs, _ = convert(
        "cmd_reward",
        write_jsonl(tmp_path / "r.jsonl", [{"question": "q", "response_chosen": "好", "response_rejected": "差"}]),
    )
    assert recs[0]["responses"] == ["好", "差"] and recs[0]["ranks"] == [0, 1]


def test_toyhom_gb18030(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("department,title,ask,answer\n内科,头晕怎么办,无,测血压\n".encode("gb18030"))
    recs, _ = convert("toyhom_csv", path, encoding="gb18030")
    assert recs[0]["messages"][0]["content"] == "头晕怎么办" and recs[0]["messages"][1]["content"] == "测血压"
    with pytest.raises(DataError, match=r"t\.csv:2: cannot decode as utf-8.*encoding: gb18030"):
        convert("toyhom_csv", path)


def test_sharegpt_and_preference(tmp_path):
    conv = [{"from": "system", "value": "s"}, {"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}]
    recs, _ = convert("sharegpt", write_jsonl(tmp_path / "a.jsonl", [{"conversations": conv}]))
    assert [m["role"] for m in recs[0]["messages"]] == ["system", "user", "assistant"]
    recs, _ = convert(
        "sharegpt_preference",
        write_jsonl(tmp_path / "b.jsonl", [{"conversations": conv[1:2], "chosen": "好", "rejected": "差"}]),
    )
    assert recs[0]["prompt"] == [{"role": "user", "content": "u"}] and recs[0]["responses"] == ["好", "差"]
    with pytest.raises(DataError, match=r"c\.jsonl:1: field 'conversations\[0\]\.from': unknown speaker 'bot'"):
        convert("sharegpt", write_jsonl(tmp_path / "c.jsonl", [{"conversations": [{"from": "bot", "value": "x"}]}]))


def test_chimed_qa(tmp_path):
    rows = [
        {"question": "q1", "answer_1": "a1", "adopted_1": False, "answer_2": "a2", "adopted_2": True},
        {"question": "q2", "answer_1": "b1", "adopted_1": 0, "answer_2": "b2", "adopted_2": 0},
    ]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    recs, _ = convert("chimed_qa", path)
    assert recs[0]["messages"][1]["content"] == "a2" and recs[1]["messages"][1]["content"] == "b1"
    recs, stats = convert("chimed_qa_ranked", path)
    assert recs == [
        {
            "prompt": [{"role": "user", "content": "q1"}],
            "responses": ["a2", "a1"],
            "ranks": [0, 1],
            "sources": ["adopted", "not_adopted"],
        }
    ]
    assert stats.skipped == {"no adopted/non-adopted pair": 1}


HET_MC = "id\t1\tapartment\t内科\tdisease\t胃炎\nD\t您好\t0\nP\t胃胀\t1\nP\t两周了\t0\nD\t反酸吗？\t2\nP\t有\t0\nD\t建议胃镜\t2\nSUM1\t胃胀\nSUM2.0\t胃镜\n\nid\t2\tapartment\t外科\tdisease\t骨折\nP\t手疼\t1\n"


def test_het_mc_conversation_and_eval(tmp_path):
    path = tmp_path / "x.dialog"
    path.write_text(HET_MC, encoding="utf-8")
    recs, stats = convert("het_mc", path)
    assert recs[0]["messages"] == [
        {"role": "user", "content": "胃胀\n两周了"},
        {"role": "assistant", "content": "反酸吗？"},
        {"role": "user", "content": "有"},
        {"role": "assistant", "content": "建议胃镜"},
    ]
    assert stats.skipped == {"no doctor turn": 1}
    recs, _ = convert("het_mc_eval", path)
    assert recs[0]["reference"] == "建议胃镜" and recs[0]["messages"][-1] == {"role": "user", "content": "有"}
    path.write_text("P\t没有表头\t0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.dialog:1: utterance before any `id`"):
        convert("het_mc", path)


def test_meddialog_processed_and_raw(tmp_path):
    processed = tmp_path / "p.json"
    processed.write_text(
        json.dumps([["病人：咳嗽一周", "医生：有没有发热？", "病人：没有", "医生：多喝水"]], ensure_ascii=False)
    )
    recs, _ = convert("meddialog_zh", processed)
    assert [m["content"] for m in recs[0]["messages"]] == ["咳嗽一周", "有没有发热？", "没有", "多喝水"]
    raw = write_jsonl(
        tmp_path / "r.jsonl",
        [{"dialogue_turns": [{"speaker": "病人", "utterance": "头痛"}, {"speaker": "医生", "utterance": "量血压"}]}],
    )
    recs, _ = convert("meddialog_zh", raw)
    assert recs[0]["messages"][1] == {"role": "assistant", "content": "量血压"}
    processed.write_text(json.dumps([["咳嗽一周"]], ensure_ascii=False))
    with pytest.raises(DataError, match=r"p\.json\[0\]: field 'utterances\[0\]'"):
        convert("meddialog_zh", processed)


def test_safety_prompts(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps({"Insult": [{"prompt": "p", "response": "r", "type": "Insult"}], "Crimes": [{"prompt": "p2"}]})
    )
    with pytest.raises(DataError, match=r"s\.json\[Crimes\]\[0\]: field 'response': missing"):
        convert("safety_prompts", path)


def test_choice_formatters(tmp_path):
    cmmlu = tmp_path / "anatomy.csv"
    cmmlu.write_text(",Question,A,B,C,D,Answer\n0,心脏有几个腔,一,二,三,四,D\n", encoding="utf-8")
    recs, _ = convert("cmmlu_csv", cmmlu)
    assert recs[0] == {
        "id": "anatomy-0",
        "subject": "anatomy",
        "question": "心脏有几个腔",
        "options": {"A": "一", "B": "二", "C": "三", "D": "四"},
        "answer": "D",
    }
    ceval = tmp_path / "clinical_medicine_val.csv"
    ceval.write_text("id,question,A,B,C,D,answer,explanation\n3,q,a,b,c,d,B,\n", encoding="utf-8")
    recs, _ = convert("ceval", ceval)
    assert recs[0]["subject"] == "clinical_medicine" and recs[0]["answer"] == "B"
    medqa = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"question": "q", "options": {"A": "1", "B": "2", "C": "3", "D": "4", "E": "5"}, "answer_idx": "E"},
            {"question": "q", "options": [{"key": "A", "value": "1"}, {"key": "B", "value": "2"}], "answer_idx": "A"},
        ],
    )
    recs, _ = convert("medqa_mcmle", medqa)
    assert len(recs[0]["options"]) == 5 and recs[1]["options"] == {"A": "1", "B": "2"}
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "options": {"A": "1", "B": "2"}, "answer_idx": "C"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'answer': answer 'C' is not among"):
        convert("medqa_mcmle", bad)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(",Question,A,B,C,D,Answer\n0,q,a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"ragged\.csv:2: expected 7 columns"):
        convert("cmmlu_csv", ragged)


def test_ner_formatters(tmp_path):
    path = tmp_path / "c.txt.jsonl"
    path.write_bytes(
        "\ufeff".encode()
        + json.dumps(
            {"originalText": "患者行胃镜检查", "entities": [{"label_type": "影像检查", "start_pos": 3, "end_pos": 5}]},
            ensure_ascii=False,
        ).encode()
        + b"\n"
    )
    recs, _ = convert("ccks2019", path)
    assert recs[0]["entities"] == [{"start": 3, "end": 5, "type": "影像检查"}]
    bad = write_jsonl(
        tmp_path / "b.jsonl",
        [{"originalText": "短", "entities": [{"label_type": "药物", "start_pos": 0, "end_pos": 9}]}],
    )
    with pytest.raises(DataError, match=r"b\.jsonl:1: field 'entities\[0\]': span \[0, 9\) is outside"):
        convert("ccks2019", bad)
    recs, _ = convert(
        "chimst",
        write_jsonl(
            tmp_path / "m.jsonl",
            [{"id": "1", "tokens": list("口服阿司匹林"), "tags": ["O", "O", "B-药物", "I-药物", "I-药物", "I-药物"]}],
        ),
    )
    assert recs[0]["entities"] == [{"start": 2, "end": 6, "type": "药物"}]
    assert bio_to_spans(["S-A", "B-B", "E-B", "I-C"]) == [
        {"start": 0, "end": 1, "type": "A"},
        {"start": 1, "end": 3, "type": "B"},
        {"start": 3, "end": 4, "type": "C"},
    ]


def test_attitude_scale(tmp_path):
    recs, _ = convert(
        "attitude_scale",
        write_jsonl(tmp_path / "s.jsonl", [{"scale": "cami", "item": 2, "text": "t", "subscale": "benevolence"}]),
    )
    assert recs[0] == {"scale": "CAMI", "item": 2, "text": "t", "subscale": "benevolence"}


def test_malformed_json_line_and_missing_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "broken"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.jsonl:2: malformed JSON"):
        convert("text", path)
    path.write_text('{"text": "ok"}\n\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.jsonl:3: field 'text': missing"):
        convert("cmd_pretrain", path)


def test_strict_turns_empty_into_an_error(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"text": "a"}, {"text": " "}])
    with pytest.raises(DataError, match=r"e\.jsonl:2: empty text \(strict: true\)"):
        convert("text", path, strict=True)


def test_every_issue_formatter_is_registered():
    required = {
        "cmd_pretrain",
        "cmd_sft",
        "cmd_reward",
        "toyhom_csv",
        "sharegpt",
        "sharegpt_preference",
        "chimed_qa",
        "het_mc",
        "het_mc_eval",
        "meddialog_zh",
        "safety_prompts",
        "cmmlu_csv",
        "ceval",
        "medqa_mcmle",
        "ccks2019",
        "chimst",
        "attitude_scale",
    }
    assert required <= set(FORMATTERS)
