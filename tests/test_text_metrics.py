"""Tests of the shared answer metrics (masksearch_jax/text_metrics.py)."""

from __future__ import annotations

import pytest

from masksearch_jax import text_metrics as tm
from masksearch_jax.agent import offline_teacher


def test_token_recall_normalises_like_hotpotqa():
  assert tm.normalize_answer("  The Road, to  DOGA! ") == "road to doga"
  assert tm.normalize_answer("an apple a day") == "apple day"
  assert tm.answer_tokens("The Doga-River, 1,234 km") == ["dogariver", "1234", "km"]
  assert tm.token_recall("the Doga River.", "Doga river") == 1.0
  assert tm.token_recall("1234 km", "1,234 km") == 1.0  # Punctuation goes: "1,234" is "1234".
  assert tm.token_recall("", "Doga") == 0.0


def test_token_recall_counts_gold_tokens_and_takes_the_best_alias():
  assert tm.token_recall("Tabudo", "Tabudo Muzu") == 0.5  # Partial answers get partial recall.
  assert tm.token_recall("Tabudo Muzu and more words", "Tabudo Muzu") == 1.0  # Recall ignores extras.
  assert tm.token_recall("Muzu Muzu", "Muzu Muzu Muzu") == pytest.approx(2 / 3)  # A multiset.
  assert tm.token_recall("3 May 1921", ["May 3, 1921", "1921-05-03"]) == 1.0
  assert tm.token_recall("Lazeran", ["Lazera", "Lazeran"]) == 1.0
  assert tm.token_recall("Lazera", ["the", "Lazeran"]) == 0.0  # A gold of articles only is skipped.
  assert tm.token_recall("x", []) == 0.0


def test_ramp_recall_scores_each_mask_and_refuses_edits_outside_them():
  masked = "X was born in [mask] on [mask]."
  assert tm.ramp_fills(masked, "X was born in Vitole on 3 May 1921.") == ["Vitole", "3 May 1921"]
  assert tm.ramp_recall(masked, "X was born in Vitole on 3 May 1921.", ["Vitole", "3 May 1921"]) == 1.0
  assert tm.ramp_recall(masked, "X was born in Vitole on 4 June 1921.", ["Vitole", "3 May 1921"]) == pytest.approx(
      (1 + 1 / 3) / 2)
  assert tm.ramp_recall(masked, "Y was born in Vitole on 3 May 1921.", ["Vitole", "3 May 1921"]) == 0.0
  assert tm.ramp_recall(masked, "X was born in Vitole on 3 May 1921.", ["Vitole"]) == 0.0


def test_ramp_fills_let_whitespace_runs_differ_but_nothing_else():
  masked = "X was born in  [mask]\non [mask]."
  assert tm.ramp_fills(masked, "X was born in Vitole on 3 May 1921.") == ["Vitole", "3 May 1921"]
  assert tm.ramp_fills(masked, "X was born at Vitole on 3 May 1921.") is None
  assert tm.ramp_fills("[mask][mask] end", "AB end") is not None  # Adjacent masks still parse.


def test_ramp_recall_takes_another_span_metric():
  masked = "X was born in [mask]."
  exact = lambda fill, gold: float(tm.normalize_answer(fill) == tm.normalize_answer(gold))  # noqa: E731
  assert tm.ramp_recall(masked, "X was born in Vitole city.", ["Vitole"]) == 1.0
  assert tm.ramp_recall(masked, "X was born in Vitole city.", ["Vitole"], metric=exact) == 0.0


def test_the_offline_teacher_judges_with_these_metrics():
  assert offline_teacher.token_recall is tm.token_recall
  assert offline_teacher.ramp_recall is tm.ramp_recall
