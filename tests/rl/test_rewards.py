"""Tests of the RL rewards (masksearch_jax/rl/rewards.py), with hand-made responses.

The judge tests talk to a scripted OpenAI-compatible server on loopback (`fake_openai`).
"""

from __future__ import annotations

import gin
import numpy as np
import pytest
from fake_openai_server import Reply

from masksearch_jax.agent import protocol
from masksearch_jax.agent.llm_backends import OpenAICompatibleBackend
from masksearch_jax.data.trajectories import MODEL, OBSERVATION, Segment, Trajectory
from masksearch_jax.rl import rewards
from masksearch_jax.text_metrics import token_recall

OBSERVATION_TEXT = protocol.format_observation([
    ("Tabudo Muzu", "Tabudo Muzu (3 May 1921 - 1990) was a Lazeran painter born in Vitole."),
    ("Vitole", "Vitole is a city in Lazera with 120,000 inhabitants, on the Doga river."),
    ("Doga", "The Doga river flows through Vitole, Kelo and Rani."),
])
FIVE_CANDIDATES = "Vitole, Doga, Kelo, Rani or Muzu"


def _response(answer: str, *, searches: int = 1) -> tuple[Segment, ...]:
  segments = []
  for i in range(searches):
    segments.append(Segment(MODEL, f"<think> I need fact {i}. </think>\n<search> Tabudo Muzu birthplace </search>"))
    segments.append(Segment(OBSERVATION, f"\n\n{OBSERVATION_TEXT}\n\n"))
  segments.append(Segment(MODEL, f"<think> The results say it. </think>\n<answer> {answer} </answer>"))
  return tuple(segments)


def _qa(answer: str | None, gold=("Vitole",), **kwargs) -> rewards.RewardInput:
  response = kwargs.pop("response", None) or _response(answer if answer is not None else "x")
  return rewards.RewardInput(kind="qa", task="Where was Tabudo Muzu born?", gold=tuple(gold), response=response,
                             answer=answer, **kwargs)


# -- answer rewards -----------------------------------------------------------------------------


def test_candidate_count_splits_lists_but_not_dates_or_numbers():
  assert rewards.candidate_count(FIVE_CANDIDATES) == 5
  assert rewards.candidate_count("Vitole; Kelo | Rani\nDoga & Muzu") == 5
  assert rewards.candidate_count("Tom and Jerry") == 2
  assert rewards.candidate_count("May 3, 1921") == 1
  assert rewards.candidate_count("1,234 km") == 1
  assert rewards.candidate_count("Vitole") == 1
  assert rewards.candidate_count("") == 0
  assert rewards.candidate_count(", or ,") == 0  # Pieces without a token are not items.


def test_penalized_recall_by_hand():
  assert rewards.penalized_recall("Vitole", "Vitole") == 1.0
  # "the city of Vitole" -> [city, of, vitole]: 3 tokens, 1 gold token + 2 free: no penalty.
  assert rewards.penalized_recall("the city of Vitole", "Vitole") == 1.0
  # "Tabudo Muzu was a painter" -> 4 tokens; gold 2 tokens; slack 0 -> recall 1 * 2/4.
  assert rewards.penalized_recall("Tabudo Muzu was a painter", "Tabudo Muzu", length_slack=0) == 0.5
  assert rewards.penalized_recall("Tabudo Muzu was a painter", "Tabudo Muzu", length_slack=2) == 1.0
  # Partial recall is kept as it is when short: 1 of 2 gold tokens.
  assert rewards.penalized_recall("Tabudo", "Tabudo Muzu") == 0.5
  assert rewards.penalized_recall("3 May 1921", "May 3, 1921") == 1.0
  assert rewards.penalized_recall("Tom and Jerry", "Tom and Jerry") == 1.0  # A listed gold allows its items.
  assert rewards.penalized_recall("Doga", ["Vitole", "Doga river"]) == 0.5  # The best gold.
  assert rewards.penalized_recall("", "Vitole") == 0.0
  assert rewards.penalized_recall("Vitole", ["the", ""]) == 0.0
  with pytest.raises(ValueError, match="length_slack"):
    rewards.penalized_recall("Vitole", "Vitole", length_slack=-1)


