"""Character-level BLEU/ROUGE against hand counts and an independent brute-force corpus BLEU."""

import math
from collections import Counter

import pytest

from chimed_trl.errors import UserError
from chimed_trl.evaluation.text_metrics import CharTokenizer, authors_char_tokenize, text_scores


def reference_corpus_bleu(hyps, refs, weights):
    """Papineni et al. corpus BLEU from first principles: clipped n-gram matches and lengths summed over the
    corpus, one brevity penalty, no smoothing. Token sequences in, 0-100 out."""
    matches, totals = [0] * len(weights), [0] * len(weights)
    for hyp, ref in zip(hyps, refs):
        for n in range(1, len(weights) + 1):
            h = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
            r = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
            matches[n - 1] += sum(min(c, r[g]) for g, c in h.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    c, r = sum(len(h) for h in hyps), sum(len(x) for x in refs)
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return 100 * bp * math.exp(sum(w * math.log(m / t) for w, m, t in zip(weights, matches, totals)))


def chars(text):
    return [c for c in text if not c.isspace()]


# Pairs of different lengths, with partial overlap: corpus-level and sentence-averaged BLEU differ on them.
HYPS = ["多喝热水", "建议您到医院做胃镜检查", "注意休息", "可以口服布洛芬缓解疼痛"]
REFS = ["多喝温水，注意休息", "建议做胃镜", "注意休息，清淡饮食", "布洛芬可以缓解疼痛"]


def test_hand_computed_prefix_case():
    # hyp 我爱北京 (4 chars) vs ref 我爱北京天安门 (7): all n-grams match; BP = exp(1 - 7/4)
    s = text_scores(["我爱北京"], ["我爱北京天安门"])
    bp = math.exp(1 - 7 / 4)
    assert s["BLEU-1"] == pytest.approx(100 * bp, abs=1e-6)
    assert s["BLEU-2"] == pytest.approx(100 * bp, abs=1e-6)
    assert s["ROUGE-1"] == pytest.approx(100 * 8 / 11)  # P=1, R=4/7
    assert s["ROUGE-2"] == pytest.approx(100 * 2 / 3)  # P=3/3, R=3/6
    assert s["ROUGE-L"] == pytest.approx(100 * 8 / 11)  # LCS = 4


def test_hand_computed_partial_overlap():
    # hyp 多喝热水 vs ref 多喝温水: unigrams 3/4, bigrams 1/3 (多喝), equal length so BP = 1
    s = text_scores(["多喝热水"], ["多喝温水"])
    assert s["BLEU-1"] == pytest.approx(75.0)
    assert s["BLEU-2"] == pytest.approx(100 * math.sqrt(0.75 * 1 / 3))
    assert s["ROUGE-1"] == pytest.approx(75.0)
    assert s["ROUGE-2"] == pytest.approx(100 / 3)
    assert s["ROUGE-L"] == pytest.approx(75.0)  # LCS 多喝水 = 3


def test_bleu_is_corpus_level_over_pairs_of_different_lengths():
    # catches: BLEU switched to sentence-level averaging (or per-pair brevity penalties)
    s = text_scores(HYPS, REFS)
    hyps, refs = [chars(h) for h in HYPS], [chars(r) for r in REFS]
    assert s["BLEU-1"] == pytest.approx(reference_corpus_bleu(hyps, refs, (1.0,)), abs=1e-6)
    assert s["BLEU-2"] == pytest.approx(reference_corpus_bleu(hyps, refs, (0.5, 0.5)), abs=1e-6)
    sentence_mean = sum(reference_corpus_bleu([h], [r], (0.5, 0.5)) for h, r in zip(hyps, refs)) / len(hyps)
    assert abs(s["BLEU-2"] - sentence_mean) > 1  # the two readings really differ on this corpus


def test_bleu_has_no_smoothing():
    # catches: a smoothing method switched on (sacrebleu's default `exp` gives BLEU-2 > 0 with no bigram match)
    s = text_scores(["热多水喝", "痛头"], ["多喝温水", "头痛"])
    assert s["BLEU-1"] == pytest.approx(reference_corpus_bleu([chars("热多水喝痛头")], [chars("多喝温水头痛")], (1,)))
    assert s["BLEU-2"] == 0.0


def test_paper_compat_is_the_authors_nltk_corpus_bleu():
    # catches: jieba-joined text, sentence averaging, or the wrong weights instead of the authors' code path.
    # Hand count for one pair: " 多  喝  热  水 " vs " 多  喝  温  水 " (12 characters each, spaces included):
    # unigrams 11/12 match, bigrams 9/11, trigrams 7/10; BP = 1. Their "BLEU-1" uses weights (0.5, 0.5).
    compat = text_scores(["多喝热水"], ["多喝温水"], paper_compat=True)
    assert authors_char_tokenize("多喝热水") == " 多  喝  热  水 "
    assert compat["BLEU-1 (paper_compat)"] == pytest.approx(100 * math.sqrt(11 / 12 * 9 / 11))
    expected_2 = math.exp(0.333 * math.log(11 / 12) + 0.333 * math.log(9 / 11) + 0.334 * math.log(7 / 10))
    assert compat["BLEU-2 (paper_compat)"] == pytest.approx(100 * expected_2)
    assert compat["BLEU-1 (paper_compat)"] > compat["BLEU-1"]  # the padding spaces inflate it (86.6 vs 75)
    # corpus level over several pairs: the brute-force BLEU on the space-wrapped character strings
    s = text_scores(HYPS, REFS, paper_compat=True)
    hyps, refs = [list(authors_char_tokenize(h)) for h in HYPS], [list(authors_char_tokenize(r)) for r in REFS]
    assert s["BLEU-1 (paper_compat)"] == pytest.approx(reference_corpus_bleu(hyps, refs, (0.5, 0.5)), abs=1e-6)
    assert s["BLEU-2 (paper_compat)"] == pytest.approx(
        reference_corpus_bleu(hyps, refs, (0.333, 0.333, 0.334)), abs=1e-6
    )


def test_authors_tokenizer_quirks():
    # Latin letters and digits are left alone; U+2014 (em dash) falls inside their mistyped "\u20000" range
    assert authors_char_tokenize(" 服用2片abc ") == " 服  用 2 片 abc"
    assert authors_char_tokenize("a—b") == "a — b"


def test_whitespace_is_ignored():
    assert text_scores(["我 爱北京"], ["我爱北京天安门"])["BLEU-1"] == pytest.approx(100 * math.exp(1 - 7 / 4))
    assert CharTokenizer().tokenize("头 痛\n") == ["头", "痛"]


def test_bad_lengths_and_empty_input_are_clear_errors():
    with pytest.raises(UserError, match="2 hypotheses for 1 references"):
        text_scores(["a", "b"], ["a"])
    with pytest.raises(UserError, match="no .* pairs to score"):
        text_scores([], [])


# Latin words, digits and punctuation (ASCII and full-width), space-wrapped by hand as the authors' tokenizer
# does (CJK and full-width punctuation wrapped in spaces, the rest as is, outer spaces stripped first).
ROUGE_PAIRS = [
    ("胃痛3天，吃了Omeprazole 20mg.", "胃痛可能是胃炎，用PPI 20mg。"),
    ("Take ibuprofen 400mg twice", "ibuprofen 400mg, twice a day"),
    ("建议查HbA1c。", "建议复查HbA1c和血糖"),
]
ROUGE_WRAPPED = [
    (" 胃  痛 3 天  ，  吃  了 Omeprazole 20mg.", " 胃  痛  可  能  是  胃  炎  ，  用 PPI 20mg 。 "),
    ("Take ibuprofen 400mg twice", "ibuprofen 400mg, twice a day"),
    (" 建  议  查 HbA1c 。 ", " 建  议  复  查 HbA1c 和  血  糖 "),
]


def test_paper_compat_rouge_is_the_rouge_package():
    """The `rouge` package (1.0.1) called here directly on hand-wrapped strings, as the authors called it.

    catches: clean character ROUGE passed off as the authors' (it splits 'Omeprazole' into letters and counts
    repeats), the wrapping skipped (deliberate break: plain per-character joining -> red)."""
    from rouge import Rouge

    assert [(authors_char_tokenize(h), authors_char_tokenize(r)) for h, r in ROUGE_PAIRS] == [
        (h, r) for h, r in ROUGE_WRAPPED
    ]
    expected = Rouge().get_scores([h for h, _ in ROUGE_WRAPPED], [r for _, r in ROUGE_WRAPPED], avg=True)
    scores = text_scores([h for h, _ in ROUGE_PAIRS], [r for _, r in ROUGE_PAIRS], paper_compat=True)
    for n in ("1", "2", "L"):
        assert scores[f"ROUGE-{n} (paper_compat)"] == pytest.approx(
            100 * expected[f"rouge-{n.lower()}"]["f"], abs=1e-9
        )
    # not the clean metric: on these pairs they differ by more than a rounding
    assert abs(scores["ROUGE-1 (paper_compat)"] - scores["ROUGE-1"]) > 1


def test_paper_compat_rouge_scores_an_empty_answer_zero():
    """The package raises on an empty hypothesis (the authors' script would stop); here it is a 0 among the pairs.

    catches: the whole dialogue task failing on one empty generation, or the empty pair silently dropped (which
    would raise the average)."""
    from rouge import Rouge

    from chimed_trl.evaluation.text_metrics import paper_compat_empty_pairs

    hyps = [h for h, _ in ROUGE_PAIRS] + ["", "..."]
    refs = [r for _, r in ROUGE_PAIRS] + ["建议休息", "多喝水"]
    with pytest.raises(ValueError, match="Hypothesis is empty"):
        Rouge().get_scores([authors_char_tokenize(h) for h in hyps], [authors_char_tokenize(r) for r in refs])
    three = Rouge().get_scores([h for h, _ in ROUGE_WRAPPED], [r for _, r in ROUGE_WRAPPED], avg=True)
    scores = text_scores(hyps, refs, paper_compat=True)
    assert scores["ROUGE-L (paper_compat)"] == pytest.approx(100 * three["rouge-l"]["f"] * 3 / 5, abs=1e-9)
    assert paper_compat_empty_pairs(hyps, refs) == 2
