"""The multi-turn search loop.

Most tests drive the loop with `ScriptedPolicy` (conftest.py), which writes prescribed turns and records every
token the loop appends to each row, so they can check what the environment sends and when. The
last tests run the real KV-cache sampler and check every recorded token and log-probability
against one forward pass over the whole episode.
"""

from __future__ import annotations

import jax
import numpy as np

from masksearch_jax.agent import protocol
from masksearch_jax.agent.rollout import (INVALID_ACTION_MESSAGE, RolloutConfig, RolloutTask, SearchAgent,
                                          parse_action)
from masksearch_jax.data.trajectories import (MODEL, OBSERVATION, ContextEncoder, TrajectoryWriter,
                                              read_trajectories)
from masksearch_jax.models.transformer import Decoder
from masksearch_jax.retrieval.client import HttpRetriever, RetrievalError
from masksearch_jax.retrieval.retriever import Retriever
from masksearch_jax.retrieval.server import make_server


class RecordingRetriever(Retriever):
  """Passes searches to a real retriever, records each batch, and fails when told to."""

  def __init__(self, inner: Retriever, fail_calls: int = 0, poison: str | None = None):
    self.inner = inner
    self.calls: list[list[str]] = []
    self.fail_calls = fail_calls
    self.poison = poison

  def batch_search(self, queries, top_k=5):
    self.calls.append(list(queries))
    if self.fail_calls:
      self.fail_calls -= 1
      raise RetrievalError("server is down")
    if self.poison and any(self.poison in q for q in queries):
      raise RetrievalError(f"cannot search {self.poison!r}")
    return self.inner.batch_search(queries, top_k)


def agent_for(vocab, retriever, scripts, **limits):
  from conftest import ScriptedPolicy
  options = dict(batch_size=2, max_turns=4, max_turn_tokens=200, max_observation_tokens=400, max_length=1500,
                 top_k=2, retry_backoff=0.0)
  options.update(limits)
  rollout = RolloutConfig(**options)
  policy = ScriptedPolicy(vocab, scripts, batch_size=rollout.batch_size, capacity=rollout.max_length,
                          max_new_tokens=rollout.max_turn_tokens)
  return SearchAgent(None, None, vocab, retriever, rollout, sampler=policy), policy


def think(text):
  return f"<think> {text} </think>\n"


def search(query):
  return f"<search> {query} </search>"


def answer(text):
  return f"<answer> {text} </answer>"


PARIS = protocol.qa_prompt("What is the capital of France?")
SEINE = protocol.qa_prompt("Which river flows through Paris?")
DIRECT = protocol.qa_prompt("Who was born in the city?")
MASKED = protocol.ramp_prompt("The [mask] of France is Paris.")

SCRIPTS = {
    PARIS: [think("I need the capital.") + search("capital of france"), think("Found it.") + answer("Paris")],
    SEINE: [think("Search the river.") + search("river seine flows through"), "I am not sure what to do",
            think("Answer now.") + answer("Seine")],
    DIRECT: [think("I know this.") + answer("Kelo")],
    MASKED: [think("Search.") + search("paris capital"), think("Done.") + answer("The capital of France is Paris.")],
}


def tasks():
  return [RolloutTask("paris", "qa", PARIS, gold=("Paris",)), RolloutTask("seine", "qa", SEINE, gold=("Seine",)),
          RolloutTask("direct", "qa", DIRECT, gold=("Kelo",)),
          RolloutTask("masked", "ramp", MASKED, gold=("capital",), exclude_ids=("p-paris-1",))]


def test_parse_action_reads_the_first_complete_tag():
  assert parse_action(think("x") + search(" a b ")) == ("search", "a b")
  assert parse_action(think("x") + answer("Paris")) == ("answer", "Paris")
  assert parse_action("<search></search>") is None
  assert parse_action("<search> unfinished") is None
  assert parse_action("no tags") is None