def test_listing_five_candidates_games_recall_but_not_penalized_recall():
  assert token_recall(FIVE_CANDIDATES, "Vitole") == 1.0  # The hack works on plain recall.
  # [vitole, doga, kelo, rani, or, muzu]: 6 tokens for a 1-token gold, length factor (1 + 2) / 6;
  # 4 extra items: divided by 5.
  assert rewards.penalized_recall(FIVE_CANDIDATES, "Vitole") == pytest.approx(3 / 6 / 5)
  # Listing is worth less than guessing one of the five at random (expected 1/5).
  assert rewards.penalized_recall(FIVE_CANDIDATES, "Vitole") < 1 / 5


def test_copying_the_whole_observation_games_recall_but_not_penalized_recall():
  assert token_recall(OBSERVATION_TEXT, "Vitole") == 1.0
  assert token_recall(OBSERVATION_TEXT, "3 May 1921") == 1.0
  assert rewards.penalized_recall(OBSERVATION_TEXT, "Vitole") < 0.02
  assert rewards.penalized_recall(OBSERVATION_TEXT, "3 May 1921") < 0.05


def test_answer_recall_of_qa_and_ramp_items():
  assert rewards.answer_recall(_qa(FIVE_CANDIDATES)) == 1.0
  assert rewards.answer_recall(_qa(FIVE_CANDIDATES), penalized=True) == pytest.approx(0.1)
  assert rewards.answer_recall(_qa(None)) == 0.0
  masked = "Tabudo Muzu was born in [mask] on [mask]."
  gold = "Tabudo Muzu was born in Vitole on 3 May 1921."
  item = rewards.RewardInput(kind="ramp", task=masked, gold=(gold,), response=_response(gold), answer=gold)
  assert item.masks == ("Vitole", "3 May 1921")  # Read off the gold paragraph.
  assert rewards.answer_recall(item) == rewards.answer_recall(item, penalized=True) == 1.0
  listed = "Tabudo Muzu was born in Vitole, Doga or Kelo on 3 May 1921."
  item = rewards.RewardInput(kind="ramp", task=masked, gold=(gold,), response=_response(listed), answer=listed)
  assert rewards.answer_recall(item) == 1.0
  # The first fill, [vitole, doga, or, kelo], has 4 tokens for 1 + 2 free and lists 3 items:
  # 3/4 / 3; the second is exact: the mean is (1/4 + 1) / 2.
  assert rewards.answer_recall(item, penalized=True) == pytest.approx((1 / 4 + 1) / 2)
  changed = "Tabudo Muzu died in Vitole on 3 May 1921."
  item = rewards.RewardInput(kind="ramp", task=masked, gold=(gold,), response=_response(changed), answer=changed)
  assert rewards.answer_recall(item) == 0.0  # Text outside the masks was changed.


def test_reward_inputs_are_checked():
  with pytest.raises(ValueError, match="kind"):
    rewards.RewardInput(kind="math", task="1+1", gold=("2",), response="", answer="2")
  with pytest.raises(ValueError, match="gold answer"):
    rewards.RewardInput(kind="qa", task="Where?", gold=(), response="", answer="x")
  with pytest.raises(ValueError, match="does not fit"):
    rewards.RewardInput(kind="ramp", task="A [mask] b.", gold=("C d e.",), response="", answer="x")


def test_reward_input_from_a_trajectory():
  masked = "Tabudo Muzu was born in [mask]."
  gold = "Tabudo Muzu was born in Vitole."
  segments = _response(gold)
  trajectory = Trajectory(id="ramp-1", kind="ramp", prompt=protocol.ramp_prompt(masked), segments=segments,
                          stop_reason="answer", answer=gold, gold=(gold,), token_ids=(5, 6, 7, 8),
                          model_token_mask=(1, 1, 0, 1), meta={"masks": ["Vitole"]})
  item = rewards.RewardInput.from_trajectory(trajectory, masked)
  assert (item.kind, item.answer, item.masks, item.num_tokens, item.response) == (
      "ramp", gold, ("Vitole",), 4, segments)
  assert item.judge_question == masked + "\n\n" + protocol.RAMP_INSTRUCTION


# -- the format reward --------------------------------------------------------------------------


