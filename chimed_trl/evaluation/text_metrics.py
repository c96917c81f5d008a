"""Character-level BLEU-1/2 and ROUGE-1/2/L F for Chinese open QA and dialogue (0-100 scale).

Clean metrics (the default):

- **BLEU** is *corpus-level* (n-gram matches and lengths summed over all pairs, one brevity penalty),
  over characters with whitespace ignored (sacrebleu ``tokenize="char"``), cumulative: BLEU-1 uses
  unigrams, BLEU-2 the geometric mean of uni- and bigram precision. **No smoothing**
  (``smooth_method="none"``), chosen on purpose: the paper's NLTK BLEU did not smooth, and with
  sacrebleu's default ``exp`` smoothing a corpus with zero bigram matches scores a positive BLEU-2
  (40.82 in one case) instead of 0.
- **ROUGE-1/2/L** F-measure per pair with a one-token-per-character tokenizer (rouge-score's default
  drops non-ASCII text), averaged over pairs.

``paper_compat=True`` also reports the ChiMed-GPT authors' BLEU, reproduced exactly from their public
generation scripts (IDEA-CCNL/Fengshenbang-LM, ChiMed-GPT evaluation): every CJK character is wrapped
in spaces (their ``chinese_char_tokenize``), and the resulting *strings* are handed to NLTK's
``corpus_bleu``, which iterates over their characters, **spaces included**; the figure they call
BLEU-1 uses weights (0.5, 0.5) (a 2-gram BLEU) and BLEU-2 uses (0.333, 0.333, 0.334) (3-gram). Those
figures run higher than clean character BLEU because (1) the padding spaces are tokens that match
almost for free (two per CJK character: about 2/3 of every string), and (2) "space + character" and
"character + space" bigrams/trigrams match whenever the character does, so the higher-order
precisions are close to the unigram one. Labelled ``(paper_compat)`` in every report; never compare
them with the clean columns.

``paper_compat=True`` also reports the authors' ROUGE: the ``rouge`` package (1.0.1) itself,
``Rouge().get_scores(hyps, refs, avg=True)`` over the same space-wrapped strings (their ChiMed open-QA
script). That library splits on whitespace (so a Latin word or a digit run stays one token), splits
sentences at ``.``, counts *unique* n-grams and takes a summary-level LCS: a different metric from the
clean character ROUGE, which is why only the ``(paper_compat)`` ROUGE sits beside the paper's columns.
A pair with nothing to score (empty after their tokenisation) makes the package raise; their script
would have stopped there. Here it scores 0 and is counted (``paper_compat_empty_pairs`` in the dialogue result).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from chimed_trl.errors import UserError

# The authors' "CJK" ranges, as written in their script. Two of them ("\u20000", "\u2f800") were meant
# as supplementary-plane code points, but Python reads them as "\u2000" + "0" and "\u2f80" + "0"; their
# string comparison therefore covers U+2001..U+2A6D and U+2F81..U+2FA1 (general punctuation, arrows,
# maths symbols, ...) instead. Kept as written: the point is to reproduce their figures.
AUTHORS_CJK_RANGES = (
    ("\u3400", "\u4db5"),
    ("\u4e00", "\u9fa5"),
    ("\u9fa6", "\u9fbb"),
    ("\uf900", "\ufa2d"),
    ("\ufa30", "\ufa6a"),
    ("\ufa70", "\ufad9"),
    ("\u2000" + "0", "\u2a6d" + "6"),
    ("\u2f80" + "0", "\u2fa1" + "d"),
    ("\uff00", "\uffef"),
    ("\u2e80", "\u2eff"),
    ("\u3000", "\u303f"),
    ("\u31c0", "\u31ef"),
    ("\u2f00", "\u2fdf"),
    ("\u2ff0", "\u2fff"),
    ("\u3100", "\u312f"),
    ("\u31a0", "\u31bf"),
    ("\ufe10", "\ufe1f"),
    ("\ufe30", "\ufe4f"),
    ("\u2600", "\u26ff"),
    ("\u2700", "\u27bf"),
    ("\u3200", "\u32ff"),
    ("\u3300", "\u33ff"),
)
# Their weights: what they label BLEU-1 is a 2-gram BLEU, BLEU-2 a 3-gram one.
AUTHORS_BLEU_WEIGHTS = {"BLEU-1 (paper_compat)": (0.5, 0.5), "BLEU-2 (paper_compat)": (0.333, 0.333, 0.334)}


class CharTokenizer:
    """rouge-score tokenizer: one token per non-space character (its default drops non-ASCII text)."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


