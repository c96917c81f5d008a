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