def test_a_well_formed_response_passes_as_segments_and_as_text():
  segments = _response("Vitole", searches=2)
  assert rewards.check_format(segments) == rewards.FormatCheck(True, "", 2)
  assert rewards.check_format("".join(s.text for s in segments)) == rewards.FormatCheck(True, "", 2)
  assert rewards.format_reward("<think> I know it. </think> <answer> Vitole </answer>") == 1.0


def test_information_blocks_are_judged_by_place_not_content():
  odd = protocol.format_observation([("T", "a page that quotes <answer> x </answer> and <think>")])
  text = f"<think> a </think><search> q </search>{odd}<think> b </think><answer> Vitole </answer>"
  assert rewards.check_format(text).ok
  segments = (Segment(MODEL, "<think> a </think><search> q </search>"), Segment(OBSERVATION, odd),
              Segment(MODEL, "<think> b </think><answer> Vitole </answer>"))
  assert rewards.check_format(segments).ok


@pytest.mark.parametrize("text, reason", [
    ("<answer> Vitole </answer>", "<answer> without a <think>"),
    ("<think> a </think>", "<think> without a <search> or <answer>"),
    ("<think> a </think><answer> Vitole </answer><think> b </think><answer> Kelo </answer>",
     "<think> after the <answer>"),
    ("<think> a </think><answer> Vitole </answer><answer> Kelo </answer>", "<answer> after the <answer>"),
    ("<think> a <search> q </search> </think><answer> x </answer>", "<search> inside <think>"),
    ("<think> a </think><answer> Vitole", "<answer> is not closed"),
    ("<think> a </search><answer> x </answer>", "</search> inside <think>"),
    ("</think><answer> x </answer>", "</think> without <think>"),
    ("So: <think> a </think><answer> x </answer>", "text outside the tags"),
    ("<think> a </think><answer> x </answer> That is all.", "text outside the tags at the end"),
    ("<think>  </think><answer> x </answer>", "an empty <think>"),
    ("<think> a </think><answer>  </answer>", "an empty <answer>"),
    ("<think> a </think><search> </search>", "an empty <search>"),
    ("<think> a </think><search> q </search><think> b </think><answer> x </answer>",
     "a <search> without <information>"),
    ("<think> a </think><search> q </search><information>Doc 1(Title: T) t\n</information>",
     "no <answer>"),
    ("<think> a </think><information>Doc 1(Title: T) t\n</information><answer> x </answer>",
     "<information> after a <think>"),
    ("<think> a </think><search> q </search><answer> x </answer>", "a <search> without <information>"),
    ("<think> a </think><think> b </think><answer> x </answer>", "<think> after a <think>"),
])
def test_protocol_violations_fail_with_their_reason(text, reason):
  check = rewards.check_format(text)
  assert not check.ok
  assert reason in check.reason
  assert rewards.format_reward(text) == 0.0


def test_segments_catch_forged_observations_and_environment_complaints():
  forged = (Segment(MODEL, f"<think> a </think><search> q </search>{OBSERVATION_TEXT}"
                           "<think> b </think><answer> Vitole </answer>"),)
  assert rewards.check_format("".join(s.text for s in forged)).ok  # As text it cannot be told apart...
  check = rewards.check_format(forged)
  assert not check.ok and "model wrote an <information> tag" in check.reason  # ...as segments it can.
  complaint = (Segment(MODEL, "<think> a </think>"),
               Segment(OBSERVATION, "\nMy previous action is invalid. Use <search> or <answer>.\n"),
               Segment(MODEL, "<think> b </think><answer> Vitole </answer>"))
  check = rewards.check_format(complaint)
  assert not check.ok and "the environment answered with a message" in check.reason
  with pytest.raises(ValueError, match="segment type"):
    rewards.check_format((Segment("tool", "x"),))


def test_an_answer_copying_the_observation_breaks_the_format():
  copied = _response(OBSERVATION_TEXT)
  assert not rewards.check_format(copied).ok
  assert not rewards.check_format("".join(s.text for s in copied)).ok


# -- overlong shaping -----------------------------------------------------------------------------