def test_the_loop_batches_searches_appends_only_new_tokens_and_records_everything(vocab, retriever):
  recording = RecordingRetriever(retriever)
  agent, policy = agent_for(vocab, recording, SCRIPTS)
  trajectories = {t.id: t for t in agent.run(tasks())}
  assert set(trajectories) == {"paris", "seine", "direct", "masked"}

  # Turn 1 runs paris and seine together: both queries go in one batch. Later turns refill the finished
  # rows' slots with waiting tasks (continuous batching).
  # Then paris answers and direct takes its row; seine and direct answer and masked takes a row.
  assert recording.calls == [["capital of france", "river seine flows through"], ["paris capital"]]
  paris = trajectories["paris"]
  assert paris.stop_reason == "answer" and paris.answer == "Paris"
  assert paris.searches == ("capital of france",)
  assert [s.type for s in paris.segments] == [MODEL, OBSERVATION, MODEL]
  assert "p-paris-1" not in paris.segments[1].text and "Doc 1(Title: Paris)" in paris.segments[1].text
  assert paris.segments[1].text.startswith("\n\n<information>") and paris.segments[1].text.endswith("</information>\n\n")

  # The row got its prompt once, then only the observation's tokens: the context is never re-sent.
  encoder = ContextEncoder(vocab)
  chunks = policy.appended[PARIS]
  assert chunks[0] == [0] + encoder.encode(PARIS, start_of_sequence=True)
  assert len(chunks) == 2 and chunks[1] == encoder.encode(paris.segments[1].text)

  # Token ids, the model/environment mask and log-probabilities line up with the segments.
  expected_ids, expected_mask = [], []
  for segment in paris.segments:
    ids = encoder.encode(segment.text)
    expected_ids += ids
    expected_mask += [1 if segment.type == MODEL else 0] * len(ids)
  assert list(paris.token_ids) == expected_ids and list(paris.model_token_mask) == expected_mask
  assert all((p is None) == (m == 0) for p, m in zip(paris.logprobs, paris.model_token_mask))
  assert paris.prompt_token_ids == tuple(encoder.encode(PARIS, start_of_sequence=True))
  assert paris.gold == ("Paris",) and paris.tokenizer is not None

  # An unparseable turn gets Search-R1's corrective message and the episode goes on.
  seine = trajectories["seine"]
  assert seine.stop_reason == "answer" and seine.answer == "Seine"
  assert [s.type for s in seine.segments] == [MODEL, OBSERVATION, MODEL, OBSERVATION, MODEL]
  assert seine.segments[3].text == INVALID_ACTION_MESSAGE
  assert seine.meta["invalid_turns"] == 1 and seine.meta["turns"] == 3

  assert trajectories["direct"].searches == () and trajectories["direct"].answer == "Kelo"
  # A RAMP row never sees its own source passage, even though it ranks first for the query.
  masked = trajectories["masked"]
  assert retriever.search("paris capital", 1)[0].id == "p-paris-1"
  assert "Paris is the capital" not in masked.segments[1].text
  assert masked.segments[1].text.count("Doc ") == 2
  stats = agent.stats
  assert stats.episodes == 4 and stats.searches == 3 and stats.invalid_turns == 1
  assert stats.stop_reasons == {"answer": 4}


def test_limits_on_turns_length_and_observations(vocab, retriever):
  looping = protocol.qa_prompt("Loop forever?")
  scripts = {looping: [think("again") + search("capital of france")] * 10,
             PARIS: SCRIPTS[PARIS]}
  agent, _ = agent_for(vocab, retriever, scripts, max_turns=3, max_observation_tokens=30)
  out = {t.prompt: t for t in agent.run([RolloutTask("loop", "qa", looping), RolloutTask("p", "qa", PARIS)])}
  loop = out[looping]
  assert loop.stop_reason == "max_turns" and len(loop.searches) == 2 and loop.meta["turns"] == 3
  encoder = ContextEncoder(vocab)
  for segment in loop.segments:
    if segment.type == OBSERVATION:
      ids = encoder.encode(segment.text)
      assert len(ids) <= 30 and segment.text.endswith("</information>\n\n")

  # The total budget: the episode stops when the cache is full or an observation no longer fits.
  agent, _ = agent_for(vocab, retriever, scripts, max_length=260, max_observation_tokens=400)
  out = {t.prompt: t for t in agent.run([RolloutTask("loop", "qa", looping)])}
  assert out[looping].stop_reason == "max_length"
  assert out[looping].meta["num_tokens"] <= 260


