"""Character-level BLEU/ROUGE against values computed by hand."""

import math

import pytest

from chimed_trl.evaluation.text_metrics import CharTokenizer, text_scores


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


def test_whitespace_is_ignored_and_paper_compat_differs():
    assert text_scores(["我 爱北京"], ["我爱北京天安门"])["BLEU-1"] == pytest.approx(100 * math.exp(1 - 7 / 4))
    # the authors' quirk counts the spaces of jieba-joined text as tokens: 我 爱 北京 (6) vs 我 爱 北京 天安门 (10)
    compat = text_scores(["我爱北京"], ["我爱北京天安门"], paper_compat=True)
    assert compat["BLEU-1 (paper_compat)"] == pytest.approx(100 * math.exp(1 - 10 / 6))
    assert compat["BLEU-1 (paper_compat)"] != pytest.approx(compat["BLEU-1"])
    assert CharTokenizer().tokenize("头 痛\n") == ["头", "痛"]


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        text_scores(["a", "b"], ["a"])