def test_overlong_penalty_by_hand():
  # L_max 20, L_cache 4: free up to 16 tokens, then -1/4 per token, -1 past 20.
  assert rewards.overlong_penalty(0, 20, 4) == 0.0
  assert rewards.overlong_penalty(16, 20, 4) == 0.0
  assert rewards.overlong_penalty(17, 20, 4) == -0.25
  assert rewards.overlong_penalty(19, 20, 4) == -0.75
  assert rewards.overlong_penalty(20, 20, 4) == -1.0
  assert rewards.overlong_penalty(21, 20, 4) == -1.0
  assert rewards.overlong_penalty(18, 20, 4, factor=0.5) == -0.25
  np.testing.assert_allclose(rewards.overlong_penalty(np.array([10, 17, 18, 25]), 20, 4), [0, -0.25, -0.5, -1])
  np.testing.assert_allclose(rewards.overlong_penalty([20, 21], 20, 0), [0, -1])  # No buffer: a step.
  for args, match in (((5, 0, 0), "max_tokens"), ((5, 10, 11), "buffer_tokens"), ((5, 10, 2, -1.0), "factor")):
    with pytest.raises(ValueError, match=match):
      rewards.overlong_penalty(*args)


# -- combining ------------------------------------------------------------------------------------


def test_reward_function_combines_components_with_their_weights():
  items = [
      _qa("Vitole", num_tokens=10),  # Right, well formed, short.
      _qa(FIVE_CANDIDATES, num_tokens=18),  # Enumerated, well formed, in the buffer.
      _qa("Vitole", response="<answer> Vitole </answer>", num_tokens=30),  # Right, malformed, too long.
      _qa(None, response="<think> hm </think>", num_tokens=5),  # No answer.
  ]
  function = rewards.RewardFunction(answer_reward="penalized_recall", answer_weight=1.0, format_weight=0.5,
                                    overlong_max_tokens=20, overlong_buffer_tokens=4, overlong_penalty_factor=1.0)
  batch = function(items)
  np.testing.assert_allclose(batch.components["recall"], [1, 1, 1, 0])
  np.testing.assert_allclose(batch.components["penalized_recall"], [1, 0.1, 1, 0])
  np.testing.assert_allclose(batch.components["answer"], [1, 0.1, 1, 0])
  np.testing.assert_allclose(batch.components["format"], [1, 1, 0, 0])
  np.testing.assert_allclose(batch.components["overlong"], [0, -0.5, -1, 0])
  np.testing.assert_allclose(batch.components["searches"], [1, 1, 0, 0])
  np.testing.assert_allclose(batch.total, [1.5, 0.1 + 0.5 - 0.5, 1 - 1, 0])
  assert batch.metrics["reward/total"] == pytest.approx(np.mean(batch.total))
  assert batch.metrics["reward/format"] == 0.5
  assert batch.metrics["searches_per_response"] == 0.5

  gated = rewards.RewardFunction(answer_reward="recall", format_weight=0.0, format_gates_answer=True)(items)
  np.testing.assert_allclose(gated.total, [1, 1, 0, 0])  # Overlong off, malformed answers earn nothing.
  np.testing.assert_allclose(gated.components["overlong"], 0)


def test_reward_function_settings_are_checked():
  with pytest.raises(ValueError, match="answer_reward"):
    rewards.RewardFunction(answer_reward="f1")
  with pytest.raises(ValueError, match="needs RewardFunction.judge"):
    rewards.RewardFunction(answer_reward="judge")
  with pytest.raises(ValueError, match="weights"):
    rewards.RewardFunction(format_weight=-1)
  with pytest.raises(ValueError, match="buffer_tokens"):
    rewards.RewardFunction(overlong_max_tokens=10, overlong_buffer_tokens=20)
  with pytest.raises(ValueError, match="num_tokens"):
    rewards.RewardFunction(overlong_max_tokens=10, overlong_buffer_tokens=2)([_qa("Vitole")])


def test_reward_function_from_gin():
  gin.clear_config()
  try:
    gin.parse_config("""
        import masksearch_jax.rl.rewards
        masksearch_jax.rl.rewards.RewardFunction.answer_reward = "recall"
        masksearch_jax.rl.rewards.RewardFunction.format_weight = 0.25
        masksearch_jax.rl.rewards.RewardFunction.overlong_max_tokens = 100
        masksearch_jax.rl.rewards.RewardFunction.overlong_buffer_tokens = 10
        masksearch_jax.rl.rewards.RewardFunction.overlong_penalty_factor = 2.0
    """)
    batch = rewards.RewardFunction()([_qa(FIVE_CANDIDATES, num_tokens=95)])
  finally:
    gin.clear_config()
  np.testing.assert_allclose(batch.total, [1 + 0.25 - 2 * 0.5])


