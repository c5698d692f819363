"""Answer metrics shared by the teacher's judge, the RL rewards and evaluation.

MaskSearch scores answers by token-level recall against the gold answer, with HotpotQA's
answer normalisation; a RAMP answer (the whole paragraph with its `[mask]`s filled) is
scored span by span: the text that stands where each `[mask]` stood is compared with that
mask's gold span.

  normalize_answer  lower-case, no punctuation, no a/an/the, single spaces.
  token_recall      |common tokens| / |gold tokens|, the best over the gold and its aliases.
  ramp_fills        the texts standing where the `[mask]`s were, or None when the rest of
                    the paragraph was changed.
  ramp_recall       the mean over masks of a span metric (token recall by default).
"""

from __future__ import annotations

import collections
import re
import string
from typing import Callable, Sequence

from masksearch_jax.agent.protocol import MASK

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_WHITESPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
  """HotpotQA / SQuAD answer normalisation.

  Args:
    text: Any answer text.

  Returns:
    `text` lower-cased, without punctuation, without the words a/an/the, with runs of
    whitespace collapsed to one space.
  """
  text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
  """The whitespace tokens of `normalize_answer(text)`, the unit every metric here counts."""
  return normalize_answer(text).split()


def token_recall(prediction: str, golds: str | Sequence[str]) -> float:
  """Token-level recall of `prediction` (MaskSearch's metric), maximised over the golds.

  Recall is |common tokens| / |gold tokens| (a multiset overlap of `answer_tokens`). A gold
  that normalises to nothing is skipped.

  Args:
    prediction: The answer given.
    golds: The gold answer, or the gold answer and its aliases.

  Returns:
    The best recall in [0, 1]; 0.0 when no gold has a token.
  """
  if isinstance(golds, str):
    golds = [golds]
  predicted = collections.Counter(answer_tokens(prediction))
  best = 0.0
  for gold in golds:
    tokens = answer_tokens(gold)
    if not tokens:
      continue
    common = predicted & collections.Counter(tokens)
    best = max(best, sum(common.values()) / len(tokens))
  return best


def _pattern_piece(text: str) -> str:
  """`text` as a regex that lets any run of whitespace stand for any other."""
  return r"\s+".join(re.escape(part) for part in _WHITESPACE.split(text))


def ramp_fills(masked_paragraph: str, paragraph: str) -> list[str] | None:
  """The texts that stand where the `[mask]`s of `masked_paragraph` are in `paragraph`.

  The text around the masks must be kept exactly, except that a run of whitespace may be
  written as another (a tokenizer that turns a double space into one does not lose the
  answer).

  Args:
    masked_paragraph: The paragraph with `[mask]`s.
    paragraph: A filled version of it (a prediction, or the original).

  Returns:
    One text per `[mask]`, in order, stripped; None when `paragraph` does not keep the text
    around the masks (it changed more than the masks).
  """
  pieces = masked_paragraph.strip().split(MASK)
  pattern = "(.*?)".join(_pattern_piece(p) for p in pieces)
  match = re.fullmatch(pattern, paragraph.strip(), re.DOTALL)
  return [g.strip() for g in match.groups()] if match else None


def ramp_recall(masked_paragraph: str, prediction: str, masks: Sequence[str],
                metric: Callable[[str, str], float] = token_recall) -> float:
  """The mean score of the masked spans of a filled paragraph.

  Args:
    masked_paragraph: The paragraph with `[mask]`s.
    prediction: The filled paragraph.
    masks: The gold text of each `[mask]`, in order.
    metric: The score of one fill against its gold span, `metric(fill, gold)` in [0, 1];
      token recall by default.

  Returns:
    The mean over masks of `metric(fill, mask)`; 0.0 when the prediction changed text
    outside the masks or the mask count differs.
  """
  fills = ramp_fills(masked_paragraph, prediction)
  if fills is None or len(fills) != len(masks) or not masks:
    return 0.0
  return sum(metric(fill, gold) for fill, gold in zip(fills, masks)) / len(masks)


__all__ = ["answer_tokens", "normalize_answer", "ramp_fills", "ramp_recall", "token_recall"]
