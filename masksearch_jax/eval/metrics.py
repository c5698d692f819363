"""Answer metrics as the benchmarks' official scripts compute them.

All of them first normalise answers the HotpotQA / SQuAD way (`text_metrics.normalize_answer`:
lower case, no punctuation, no a/an/the, single spaces) and count whitespace tokens.

  exact_match   1.0 when the normalised texts are equal (HotpotQA, 2Wiki, MuSiQue, FlashRAG).
  hotpot_f1     HotpotQA's `hotpot_evaluate_v1.py` F1 (and 2Wiki's, which copies it): when
                either side normalises to "yes", "no" or "noanswer" and the two differ, F1,
                precision and recall are 0; with no common token they are 0 (so two empty
                answers score 0 F1, though their EM is 1).
  squad_f1      MuSiQue's F1 (SQuAD v2's `compute_f1`): no yes/no rule; when either side has
                no token, 1.0 if both have none, else 0.
  token_recall  MaskSearch's metric, |common tokens| / |gold tokens| (`text_metrics`).

Several gold answers (MuSiQue's and 2Wiki's aliases, FlashRAG's golden_answers) take the
maximum of each metric over the golds separately, as those scripts do. `score_answer` gives
all metrics of one prediction with the F1 rule of its benchmark (`f1_rule`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Sequence

from masksearch_jax.text_metrics import normalize_answer, token_recall

# Normalised answers that only match themselves in HotpotQA's F1.
HOTPOT_SPECIAL_ANSWERS = ("yes", "no", "noanswer")
# Which F1 each benchmark's official scorer uses; any other benchmark uses HotpotQA's.
F1_RULES = {"musique": "squad"}


def exact_match(prediction: str, gold: str) -> float:
  """1.0 when prediction and gold are equal after normalisation, else 0.0."""
  return float(normalize_answer(prediction) == normalize_answer(gold))


def hotpot_f1(prediction: str, gold: str) -> tuple[float, float, float]:
  """(F1, precision, recall) of HotpotQA's `hotpot_evaluate_v1.py`.

  Args:
    prediction: The predicted answer.
    gold: One gold answer.

  Returns:
    (f1, precision, recall); all 0 when either side normalises to yes/no/noanswer and they
    differ, or when no token is shared.
  """
  pred, ref = normalize_answer(prediction), normalize_answer(gold)
  if (pred in HOTPOT_SPECIAL_ANSWERS or ref in HOTPOT_SPECIAL_ANSWERS) and pred != ref:
    return 0.0, 0.0, 0.0
  pred_tokens, ref_tokens = pred.split(), ref.split()
  same = sum((collections.Counter(pred_tokens) & collections.Counter(ref_tokens)).values())
  if same == 0:
    return 0.0, 0.0, 0.0
  precision, recall = same / len(pred_tokens), same / len(ref_tokens)
  return 2 * precision * recall / (precision + recall), precision, recall


def squad_f1(prediction: str, gold: str) -> float:
  """MuSiQue's (SQuAD v2's) F1: an empty side scores 1.0 only against another empty side."""
  pred_tokens, ref_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not pred_tokens or not ref_tokens:
    return float(pred_tokens == ref_tokens)
  same = sum((collections.Counter(pred_tokens) & collections.Counter(ref_tokens)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(ref_tokens)
  return 2 * precision * recall / (precision + recall)


def max_over_golds(metric: Callable[[str, str], float], prediction: str, golds: str | Sequence[str]) -> float:
  """The best `metric(prediction, gold)` over the golds (0.0 when there is none)."""
  if isinstance(golds, str):
    golds = [golds]
  return max((metric(prediction, gold) for gold in golds), default=0.0)


def f1_rule(benchmark: str) -> str:
  """'squad' for benchmarks scored with SQuAD's F1 (MuSiQue), else 'hotpot'."""
  return F1_RULES.get(benchmark, "hotpot")


@dataclasses.dataclass(frozen=True)
class AnswerScores:
  """The metrics of one prediction, each the maximum over the gold answers.

  Attributes:
    em: Exact match, 0 or 1.
    f1: F1 with the benchmark's rule.
    recall: Token-level recall (MaskSearch's metric).
  """

  em: float
  f1: float
  recall: float


def score_answer(prediction: str | None, golds: str | Sequence[str], rule: str = "hotpot") -> AnswerScores:
  """EM, F1 and token recall of a prediction against the gold answer and its aliases.

  Args:
    prediction: The predicted answer; None (no answer) is scored as the empty string, which
      is what the official scripts see when a prediction file holds "".
    golds: The gold answer, or the gold answer followed by its aliases.
    rule: 'hotpot' (HotpotQA, 2Wiki, FlashRAG: the yes/no rule) or 'squad' (MuSiQue).

  Returns:
    The scores.
  """
  if rule not in ("hotpot", "squad"):
    raise ValueError(f"unknown F1 rule {rule!r}; expected 'hotpot' or 'squad'")
  text = prediction or ""
  f1 = (lambda p, g: hotpot_f1(p, g)[0]) if rule == "hotpot" else squad_f1
  return AnswerScores(em=max_over_golds(exact_match, text, golds), f1=max_over_golds(f1, text, golds),
                      recall=token_recall(text, golds))


__all__ = ["AnswerScores", "exact_match", "f1_rule", "hotpot_f1", "max_over_golds", "normalize_answer",
           "score_answer", "squad_f1", "token_recall"]
