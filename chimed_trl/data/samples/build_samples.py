"""Regenerate the bundled sample data: ``python -m chimed_trl.data.samples.build_samples``.

The samples are written for this project (no third-party text): a small table of conditions by
department, expanded through sentence patterns into a pre-training corpus, multi-turn SFT
conversations and ranked preference lists. Deterministic: the same files every run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

# (department, condition, symptoms, examination, treatment, lifestyle advice)
CONDITIONS = [
    (
        "心内科",
        "高血压",
        "头晕、头痛和颈后部发紧",
        "动态血压监测和心电图",
        "规律服用降压药物",
        "低盐饮食并坚持有氧运动",
    ),
    (
        "心内科",
        "冠心病",
        "活动后胸闷、胸痛",
        "冠状动脉造影和心脏彩超",
        "抗血小板治疗和他汀类药物",
        "戒烟限酒并控制体重",
    ),
    (
        "心内科",
        "心房颤动",
        "心慌、脉搏快慢不一",
        "心电图和二十四小时动态心电图",
        "控制心室率并评估抗凝",
        "避免熬夜和大量饮用咖啡",
    ),
    (
        "心内科",
        "心力衰竭",
        "气短、双下肢水肿",
        "脑钠肽检测和心脏超声",
        "利尿剂和神经内分泌抑制剂",
        "每天称体重并限制饮水量",
    ),
    (
        "呼吸内科",
        "社区获得性肺炎",
        "发热、咳嗽和咳黄痰",
        "胸部影像和血常规",
        "根据病情选择抗感染治疗",
        "多休息并注意补充水分",
    ),
    (
        "呼吸内科",
        "支气管哮喘",
        "反复喘息、夜间咳嗽",
        "肺功能和支气管舒张试验",
        "吸入糖皮质激素",
        "远离过敏原并随身携带缓解药物",
    ),
    (
        "呼吸内科",
        "慢性阻塞性肺疾病",
        "长期咳嗽、咳痰和活动后气促",
        "肺功能检查",
        "长效支气管舒张剂",
        "戒烟并进行呼吸康复训练",
    ),
    ("消化内科", "胃食管反流病", "烧心、反酸和胸骨后不适", "胃镜检查", "质子泵抑制剂", "睡前三小时不进食并抬高床头"),
    (
        "消化内科",
        "幽门螺杆菌感染",
        "上腹隐痛、口臭和饱胀",
        "碳十三呼气试验",
        "含铋剂的四联根除方案",
        "分餐进食并复查呼气试验",
    ),
    (
        "消化内科",
        "功能性消化不良",
        "餐后饱胀和早饱",
        "胃镜排除器质性疾病",
        "促动力药和抑酸药",
        "规律进餐并减少辛辣刺激食物",
    ),
    ("消化内科", "脂肪肝", "乏力、右上腹不适", "肝脏超声和肝功能", "控制体重和改善代谢", "减少含糖饮料并增加运动"),
    (
        "内分泌科",
        "二型糖尿病",
        "口渴、多尿和体重下降",
        "空腹血糖和糖化血红蛋白",
        "二甲双胍等降糖药物",
        "控制主食量并监测血糖",
    ),
    (
        "内分泌科",
        "甲状腺功能亢进",
        "怕热、多汗和手抖",
        "甲状腺功能和甲状腺超声",
        "抗甲状腺药物",
        "避免高碘饮食并保证睡眠",
    ),
    ("内分泌科", "甲状腺功能减退", "怕冷、乏力和水肿", "促甲状腺激素检测", "左甲状腺素替代治疗", "按时服药并定期复查"),
    (
        "内分泌科",
        "痛风",
        "夜间突发关节红肿热痛",
        "血尿酸和关节超声",
        "急性期抗炎止痛，缓解期降尿酸",
        "少吃动物内脏并多饮水",
    ),
    (
        "神经内科",
        "偏头痛",
        "一侧搏动性头痛伴畏光",
        "神经系统查体，必要时头颅磁共振",
        "急性期止痛和预防性用药",
        "记录头痛日记并规律作息",
    ),
    (
        "神经内科",
        "脑梗死",
        "突发一侧肢体无力和言语不清",
        "头颅电子计算机断层扫描和磁共振",
        "时间窗内溶栓或取栓",
        "控制血压血糖并坚持康复",
    ),
    (
        "神经内科",
        "失眠障碍",
        "入睡困难、早醒",
        "睡眠评估量表",
        "认知行为治疗，必要时短期用药",
        "固定起床时间并减少午睡",
    ),
    (
        "儿科",
        "小儿急性上呼吸道感染",
        "流涕、咽痛和低热",
        "体格检查和血常规",
        "对症退热和护理",
        "保证饮水并观察精神状态",
    ),
    ("儿科", "小儿腹泻", "大便次数增多、稀水样便", "大便常规", "口服补液盐预防脱水", "继续母乳喂养并注意手卫生"),
    ("儿科", "手足口病", "口腔疱疹和手足皮疹", "临床表现和病原学检测", "对症支持治疗", "居家隔离并勤洗手"),
    (
        "妇产科",
        "妊娠期糖尿病",
        "多数没有明显症状",
        "口服葡萄糖耐量试验",
        "饮食运动管理，必要时胰岛素",
        "少量多餐并监测胎动",
    ),
    (
        "妇产科",
        "多囊卵巢综合征",
        "月经稀发和痤疮",
        "性激素检测和盆腔超声",
        "调整月经周期和生活方式干预",
        "减重并保持规律运动",
    ),
    ("妇产科", "缺铁性贫血", "面色苍白、乏力和心悸", "血常规和铁蛋白", "口服铁剂", "多吃瘦肉并搭配富含维生素C的水果"),
    (
        "骨科",
        "腰椎间盘突出症",
        "腰痛伴一侧下肢放射痛",
        "腰椎磁共振",
        "卧床休息、理疗和镇痛",
        "避免久坐并加强腰背肌锻炼",
    ),
    (
        "骨科",
        "骨质疏松症",
        "身高变矮和轻微外伤后骨折",
        "骨密度检测",
        "钙剂、维生素D和抗骨质疏松药物",
        "多晒太阳并预防跌倒",
    ),
    ("骨科", "膝骨关节炎", "上下楼梯时膝关节疼痛", "膝关节X线片", "非甾体抗炎药和康复锻炼", "控制体重并减少爬山"),
    ("皮肤科", "湿疹", "皮肤瘙痒、红斑和渗出", "皮肤科查体", "外用糖皮质激素和保湿剂", "避免热水烫洗并穿棉质衣物"),
    ("皮肤科", "带状疱疹", "单侧成簇水疱伴神经痛", "临床诊断", "早期抗病毒和止痛", "保持皮损清洁并充分休息"),
    ("皮肤科", "荨麻疹", "风团此起彼伏并伴瘙痒", "过敏原筛查", "第二代抗组胺药", "记录诱因并避免搔抓"),
    ("眼科", "干眼症", "眼睛干涩、异物感", "泪液分泌试验", "人工泪液", "每用眼四十分钟远眺休息"),
    ("眼科", "白内障", "视物模糊、怕光", "裂隙灯检查", "影响生活时行手术治疗", "外出佩戴太阳镜"),
    (
        "耳鼻喉科",
        "过敏性鼻炎",
        "鼻痒、打喷嚏和流清涕",
        "过敏原检测",
        "鼻用激素和抗组胺药",
        "花粉季节减少外出并佩戴口罩",
    ),
    (
        "耳鼻喉科",
        "急性扁桃体炎",
        "咽痛、吞咽困难和发热",
        "咽部查体和血常规",
        "细菌感染时使用抗生素",
        "吃温凉软食并多饮水",
    ),
    (
        "精神心理科",
        "抑郁障碍",
        "情绪低落、兴趣减退",
        "精神科面谈和量表评估",
        "心理治疗联合抗抑郁药",
        "保持社会联系并规律运动",
    ),
    (
        "精神心理科",
        "广泛性焦虑障碍",
        "持续担忧、坐立不安",
        "精神科评估",
        "认知行为治疗和药物治疗",
        "练习放松训练并减少咖啡因",
    ),
    ("泌尿外科", "肾结石", "腰部绞痛和血尿", "泌尿系超声和尿常规", "解痉止痛，必要时碎石", "每天饮水两千毫升以上"),
    (
        "泌尿外科",
        "良性前列腺增生",
        "尿频、夜尿增多和排尿费力",
        "前列腺超声和尿流率",
        "α受体阻滞剂",
        "晚间少饮水并避免憋尿",
    ),
    ("肾内科", "慢性肾脏病", "泡沫尿、水肿和乏力", "尿蛋白和肾功能", "控制血压和蛋白尿", "低盐优质低蛋白饮食"),
    (
        "感染科",
        "流行性感冒",
        "高热、肌肉酸痛和乏力",
        "流感病毒抗原检测",
        "发病早期抗病毒治疗",
        "接种流感疫苗并居家休息",
    ),
]

PRETRAIN_PATTERNS = [
    "{c}是{d}的常见疾病，典型表现为{s}。",
    "当患者出现{s}时，医生通常会考虑{c}的可能。",
    "诊断{c}常用的检查包括{e}。",
    "{c}的治疗以{t}为主，需要在医生指导下进行。",
    "对于{c}患者，日常生活中应当{a}。",
    "在{d}门诊，{c}患者常因{s}前来就诊。",
    "{c}的病情评估离不开{e}，检查结果有助于制定方案。",
    "如果{c}控制不佳，应及时复诊并调整{t}。",
    "预防{c}复发的关键在于长期坚持，比如{a}。",
    "{d}医生提醒，{c}早发现、早治疗，预后通常较好。",
]

QUESTION_PATTERNS = [
    "医生您好，我最近{s}，这是怎么回事？",
    "我{s}好几天了，需要去医院吗？",
    "家里老人{s}，应该挂哪个科？",
]

SYSTEM_PROMPTS = [
    "你是一名耐心细致的医生，请用通俗的语言回答患者的问题。",
    "你是医院的智能导诊助手，回答要准确、简洁，并提醒患者及时就医。",
]


def _fill(pattern: str, row: tuple) -> str:
    d, c, s, e, t, a = row
    return pattern.format(d=d, c=c, s=s, e=e, t=t, a=a)


def build_corpus() -> list[str]:
    """One sentence per line: the tokenizer's training text."""
    return [_fill(p, row) for row in CONDITIONS for p in PRETRAIN_PATTERNS]