# -- the judge --------------------------------------------------------------------------------------


def _marker(answer: str) -> str:
  return f"Predicted answer: {answer}\n"  # The judge prompt's line, whole.


def test_judge_reward_through_a_real_http_server(fake_openai):
  server = fake_openai({
      _marker("Vitole"): [Reply("correct")],
      _marker("Kelo"): [Reply('{"judgement": "incorrect"}')],
      _marker("city of Vitole"): [Reply("Well, it depends.")],  # No verdict.
      _marker("Rani"): [Reply("context length exceeded", status=400)],
      _marker("Tabudo"): [Reply("correct", delay=2.0)],  # Past the backend's request timeout.
  })
  masked = "Tabudo Muzu was born in [mask]."
  gold = "Tabudo Muzu was born in Vitole."
  ramp = rewards.RewardInput(kind="ramp", task=masked, gold=(gold,), response=_response(gold), answer=gold)
  items = [_qa("Vitole"), _qa("Kelo"), _qa("city of Vitole"), _qa("Rani"), _qa("Tabudo"), _qa(None),
           _qa(FIVE_CANDIDATES)]
  with OpenAICompatibleBackend(server.base_url, "judge", timeout=0.5, max_retries=0, concurrency=4) as backend:
    judge = rewards.JudgeReward(backend, timeout=30.0)
    function = rewards.RewardFunction(answer_reward="judge", judge=judge, format_weight=0.0)
    batch = function(items)
    ramp_batch = function([ramp])
  # The unscripted enumeration gets the server's default reply "[]": no verdict, a fallback.
  np.testing.assert_allclose(batch.components["judge_fallback"], [0, 0, 1, 1, 1, 0, 1])
  # Fallbacks score by penalised recall: "city of Vitole" 1, "Rani" 0, "Tabudo" 0, the list 0.1.
  np.testing.assert_allclose(batch.components["answer"], [1, 0, 1, 0, 0, 0, 0.1])
  assert batch.metrics["judge/fallback_malformed"] == 2
  assert batch.metrics["judge/fallback_llm_error"] == 1
  assert batch.metrics["judge/fallback_timeout"] == 1
  assert batch.metrics["judge/fallback_share"] == pytest.approx(4 / 7)
  # Unscripted, so no verdict: the RAMP answer's penalised recall, 1, stands in.
  assert ramp_batch.components["judge_fallback"].tolist() == [1.0]
  assert ramp_batch.total.tolist() == ramp_batch.components["answer"].tolist() == [1.0]
  assert judge.stats.asked == 7 and judge.stats.judged == 2 and judge.stats.correct == 1
  assert judge.stats.fallbacks == {"malformed": 3, "llm_error": 1, "timeout": 1}
  assert judge.stats.fallback_total == 5
  # The answerless item was not asked; the RAMP question carried the filled-span rule.
  assert len(server.requests) == 7
  ramp_request = server.requests[-1][1]["messages"][-1]["content"]
  assert "every filled-in span" in ramp_request and protocol.RAMP_INSTRUCTION in ramp_request


def test_judge_reward_batch_deadline_falls_back_for_the_whole_batch(fake_openai):
  server = fake_openai(default=Reply("correct", delay=1.5))
  with OpenAICompatibleBackend(server.base_url, "judge", timeout=10.0, max_retries=0) as backend:
    judge = rewards.JudgeReward(backend, timeout=0.2)
    verdicts = judge.verdicts([_qa("Vitole"), _qa("Kelo"), _qa(None)])
    assert verdicts == ["timeout", "timeout", False]
    assert judge.stats.fallbacks == {"timeout": 2} and judge.stats.judged == 0


def test_judge_reward_settings():
  with pytest.raises(ValueError, match="backend"):
    rewards.JudgeReward()
  with pytest.raises(ValueError, match="timeout"):
    rewards.JudgeReward(OpenAICompatibleBackend("http://127.0.0.1:9/v1", "judge"), timeout=0)
