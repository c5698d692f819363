"""EM, F1 and recall against values worked out by hand from the official scripts' definitions.

HotpotQA's `hotpot_evaluate_v1.py` (and 2Wiki's copy of it): normalise (lower, drop punctuation,
drop a/an/the, collapse spaces); EM is equality; F1 is 0 when either side is yes/no/noanswer and
they differ, 0 with no common token, else 2PR/(P+R) over whitespace tokens. MuSiQue's F1 is
SQuAD's: no yes/no rule, and an empty side scores 1 only against another empty side. With
aliases each metric is the maximum over the golds, taken separately.
"""

from __future__ import annotations

import pytest

from masksearch_jax.eval.metrics import (exact_match, f1_rule, hotpot_f1, max_over_golds, score_answer,
                                         squad_f1)
from masksearch_jax.eval.runner import summarize


def test_exact_match_normalises_case_punctuation_articles_and_spaces():
  assert exact_match("The  Beatles!", "beatles") == 1.0
  assert exact_match("an apple", "Apple.") == 1.0
  assert exact_match("Jay-Z", "jay z") == 0.0  # The hyphen is dropped, not a space: "jayz".
  assert exact_match("Jay-Z", "JayZ") == 1.0
  assert exact_match("Paris, France", "Paris") == 0.0


def test_hotpot_f1_by_hand():
  # "eiffel tower" vs "eiffel tower in paris": 2 common, P = 2/2, R = 2/4, F1 = 2 * 1 * .5 / 1.5.
  f1, p, r = hotpot_f1("the Eiffel Tower", "Eiffel tower in Paris")
  assert (p, r) == (1.0, 0.5) and f1 == pytest.approx(2 / 3)
  # Tokens are a multiset: "red" is shared once, "blue" once.
  f1, p, r = hotpot_f1("red red blue", "red blue blue green")
  assert (p, r) == (2 / 3, 2 / 4) and f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
  assert hotpot_f1("London", "Paris") == (0.0, 0.0, 0.0)


def test_hotpot_yes_no_noanswer_rule():
  assert hotpot_f1("yes", "no") == (0.0, 0.0, 0.0)
  assert hotpot_f1("Yes.", "yes") == (1.0, 1.0, 1.0)
  # A longer prediction against a yes/no gold scores 0 in HotpotQA, though the tokens overlap ...
  assert hotpot_f1("yes it is", "yes") == (0.0, 0.0, 0.0)
  assert hotpot_f1("no", "no way") == (0.0, 0.0, 0.0)
  assert hotpot_f1("no answer", "noanswer") == (0.0, 0.0, 0.0)
  # ... and 0.5 with SQuAD's rule (MuSiQue): P = 1/3, R = 1, F1 = 2 * (1/3) / (4/3).
  assert squad_f1("yes it is", "yes") == pytest.approx(0.5)


def test_empty_answers_differ_between_the_two_rules():
  assert hotpot_f1("", "")[0] == 0.0 and exact_match("", "") == 1.0
  assert squad_f1("", "") == 1.0 and squad_f1("the", "") == 1.0  # "the" normalises to nothing.
  assert squad_f1("", "Paris") == 0.0 and squad_f1("Paris", "") == 0.0


def test_musique_max_over_aliases():
  golds = ["Barack Obama", "Obama"]
  # vs "barack obama": P = R = 1/2, F1 = 1/2; vs "obama": P = 1/2, R = 1, F1 = 2/3.
  scores = score_answer("President Obama", golds, rule=f1_rule("musique"))
  assert scores.em == 0.0 and scores.f1 == pytest.approx(2 / 3) and scores.recall == 1.0
  assert score_answer("obama", golds, "squad").em == 1.0


def test_2wiki_max_over_aliases_taken_per_metric():
  golds = ["United States", "USA", "America"]
  # "united states of america": vs "united states" P = 2/4, R = 1, F1 = 2/3; vs "america" F1 = 2 * .25 / 1.25.
  scores = score_answer("the United States of America", golds, rule=f1_rule("2wiki"))
  assert scores.em == 0.0 and scores.f1 == pytest.approx(2 / 3) and scores.recall == 1.0
  assert max_over_golds(lambda p, g: hotpot_f1(p, g)[0], "America", golds) == 1.0
  assert f1_rule("2wiki") == f1_rule("hotpotqa") == "hotpot"


def test_no_answer_scores_zero_and_recall_is_maskSearch_token_recall():
  assert score_answer(None, ["Paris"]) == score_answer("", ["Paris"])
  assert score_answer(None, ["Paris"]).em == 0.0
  # Recall = |common| / |gold|: "born in 1921 in vitole" against "3 May 1921" -> 1 of 3.
  assert score_answer("born in 1921 in Vitole", ["3 May 1921"]).recall == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="unknown F1 rule"):
    score_answer("a", ["b"], rule="bleu")


def test_means_equal_what_the_hotpot_script_prints():
  # Three questions: EM 1, 0, 0; F1 1, 2/3, 0 -> the script prints em 33.33, f1 55.56.
  rows = [("Paris", ["paris"]), ("the Eiffel Tower", ["Eiffel tower in Paris"]), ("yes", ["no"])]
  records = []
  for prediction, golds in rows:
    s = score_answer(prediction, golds)
    records.append({"prediction": prediction, "stop_reason": "answer", "searches": 1, "turns": 2,
                    "search_errors": 0, "scored": True, "em": s.em, "f1": s.f1, "recall": s.recall, "judge": None})
  summary = summarize(records)
  assert round(summary["em"] * 100, 2) == 33.33 and round(summary["f1"] * 100, 2) == 55.56
  assert summary["judge"] is None and summary["avg_searches"] == 1 and summary["avg_turns"] == 2