def bleu(hypotheses: Sequence[str], references: Sequence[str], max_order: int) -> float:
    """Corpus-level character BLEU, cumulative up to ``max_order``, brevity penalty, no smoothing."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize="char", max_ngram_order=max_order, smooth_method="none")
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=CharTokenizer())
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp, ref in zip(hypotheses, references, strict=True):
        for key, score in scorer.score(ref, hyp).items():
            totals[key] += score.fmeasure
    return {f"{key[:5].upper()}-{key[5:]}": 100 * value / len(hypotheses) for key, value in totals.items()}


def _authors_is_cjk(char: str) -> bool:
    return any(start <= char <= end for start, end in AUTHORS_CJK_RANGES)


def authors_char_tokenize(line: str) -> str:
    """The authors' ``chinese_char_tokenize``: strip, then wrap every 'CJK' character (their ranges) in spaces."""
    return "".join(f" {c} " if _authors_is_cjk(c) else c for c in line.strip())


def paper_compat_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """The authors' BLEU: NLTK ``corpus_bleu`` over the characters (spaces included) of space-wrapped strings."""
    from nltk.translate.bleu_score import corpus_bleu

    hyps = [authors_char_tokenize(h) for h in hypotheses]
    refs = [[authors_char_tokenize(r)] for r in references]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns on zero n-gram overlap; the score is then ~0, as theirs was
        scores = corpus_bleu(refs, hyps, weights=list(AUTHORS_BLEU_WEIGHTS.values()))
    return {name: 100 * float(s) for name, s in zip(AUTHORS_BLEU_WEIGHTS, scores)}


def paper_compat_rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """The authors' ROUGE-1/2/L F (0-100) by the ``rouge`` package on space-wrapped strings; empty pairs score 0."""
    from rouge import Rouge

    hyps = [authors_char_tokenize(h) for h in hypotheses]
    refs = [authors_char_tokenize(r) for r in references]
    scorable = [(h, r) for h, r in zip(hyps, refs, strict=True) if _rouge_scorable(h) and _rouge_scorable(r)]
    scores = {f"ROUGE-{n} (paper_compat)": 0.0 for n in ("1", "2", "L")}
    if scorable:
        averaged = Rouge().get_scores([h for h, _ in scorable], [r for _, r in scorable], avg=True)
        for n in ("1", "2", "L"):  # the package's mean over the scorable pairs, then the empty ones as zeros
            scores[f"ROUGE-{n} (paper_compat)"] = 100 * averaged[f"rouge-{n.lower()}"]["f"] * len(scorable) / len(hyps)
    return scores


def paper_compat_empty_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> int:
    """Pairs the ``rouge`` package refuses (scored 0 by :func:`paper_compat_rouge`)."""
    pairs = zip(hypotheses, references, strict=True)
    return sum(
        not (_rouge_scorable(authors_char_tokenize(h)) and _rouge_scorable(authors_char_tokenize(r))) for h, r in pairs
    )


def _rouge_scorable(text: str) -> bool:
    """The package's own test: some non-empty piece once the text is split at '.' (else "... is empty")."""
    return any(piece for piece in text.split("."))


def pair_rouge_l(hypothesis: str, reference: str) -> float:
    """One pair's clean character ROUGE-L F (0-100): the per-item metric of the dialogue item records."""
    return rouge([hypothesis], [reference])["ROUGE-L"]


def text_scores(hypotheses: Sequence[str], references: Sequence[str], paper_compat: bool = False) -> dict[str, float]:
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        raise UserError("no (hypothesis, reference) pairs to score: the dialogue/open-QA set is empty")
    scores = {"BLEU-1": bleu(hypotheses, references, 1), "BLEU-2": bleu(hypotheses, references, 2)}
    scores.update(rouge(hypotheses, references))
    if paper_compat:
        scores.update(paper_compat_bleu(hypotheses, references))
        scores.update(paper_compat_rouge(hypotheses, references))
    return scores
