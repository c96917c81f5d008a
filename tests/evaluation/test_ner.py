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
    # offsets: 奥美拉唑 and 胃炎 claim their gold spans; 胃痛 is no gold span
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
    # offset-strict: the one predicted 胃 claims one of the two gold 胃 spans (see the test below)
    assert (s["offset_strict"]["tp"], s["offset_strict"]["pred"], s["offset_strict"]["gold"]) == (1, 1, 3)


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


def test_paper_compat_counts_every_output_line_by_hand():
    """The authors' counting: every output line is a prediction, blank lines and 无 included.

    Hand count. Document 1 (gold 3): lines 奥美拉唑<TAB>药物 (right), "" , 无, 胃炎 疾病和诊断 (right), 乱七八糟,
    "" (the trailing newline) -> 6 predicted, 2 right. Document 2 (no entity): 无 -> 1 predicted, 0 right.
    P = 2/7, R = 2/3, F1 = 0.4. The clean scorer skips blank/无 lines and the garbage: P = 1, R = 2/3, F1 = 0.8.

    catches: blank or 无 lines skipped by the paper_compat scorer (F1 would be 0.8), the paper_compat F1 put where
    the clean one belongs."""
    empty = {"id": "2", "text": "无明显异常。", "entities": []}
    outputs = {"1": "奥美拉唑\t药物\n\n无\n胃炎 疾病和诊断\n乱七八糟\n", "2": "无"}
    result = evaluate_ner(lambda prompts: [outputs["1"], outputs["2"]], [DOC, empty], [], TYPES, k_shot=0)
    compat = result["paper_compat"]
    assert (compat["tp"], compat["pred"], compat["gold"]) == (2, 7, 3)
    assert compat["f1"] == pytest.approx(0.4)
    assert result["mention_type"]["f1"] == pytest.approx(0.8)
    first = result["items"][0]
    assert first["output"] == outputs["1"] and first["prompt"].endswith(
        "文本：患者胃痛，口服奥美拉唑，胃镜示胃炎。\n实体：\n"
    )
    assert first["metric"]["mention_type_f1"] == pytest.approx(0.8)


def test_offset_strict_matches_each_gold_mention_once():
    """Repeated and nested strings. Text 患者胃痛，胃镜示胃炎，胃部不适。: gold 胃 (2,3), 胃 (11,12), 胃炎 (8,10).
    Hand counts: 胃 predicted once claims one gold span (1 prediction, not one per occurrence of 胃 in the text);
    three 胃 lines claim the two 胃 spans and the third is wrong; 胃 never claims the nested 胃 of 胃炎.

    catches: the old over-count (one predicted 胃 became 4 located spans, 2 of them 'right')."""
    doc = {
        "id": "d",
        "text": "患者胃痛，胃镜示胃炎，胃部不适。",
        "entities": [
            {"start": 2, "end": 3, "type": "解剖部位"},
            {"start": 11, "end": 12, "type": "解剖部位"},
            {"start": 8, "end": 10, "type": "疾病和诊断"},
        ],
    }
    s = score_ner([doc], [[("胃", "解剖部位")]])["offset_strict"]
    assert (s["tp"], s["pred"], s["gold"]) == (1, 1, 3)
    output = "胃\t解剖部位\n胃\t解剖部位\n胃\t解剖部位\n胃炎\t疾病和诊断"
    s = evaluate_ner(lambda p: [output], [doc], [], TYPES, k_shot=0)["offset_strict"]
    assert (s["tp"], s["pred"], s["gold"]) == (3, 4, 3)
    nested = {**doc, "entities": [{"start": 8, "end": 10, "type": "疾病和诊断"}]}
    s = score_ner([nested], [[("胃", "解剖部位"), ("胃炎", "疾病和诊断")]])["offset_strict"]
    assert (s["tp"], s["pred"], s["gold"]) == (1, 2, 1)
