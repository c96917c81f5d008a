import pytest

from chimed_trl.evaluation.ner import build_prompt, evaluate_ner, parse_entities, score_ner

TYPES = ["疾病和诊断", "药物", "解剖部位"]
DOC = {
    "id": "1",
    "text": "患者胃痛，口服奥美拉唑，胃镜示胃炎。",
    "entities": [
        {"start": 2, "end": 3, "type": "解剖部位"},
        {"start": 7, "end": 11, "type": "药物"},
        {"start": 15, "end": 17, "type": "疾病和诊断"},
    ],
}


def test_parse_is_robust_and_counts_bad_lines():
    found, bad = parse_entities(
        "奥美拉唑\t药物\n胃炎：疾病和诊断\n乱七八糟\n胃\t器官\n\n文本：下一段\n胃\t解剖部位", TYPES
    )
    assert found == {("奥美拉唑", "药物"), ("胃炎", "疾病和诊断")}
    assert bad == 2  # no separator; unknown type. The next 文本： block is ignored


def test_scores_hand_computed():
    # predicted: 2 right (奥美拉唑/药物, 胃炎/疾病和诊断), 1 wrong type (胃痛/疾病和诊断); gold has 3
    pred = {("奥美拉唑", "药物"), ("胃炎", "疾病和诊断"), ("胃痛", "疾病和诊断")}
    s = score_ner([DOC], [pred])
    assert s["mention_type"]["precision"] == 2 / 3 and s["mention_type"]["recall"] == 2 / 3
    # offsets: 胃 occurs at 2, 5(胃痛? no: 胃镜 at 12) ... gold spans matched: 奥美拉唑 (7,11), 胃炎 (15,17)
    assert s["offset_strict"]["tp"] == 2 and s["offset_strict"]["gold"] == 3


def test_evaluate_with_a_generator_that_copies_gold():
    def oracle(prompts):
        assert "文本：患者胃痛" in prompts[0] and prompts[0].count("文本：") == 2  # 1 exemplar + the document
        return ["胃\t解剖部位\n奥美拉唑\t药物\n胃炎\t疾病和诊断"]

    result = evaluate_ner(oracle, [DOC], [DOC], TYPES, k_shot=1)
    assert result["mention_type"]["f1"] == 1.0 and result["unparsable_lines"] == 0
    assert "奥美拉唑\t药物" in build_prompt(DOC, [DOC], TYPES)


def test_parse_accepts_any_whitespace_and_list_numbering():
    # catches: only tab/colon/double-space separators (the authors split on any whitespace) and numbered lists
    output = "1. 奥美拉唑 药物\n2、胃炎\t\t疾病和诊断\n(3) 胃   解剖部位\n4) 新冠 肺炎 疾病和诊断"
    found, bad = parse_entities(output, TYPES)
    assert found == {("奥美拉唑", "药物"), ("胃炎", "疾病和诊断"), ("胃", "解剖部位"), ("新冠 肺炎", "疾病和诊断")}
    assert bad == 0


def test_duplicate_gold_mentions_count_once():
    # catches: a gold (mention, type) listed twice in a document counted twice. Hand count: the document
    # mentions 胃 twice (offsets 2 and 11); as a set of (mention, type) pairs gold = {胃, 胃炎} -> 2 pairs.
    doc = {
        "id": "d",
        "text": "患者胃痛，胃镜示胃炎，胃部不适。",
        "entities": [
            {"start": 2, "end": 3, "type": "解剖部位"},
            {"start": 11, "end": 12, "type": "解剖部位"},
            {"start": 8, "end": 10, "type": "疾病和诊断"},
        ],
    }
    s = score_ner([doc], [{("胃", "解剖部位")}])
    assert (s["mention_type"]["tp"], s["mention_type"]["gold"]) == (1, 2)
    assert s["mention_type"]["recall"] == 0.5 and s["mention_type"]["precision"] == 1.0
    # offset-strict: 胃 is found at 2, 5 (胃镜), 8 (胃炎) and 11; gold spans (2,3) and (11,12) match -> tp 2 of 4
    assert (s["offset_strict"]["tp"], s["offset_strict"]["pred"], s["offset_strict"]["gold"]) == (2, 4, 3)


def test_nothing_predicted_scores_zero_precision():
    # catches: precision set to 1 when nothing is predicted (an empty model output would then look precise)
    s = score_ner([DOC], [set()])
    assert s["mention_type"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "pred": 0, "gold": 3}


def test_output_count_mismatch_is_an_error():
    # catches: zip() silently truncating when a backend returns fewer outputs than records
    with pytest.raises(ValueError, match="returned 1 outputs for 2 NER records"):
        evaluate_ner(lambda prompts: ["胃\t解剖部位"], [DOC, DOC], [], TYPES, k_shot=0)
    with pytest.raises(ValueError, match="1 NER outputs for 2 records"):
        score_ner([DOC, DOC], [set()])