def build_pretrain(rng: random.Random) -> list[dict]:
    """Documents of varied length (a few sentences to a few dozen), the shape packing must handle."""
    sentences = build_corpus()
    docs = []
    for i, row in enumerate(CONDITIONS):
        own = [_fill(p, row) for p in PRETRAIN_PATTERNS]
        n_extra = rng.choice([0, 0, 2, 5, 12, 30])
        extra = rng.sample(sentences, n_extra)
        docs.append({"text": "".join(own[: rng.randint(2, len(own))] + extra)})
        if i % 8 == 0:
            docs.append({"text": ""})  # empty documents are skipped and counted
    return docs


def build_sft(rng: random.Random) -> list[dict]:
    """Multi-turn conversations: question, answer, follow-up, answer (some with a system prompt)."""
    records = []
    for i, row in enumerate(CONDITIONS):
        d, c, s, e, t, a = row
        messages = []
        if i % 3 == 0:
            messages.append({"role": "system", "content": SYSTEM_PROMPTS[i % 2]})
        messages += [
            {"role": "user", "content": _fill(rng.choice(QUESTION_PATTERNS), row)},
            {"role": "assistant", "content": f"这些表现可能与{c}有关，建议到{d}就诊，医生会安排{e}。"},
            {"role": "user", "content": f"如果确诊{c}，怎么治疗？"},
            {"role": "assistant", "content": f"{c}一般采用{t}。平时要{a}。"},
        ]
        if i % 4 == 0:
            messages += [
                {"role": "user", "content": "还有什么需要注意的吗？"},
                {"role": "assistant", "content": f"请按时复诊，如果{s}明显加重，要尽快就医。"},
            ]
        records.append({"messages": messages})
    return records


