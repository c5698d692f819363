"""The multi-turn search rollout: the policy writes, searches, reads and answers, on one KV cache per row.

Each row of a `Sampler` batch is one episode. A turn is one `generate` call that runs
until the row writes `</search>` or `</answer>` (or the end of sequence, or a limit).
Then, for all rows at once:

- a row that answered, ended its sequence, or used its turns or tokens is finished
  and its slot is given to the next task (continuous batching: finished rows drop
  out of the work, waiting tasks take their place);
- the queries of all rows that searched go to the `Retriever` in one batch call (a
  RAMP row never gets its own source passage back); the results are appended to
  each row's cache as Search-R1's `<information>` observation, so the next turn
  prefills only those tokens and never re-encodes the context;
- a turn with neither a search nor an answer gets Search-R1's short corrective
  message as its observation.

A search that fails (server down, timeout) is retried; if it keeps failing, each of
the batch's queries is tried alone, and a query that still fails gives its row a
failed-search observation (counted in the trajectory's `meta`); the batch goes on.

Each finished episode becomes a `Trajectory` with the policy's token ids, which tokens
it wrote (1) and which the environment inserted (0), the log-probability of each
written token, the searches, the answer, and why it stopped.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import time
from typing import Any, Iterator, Sequence

import gin
import jax
import numpy as np

from masksearch_jax.agent import protocol
from masksearch_jax.data.trajectories import (MODEL, OBSERVATION, ContextEncoder, Segment, Trajectory,
                                              vocabulary_fingerprint)
from masksearch_jax.models.sampler import Sampler, SamplingParams, StopReason
from masksearch_jax.models.transformer import TransformerConfig
from masksearch_jax.retrieval.client import RetrievalError
from masksearch_jax.retrieval.retriever import Retriever, batch_search_excluding
from masksearch_jax.training.partitioning import Partitioner

logger = logging.getLogger(__name__)

# Search-R1's message after a turn with neither a search nor an answer.
INVALID_ACTION_MESSAGE = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
    "</search>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n")

# What a retriever raises when the environment fails (the HTTP client wraps its transport errors in
# RetrievalError); anything else is a bug and propagates.
_SEARCH_FAILURES = (RetrievalError, OSError, TimeoutError)

_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


def parse_action(text: str) -> tuple[str, str] | None:
  """The turn's action, ("search", query) or ("answer", text), as Search-R1 reads it (the first complete
  tag); None when there is none or its content is empty."""
  match = _ACTION.search(text)
  if match is None or not match.group(2).strip():
    return None
  return match.group(1), match.group(2).strip()


def observation_text(hits: Sequence[Any]) -> str:
  """The observation segment for search results (as the offline teacher writes it)."""
  return f"\n\n{protocol.format_observation([(h.title, h.text) for h in hits])}\n\n"


def failed_search_text(reason: str) -> str:
  return f"\n\n{protocol.INFORMATION[0]}The search failed ({reason}).{protocol.INFORMATION[1]}\n\n"


@dataclasses.dataclass(frozen=True)
class RolloutTask:
  """One episode to run.

  Attributes:
    id: The trajectory's id.
    kind: "ramp", "qa", or another task name.
    prompt: The prompt text (`protocol.ramp_prompt` / `protocol.qa_prompt`).
    gold: Gold answers and aliases (kept in the trajectory, for the judge and rewards).
    exclude_ids: Passage ids searches never return (a RAMP paragraph's own passage).
    meta: Anything to carry into the trajectory's meta.
  """

  id: str
  kind: str
  prompt: str
  gold: tuple[str, ...] = ()
  exclude_ids: tuple[str, ...] = ()
  meta: dict = dataclasses.field(default_factory=dict)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Limits and settings of the search loop.

  Attributes:
    batch_size: Episodes decoded together (the sampler's static batch).
    max_turns: Most model turns per episode (searches, invalid turns and the answer).
    max_turn_tokens: Most tokens the policy writes in one turn.
    max_observation_tokens: Observations longer than this are cut (and closed with `</information>`).
    max_length: Most tokens of an episode in all: prompt, turns and observations.
    top_k: Passages per search.
    search_retries: Extra attempts of a failed batch search before its queries are tried one by one.
    retry_backoff: Seconds before the first retry, doubled for each next one.
    temperature: Sampling temperature; 0 is greedy.
    top_k_sampling: Sample among this many most likely tokens (0: all).
    top_p: Nucleus sampling threshold (1.0: off).
    bos_id: The token before the prompt (the decoder input start used in training, 0 in seqio).
    prefill_buckets: Chunk lengths for prefilling prompts and observations (one compiled program each).
  """

  batch_size: int = 16
  max_turns: int = 8
  max_turn_tokens: int = 256
  max_observation_tokens: int = 512
  max_length: int = 2048
  top_k: int = 3
  search_retries: int = 2
  retry_backoff: float = 0.5
  temperature: float = 1.0
  top_k_sampling: int = 0
  top_p: float = 1.0
  bos_id: int = 0
  prefill_buckets: tuple[int, ...] = (64, 256, 1024)

  @property
  def sampling(self) -> SamplingParams:
    return SamplingParams(temperature=self.temperature, top_k=self.top_k_sampling, top_p=self.top_p)


@dataclasses.dataclass
class _Episode:
  """A row's episode so far."""

  task: RolloutTask
  prompt_ids: list[int]
  segments: list[Segment] = dataclasses.field(default_factory=list)
  token_ids: list[int] = dataclasses.field(default_factory=list)
  mask: list[int] = dataclasses.field(default_factory=list)
  logprobs: list[float | None] = dataclasses.field(default_factory=list)
  searches: list[str] = dataclasses.field(default_factory=list)
  turns: int = 0
  invalid_turns: int = 0
  search_errors: list[str] = dataclasses.field(default_factory=list)
  answer: str | None = None
  stop_reason: str | None = None
  query: str | None = None  # The search waiting for results.

  def add_model(self, text: str, ids: np.ndarray, logprobs: np.ndarray) -> None:
    self.segments.append(Segment(MODEL, text))
    self.token_ids.extend(int(i) for i in ids)
    self.mask.extend([1] * len(ids))
    self.logprobs.extend(float(p) for p in logprobs)

  def add_observation(self, text: str, ids: Sequence[int]) -> None:
    self.segments.append(Segment(OBSERVATION, text))
    self.token_ids.extend(ids)
    self.mask.extend([0] * len(ids))
    self.logprobs.extend([None] * len(ids))

  @property
  def length(self) -> int:
    return 1 + len(self.prompt_ids) + len(self.token_ids)


@dataclasses.dataclass
class RolloutStats:
  """Counts over one `run` call."""

  episodes: int = 0
  turns: int = 0
  searches: int = 0
  search_errors: int = 0
  invalid_turns: int = 0
  generated_tokens: int = 0
  stop_reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  seconds: float = 0.0
  search_seconds: float = 0.0  # Waiting for the retriever (with retries).


class SearchAgent:
  """Runs the policy as a search agent over a batch of rows with continuous batching.

  Args:
    config: The policy's shape.
    params: Its parameters.
    vocabulary: Its seqio vocabulary (must keep the protocol tags whole, see `ContextEncoder`).
    retriever: Where searches go (in-process index or HTTP client).
    rollout: Limits and sampling (Gin-configurable `RolloutConfig`).
    partitioner: Places the policy and its cache on the training mesh (None: one device).
    sampler: A ready sampler to use instead of building one from config and params (it must
      have the rollout's batch size, capacity and turn length).
  """

  def __init__(self, config: TransformerConfig | None, params: Any, vocabulary: Any, retriever: Retriever,
               rollout: RolloutConfig | None = None, partitioner: Partitioner | None = None,
               sampler: Sampler | None = None):
    self.rollout = rollout = rollout or RolloutConfig()
    self.vocabulary = vocabulary
    self.retriever = retriever
    self.encoder = ContextEncoder(vocabulary)
    self.fingerprint = vocabulary_fingerprint(vocabulary)
    stops = [self.encoder.encode(protocol.SEARCH[1]), self.encoder.encode(protocol.ANSWER[1])]
    self.stop_sequences = stops
    if sampler is None:
      sampler = Sampler(config, params, batch_size=rollout.batch_size, capacity=rollout.max_length,
                        max_new_tokens=rollout.max_turn_tokens, stop_sequences=stops, eos_id=vocabulary.eos_id,
                        pad_id=vocabulary.pad_id, prefill_buckets=rollout.prefill_buckets, partitioner=partitioner)
    elif (sampler.batch_size, sampler.capacity, sampler.max_new_tokens) != (
        rollout.batch_size, rollout.max_length, rollout.max_turn_tokens):
      raise ValueError(f"sampler has batch {sampler.batch_size}, capacity {sampler.capacity} and turn length "
                       f"{sampler.max_new_tokens}; the rollout config wants {rollout.batch_size}, "
                       f"{rollout.max_length} and {rollout.max_turn_tokens}")
    self.sampler = sampler
    self._close_information = self.encoder.encode(f"{protocol.INFORMATION[1]}\n\n")
    self.stats = RolloutStats()

  def run(self, tasks: Sequence[RolloutTask], seed: int = 0) -> Iterator[Trajectory]:
    """Runs every task; yields each trajectory as its episode finishes (not in task order)."""
    cfg = self.rollout
    stats = self.stats = RolloutStats()
    started = time.perf_counter()
    rng = jax.random.PRNGKey(seed)
    queue = collections.deque(tasks)
    rows: list[_Episode | None] = [None] * cfg.batch_size
    state = self.sampler.new_state()
    pending: list[Sequence[int] | None] = [None] * cfg.batch_size  # Tokens to prefill before the next turn.
    while queue or any(rows):
      fresh = np.zeros((cfg.batch_size,), bool)
      for b in range(cfg.batch_size):
        if rows[b] is None and queue:
          task = queue.popleft()
          prompt_ids = self.encoder.encode(task.prompt, start_of_sequence=True)
          episode = _Episode(task, prompt_ids)
          if episode.length + 1 > cfg.max_length:
            episode.stop_reason = "max_length"
            yield self._finish(episode)
            continue
          rows[b], pending[b], fresh[b] = episode, [cfg.bos_id, *prompt_ids], True
      if fresh.any():
        state = self.sampler.reset(state, fresh)
      if any(p is not None for p in pending):
        state = self.sampler.append(state, pending)
        pending = [None] * cfg.batch_size
      active = np.array([row is not None for row in rows])
      if not active.any():
        continue
      rng, key = jax.random.split(rng)
      state, result = self.sampler.generate(state, key, active=active, sampling=cfg.sampling)
      searching = []
      for b in np.flatnonzero(active):
        episode = rows[b]
        ids, logprobs = result.row_tokens(b), result.row_logprobs(b)
        episode.add_model(self.encoder.decode(ids), ids, logprobs)
        episode.turns += 1
        stats.turns += 1
        stats.generated_tokens += len(ids)
        reason = result.stop_reasons[b]
        action = parse_action(episode.segments[-1].text)
        if reason == StopReason.END_OF_SEQUENCE and (action is None or action[0] != "answer"):
          episode.stop_reason = "eos"
        elif action is not None and action[0] == "answer":
          episode.answer, episode.stop_reason = action[1], "answer"
        elif reason == StopReason.CAPACITY:
          episode.stop_reason = "max_length"
        elif episode.turns >= cfg.max_turns:
          episode.stop_reason = "max_turns"
        elif action is not None:
          episode.query = action[1]
          searching.append(b)
          continue
        else:
          episode.invalid_turns += 1
          stats.invalid_turns += 1
          pending[b] = self._observe(episode, INVALID_ACTION_MESSAGE)
        if episode.stop_reason is not None:
          rows[b] = None
          pending[b] = None
          yield self._finish(episode)
      search_started = time.perf_counter()
      observations = self._search([rows[b] for b in searching])
      stats.search_seconds += time.perf_counter() - search_started
      for b, observation in zip(searching, observations):
        pending[b] = self._observe(rows[b], observation)
      for b in range(cfg.batch_size):
        if rows[b] is not None and rows[b].stop_reason is not None:  # No room for the observation.
          episode, rows[b], pending[b] = rows[b], None, None
          yield self._finish(episode)
    stats.seconds = time.perf_counter() - started

  # -- the environment --------------------------------------------------------------------------

  def _search(self, episodes: list[_Episode]) -> list[str]:
    """Observation texts for the episodes' pending queries, from one batch search when it works."""
    if not episodes:
      return []
    cfg = self.rollout
    queries = [e.query for e in episodes]
    excludes = [e.task.exclude_ids for e in episodes]
    for e in episodes:
      e.searches.append(e.query)
      e.query = None
    self.stats.searches += len(episodes)
    error = None
    for attempt in range(cfg.search_retries + 1):
      if attempt:
        time.sleep(cfg.retry_backoff * 2 ** (attempt - 1))
      try:
        results = batch_search_excluding(self.retriever, queries, excludes, cfg.top_k)
        return [observation_text(hits) for hits in results]
      except _SEARCH_FAILURES as e:
        error = e
        logger.warning("batch search of %d queries failed (attempt %d/%d): %s", len(queries), attempt + 1,
                       cfg.search_retries + 1, e)
    observations = []
    for e, query, exclude in zip(episodes, queries, excludes):
      try:
        hits = batch_search_excluding(self.retriever, [query], [exclude], cfg.top_k)[0]
        observations.append(observation_text(hits))
      except _SEARCH_FAILURES as one_error:  # Recorded in the row's trajectory; the batch goes on.
        message = f"{type(one_error).__name__}: {one_error}"
        e.search_errors.append(message[:500])
        self.stats.search_errors += 1
        observations.append(failed_search_text(type(one_error).__name__))
    logger.warning("batch search failed after %d attempts (%s); %d of %d queries failed alone",
                   cfg.search_retries + 1, error, sum(1 for o in observations if "search failed" in o), len(queries))
    return observations

  def _observe(self, episode: _Episode, text: str) -> list[int] | None:
    """Adds an observation to the episode (cut to the limits); returns its tokens, or None after
    finishing the episode for lack of room."""
    cfg = self.rollout
    ids = self.encoder.encode(text)
    room = min(cfg.max_observation_tokens, cfg.max_length - episode.length - 1)
    if len(ids) > room:
      close = self._close_information
      if room <= len(close) + 1:
        episode.stop_reason = "max_length"
        return None
      ids = ids[:room - len(close)] + close
      text = self.encoder.decode(ids)
    episode.add_observation(text, ids)
    return ids

  def _finish(self, episode: _Episode) -> Trajectory:
    stats = self.stats
    stats.episodes += 1
    stats.stop_reasons[episode.stop_reason] += 1
    task = episode.task
    meta = dict(task.meta, turns=episode.turns, invalid_turns=episode.invalid_turns,
                search_errors=episode.search_errors, num_tokens=episode.length)
    return Trajectory(id=task.id, kind=task.kind, prompt=task.prompt, segments=tuple(episode.segments),
                      stop_reason=episode.stop_reason, answer=episode.answer, gold=task.gold,
                      searches=tuple(episode.searches), tokenizer=self.fingerprint,
                      prompt_token_ids=tuple(episode.prompt_ids), token_ids=tuple(episode.token_ids),
                      model_token_mask=tuple(episode.mask), logprobs=tuple(episode.logprobs), meta=meta)
