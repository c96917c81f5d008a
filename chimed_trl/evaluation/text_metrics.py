"""Character-level BLEU-1/2 and ROUGE-1/2/L F for Chinese open QA and dialogue.

Chinese has no spaces, so the unit is the character (whitespace ignored). BLEU is corpus-level
sacrebleu (``tokenize="char"``, cumulative n-gram order 1 or 2, brevity penalty); ROUGE is
rouge-score with a character tokenizer, F-measure averaged over pairs. All on a 0-100 scale.

``paper_compat=True`` reproduces the ChiMed-GPT authors' BLEU quirk instead: the text is word-
segmented with jieba, joined with spaces, and that *string* is handed to NLTK's ``sentence_bleu``,
which iterates over its characters, spaces included; sentence scores are averaged. Labelled as such
in every report; do not compare its numbers with the clean ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence


class CharTokenizer:
    """rouge-score tokenizer: one token per non-space character (its default drops non-ASCII text)."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


def bleu(hypotheses: Sequence[str], references: Sequence[str], max_order: int) -> float:
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize="char", max_ngram_order=max_order)
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=CharTokenizer())
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp, ref in zip(hypotheses, references):
        for key, score in scorer.score(ref, hyp).items():
            totals[key] += score.fmeasure
    n = max(len(hypotheses), 1)
    return {f"{key[:5].upper()}-{key[5:]}": 100 * value / n for key, value in totals.items()}


def paper_compat_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """The authors' BLEU: NLTK sentence BLEU over the characters (spaces included) of jieba-joined text."""
    import jieba
    from nltk.translate.bleu_score import sentence_bleu

    jieba.setLogLevel(60)
    scores = {"BLEU-1 (paper_compat)": 0.0, "BLEU-2 (paper_compat)": 0.0}
    for hyp, ref in zip(hypotheses, references):
        hyp_chars, ref_chars = list(" ".join(jieba.cut(hyp))), list(" ".join(jieba.cut(ref)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NLTK warns on zero n-gram overlap; the score is then 0
            scores["BLEU-1 (paper_compat)"] += sentence_bleu([ref_chars], hyp_chars, weights=(1.0,))
            scores["BLEU-2 (paper_compat)"] += sentence_bleu([ref_chars], hyp_chars, weights=(0.5, 0.5))
    n = max(len(hypotheses), 1)
    return {k: 100 * v / n for k, v in scores.items()}


def text_scores(hypotheses: Sequence[str], references: Sequence[str], paper_compat: bool = False) -> dict[str, float]:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    scores = {"BLEU-1": bleu(hypotheses, references, 1), "BLEU-2": bleu(hypotheses, references, 2)}
    scores.update(rouge(hypotheses, references))
    if paper_compat:
        scores.update(paper_compat_bleu(hypotheses, references))
    return scores