def build_ranked(rng: random.Random) -> list[dict]:
    """Ranked answers, best first: accepted > detailed > vague > wrong department."""
    records = []
    for i, row in enumerate(CONDITIONS):
        d, c, s, e, t, a = row
        wrong = CONDITIONS[(i + 7) % len(CONDITIONS)]
        records.append(
            {
                "prompt": [{"role": "user", "content": _fill(rng.choice(QUESTION_PATTERNS), row)}],
                "responses": [
                    f"可能是{c}，建议到{d}做{e}，确诊后{t}，同时{a}。",
                    f"可能是{c}，建议去{d}检查。",
                    "建议多喝热水，观察几天。",
                    f"这是{wrong[1]}，去{wrong[0]}就行。",
                ],
                "sources": ["accepted", "detailed", "vague", "rejected"],
            }
        )
    return records


def build_reward_pairs(ranked: list[dict]) -> list[dict]:
    """CMD-Reward's raw schema (question, response_chosen, response_rejected): best and worst of each list,
    the pairs the augmentation recipe turns back into 4-way lists."""
    return [
        {
            "question": r["prompt"][0]["content"],
            "response_chosen": r["responses"][0],
            "response_rejected": r["responses"][-1],
        }
        for r in ranked
    ]


def build_choice(rng: random.Random, n: int) -> list[dict]:
    """Four-option triage questions: which department first (canonical choice records)."""
    out = []
    for i in range(n):
        row = CONDITIONS[i % len(CONDITIONS)]
        others = rng.sample(sorted({c[0] for c in CONDITIONS} - {row[0]}), 3)
        options = [row[0], *others]
        rng.shuffle(options)
        out.append(
            {
                "id": f"triage-{i}",
                "subject": "triage",
                "question": f"{row[1]}患者应首先到哪个科室就诊？",
                "options": dict(zip("ABCD", options)),
                "answer": "ABCD"[options.index(row[0])],
            }
        )
    return out