def test_a_failed_batch_is_retried_then_split_and_a_failing_query_is_recorded(vocab, retriever):
  flaky = RecordingRetriever(retriever, fail_calls=1)
  agent, _ = agent_for(vocab, flaky, SCRIPTS)
  trajectories = {t.id: t for t in agent.run(tasks()[:2])}
  assert flaky.calls[0] == flaky.calls[1]  # The retry sent the same batch.
  assert all(not t.meta["search_errors"] for t in trajectories.values())
  assert "Doc 1(Title: Paris)" in trajectories["paris"].segments[1].text

  poisoned = RecordingRetriever(retriever, poison="seine")
  agent, _ = agent_for(vocab, poisoned, SCRIPTS, search_retries=1)
  trajectories = {t.id: t for t in agent.run(tasks()[:2])}
  seine, paris = trajectories["seine"], trajectories["paris"]
  assert "The search failed (RetrievalError)" in seine.segments[1].text
  assert seine.meta["search_errors"] == ["RetrievalError: cannot search 'seine'"]
  assert seine.stop_reason == "answer"  # The episode went on.
  assert "Doc 1(Title: Paris)" in paris.segments[1].text and not paris.meta["search_errors"]
  assert agent.stats.search_errors == 1


def test_the_loop_searches_through_the_http_server(vocab, retriever):
  in_process, _ = agent_for(vocab, retriever, SCRIPTS)
  expected = {t.id: t for t in in_process.run(tasks())}
  with make_server(retriever, port=0).start() as server:
    client = HttpRetriever(server.url, timeout=5.0)
    agent, _ = agent_for(vocab, client, SCRIPTS)
    got = {t.id: t for t in agent.run(tasks())}
    client.close()
  assert got.keys() == expected.keys()
  for key in got:
    assert got[key].segments == expected[key].segments and got[key].token_ids == expected[key].token_ids
  # The server goes away: every search fails after the retries, each row records it, nothing crashes.
  client = HttpRetriever(server.url, timeout=0.5, max_retries=0)
  agent, _ = agent_for(vocab, client, SCRIPTS, search_retries=1)
  down = {t.id: t for t in agent.run(tasks()[:2])}
  client.close()
  for key in ("paris", "seine"):
    assert down[key].stop_reason == "answer"
    assert "The search failed (RetrievalError)" in down[key].segments[1].text
    assert len(down[key].meta["search_errors"]) == 1


# -- the real sampler -------------------------------------------------------------------------------


def test_real_sampler_episodes_equal_one_forward_pass_over_the_whole_episode(vocab, retriever, tiny_policy, tmp_path):
  config, params = tiny_policy
  rollout = RolloutConfig(batch_size=2, max_turns=3, max_turn_tokens=12, max_observation_tokens=40, max_length=400,
                          top_k=1, temperature=0.0, prefill_buckets=(16, 64))
  agent = SearchAgent(config, params, vocab, retriever, rollout)
  prompts = [protocol.qa_prompt(q) for q in ("Where is the seine?", "capital of france", "who founded the museum")]
  trajectories = list(agent.run([RolloutTask(f"q{i}", "qa", p) for i, p in enumerate(prompts)]))
  assert len(trajectories) == 3
  model = Decoder(config)
  for t in trajectories:
    assert t.stop_reason in ("max_turns", "answer", "eos", "max_length")
    assert 0 in t.model_token_mask and 1 in t.model_token_mask  # Observations were inserted between turns.
    sequence = np.array([0, *t.prompt_token_ids, *t.token_ids])
    logp = np.asarray(jax.nn.log_softmax(model.apply({"params": params}, sequence[None])[0], axis=-1))
    start = 1 + len(t.prompt_token_ids)
    for i, (token, written, lp) in enumerate(zip(t.token_ids, t.model_token_mask, t.logprobs)):
      if written:  # Greedy: the policy's token is the argmax after the whole episode so far.
        assert np.argmax(logp[start + i - 1]) == token
        assert abs(logp[start + i - 1, token] - lp) < 1e-4
  # The generate program compiled once for all turns and rows.
  assert agent.sampler._generate._cache_size() == 1
  path = tmp_path / "rollouts.jsonl"
  with TrajectoryWriter(path) as writer:
    for t in trajectories:
      writer.write(t)
  assert [t.token_ids for t in read_trajectories(path)] == [t.token_ids for t in trajectories]