def build_ner() -> list[dict]:
    """Short clinical notes with disease, examination and treatment spans (end exclusive)."""
    records = []
    for i, (_, c, s, e, t, _) in enumerate(CONDITIONS):
        parts = [("患者因", None), (s, "症状"), ("就诊，行", None), (e, "检查"), ("，诊断为", None), (c, "疾病和诊断")]
        parts += [("，予", None), (t, "治疗"), ("。", None)]
        text, entities = "", []
        for piece, kind in parts:
            if kind:
                entities.append({"start": len(text), "end": len(text) + len(piece), "type": kind})
            text += piece
        records.append({"id": f"note-{i}", "text": text, "entities": entities})
    return records


def build_dialogue_eval(sft: list[dict]) -> list[dict]:
    """Predict the last assistant turn of each sample conversation."""
    out = []
    for i, record in enumerate(sft):
        messages = record["messages"]
        last = max(j for j, m in enumerate(messages) if m["role"] == "assistant")
        out.append({"id": f"dialogue-{i}", "messages": messages[:last], "reference": messages[last]["content"]})
    return out


def build_scale_items() -> list[dict]:
    """Placeholder statements with the CAMI/MICA item numbering, NOT the scales' wording (for plumbing only)."""
    items = [
        {"scale": "CAMI", "item": i, "text": f"（示例陈述，非量表原文）关于精神疾病患者的第{i}条看法。"}
        for i in range(1, 41)
    ]
    items += [
        {"scale": "MICA", "item": i, "text": f"（示例陈述，非量表原文）关于心理疾病患者的第{i}条看法。"}
        for i in range(1, 17)
    ]
    return items


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(0)
    (HERE / "corpus.txt").write_text("\n".join(build_corpus()) + "\n", encoding="utf-8")
    _write_jsonl(HERE / "pretrain.jsonl", build_pretrain(rng))
    _write_jsonl(HERE / "sft.jsonl", build_sft(rng))
    _write_jsonl(HERE / "ranked.jsonl", build_ranked(rng))
    eval_rng = random.Random(1)  # its own stream: the files above stay byte-identical
    _write_jsonl(HERE / "choice_test.jsonl", build_choice(eval_rng, 40))
    _write_jsonl(
        HERE / "choice_dev.jsonl", [{**q, "id": q["id"].replace("triage", "dev")} for q in build_choice(eval_rng, 5)]
    )
    _write_jsonl(HERE / "ner.jsonl", build_ner())
    _write_jsonl(HERE / "dialogue_eval.jsonl", build_dialogue_eval(build_sft(random.Random(0))))
    _write_jsonl(HERE / "scale_items.jsonl", build_scale_items())
    _write_jsonl(HERE / "reward_pairs.jsonl", build_reward_pairs(build_ranked(random.Random(0))))


if __name__ == "__main__":
    main()
