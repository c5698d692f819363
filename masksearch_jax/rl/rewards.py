"""Rewards of MaskSearch's RL stage: answer, format and overlong length, combined by Gin.

MaskSearch trains with DAPO on a hybrid reward, answer reward plus format reward; this
module scores finished responses of the search agent (RAMP or QA) with:

  answer     one of (`RewardFunction.answer_reward`):
             "recall"            token-level recall against the gold (HotpotQA
                                 normalisation, the best over the gold and its aliases);
                                 for RAMP the mean over the masks of the recall of the text
                                 that fills each `[mask]` (`text_metrics.ramp_recall`: a
                                 paragraph changed outside its masks scores 0).
             "penalized_recall"  recall with a penalty for long or enumerated answers
                                 (`penalized_recall`, formula there).
             "judge"             an LLM says correct (1) or incorrect (0) (`JudgeReward`);
                                 where it fails (timeout, HTTP error, no verdict) the
                                 penalised recall stands in and the fallback is counted.
  format     1 when the response follows the tag protocol, else 0 (`check_format`).
  overlong   DAPO's soft length penalty in tokens (`overlong_penalty`), already scaled by
             its factor, in [-factor, 0].

  total = answer_weight * answer [* format, if format_gates_answer]
          + format_weight * format + overlong

`RewardFunction` scores a batch at once (the judge asks its LLM with one `batch_chat`) and
returns every component besides the total, for per-component logging.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import re
import threading
from typing import Any, Mapping, Sequence

import gin
import numpy as np

from masksearch_jax.agent import protocol
from masksearch_jax.agent.llm_backends import LLMBackend, LLMError, LLMTimeoutError
from masksearch_jax.agent.synthesis import LLMJudge, MalformedReplyError
from masksearch_jax.data.trajectories import MODEL, OBSERVATION, Segment, Trajectory
from masksearch_jax.text_metrics import answer_tokens, ramp_fills, ramp_recall, token_recall

logger = logging.getLogger(__name__)

KINDS = ("ramp", "qa")
ANSWER_REWARDS = ("recall", "penalized_recall", "judge")
# Why a judgement fell back to penalised recall (`JudgeStats.fallbacks`).
FALLBACK_REASONS = ("timeout", "llm_error", "malformed")


# ---------------------------------------------------------------------------------------------
# What is scored.


@dataclasses.dataclass(frozen=True)
class RewardInput:
  """One finished response to score.

  Attributes:
    kind: "ramp" (fill the masks of a paragraph) or "qa" (answer a question).
    task: The question, or the masked paragraph (with its `[mask]`s, without the fill-in
      instruction).
    gold: QA: the gold answer then its aliases. RAMP: the original paragraph (first entry).
    response: The response as it happened: its segments (model text and environment
      observations, the stricter format check) or its whole text.
    answer: The final answer (the last `<answer>`'s text), or None when there is none.
    num_tokens: The response's length in tokens as the rollout's budget counts it, for
      overlong shaping; None when unknown (then overlong shaping must be off).
    masks: RAMP: the gold text of each `[mask]`, in order; empty to read them off `gold[0]`.
  """

  kind: str
  task: str
  gold: tuple[str, ...]
  response: str | tuple[Segment, ...]
  answer: str | None
  num_tokens: int | None = None
  masks: tuple[str, ...] = ()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
    if isinstance(self.gold, str):
      object.__setattr__(self, "gold", (self.gold,))
    object.__setattr__(self, "gold", tuple(self.gold))
    if self.kind == "qa" and not any(g.strip() for g in self.gold):
      raise ValueError(f"a QA reward input needs a gold answer: {self.task[:80]!r}")
    if not isinstance(self.response, str):
      object.__setattr__(self, "response", tuple(self.response))
    masks = tuple(self.masks)
    if self.kind == "ramp" and not masks:
      if not self.gold:
        raise ValueError("a RAMP reward input needs masks or the original paragraph as gold")
      fills = ramp_fills(self.task, self.gold[0])
      if fills is None:
        raise ValueError(f"the gold paragraph does not fit the masked paragraph {self.task[:80]!r}")
      masks = tuple(fills)
    object.__setattr__(self, "masks", masks)

  @classmethod
  def from_trajectory(cls, trajectory: Trajectory, task: str, masks: Sequence[str] | None = None) -> RewardInput:
    """The reward input of a rollout's trajectory.

    Args:
      trajectory: The finished episode; its `kind`, `gold`, `segments`, `answer` and
        `token_ids` (the length) are read, and `meta["masks"]` for RAMP when `masks` is None.
      task: The question, or the masked paragraph.
      masks: RAMP: the gold spans; None reads `meta["masks"]`, else the gold paragraph.
    """
    if masks is None:
      masks = trajectory.meta.get("masks", ())
    num_tokens = len(trajectory.token_ids) if trajectory.token_ids is not None else None
    return cls(kind=trajectory.kind, task=task, gold=trajectory.gold, response=trajectory.segments,
               answer=trajectory.answer, num_tokens=num_tokens, masks=tuple(masks))

  @property
  def judge_question(self) -> str:
    """The task as the judge reads it (a RAMP paragraph gets its fill-in instruction)."""
    if self.kind == "ramp":
      return self.task.strip() + "\n\n" + protocol.RAMP_INSTRUCTION
    return self.task


# ---------------------------------------------------------------------------------------------
# Answer rewards.

# Where an answer lists several candidates: ";", "|", a line break, "&", the words "or" and
# "and", and a comma not followed by a digit (so "May 3, 1921" and "1,234" stay one item).
_CANDIDATE_SEPARATOR = re.compile(r"[;|\n&]|,(?!\s*\d)|\bor\b|\band\b", re.IGNORECASE)


def candidate_count(text: str) -> int:
  """How many items `text` lists: its pieces between separators that keep a token.

  Separators are ";", "|", a line break, "&", the words "or" and "and", and a comma that
  no digit follows. "Vitole, Doga or Kelo" lists 3; "3 May 1921" and "May 3, 1921" list 1;
  an empty text lists 0.
  """
  return sum(1 for piece in _CANDIDATE_SEPARATOR.split(text) if answer_tokens(piece))


def penalized_recall(prediction: str, golds: str | Sequence[str], *, length_slack: int = 2) -> float:
  """Token recall scaled down for answers longer than the gold or listing several candidates.

  For each gold g (the answer and its aliases; ones without tokens are skipped), with
  p = `answer_tokens(prediction)`, and `candidate_count` c(.):

    score(g) = recall(p, g) * min(1, (|g| + length_slack) / |p|) / (1 + max(0, c(prediction) - c(g)))

  and the result is the best score over the golds (0.0 for an empty prediction).

  * The length factor lets an answer be `length_slack` tokens longer than the gold for free
    ("the Doga River" for "Doga"); beyond that the reward falls like precision, so an answer
    that copies a whole observation of 200 tokens to cover a 2-token gold gets 0.02.
  * The candidate factor divides by the number of items listed beyond the gold's: an answer
    listing k candidates for a one-item gold earns at most 1/k, what picking one of them at
    random earns on average, so enumerating never pays; the length factor makes it strictly
    less once the list is longer than the gold plus `length_slack` ("Vitole, Doga, Kelo,
    Rani or Muzu" for "Vitole": 3/6 / 5 = 0.1 instead of 1/5). A gold that is itself a list
    ("Tom and Jerry") allows as many items.

  Args:
    prediction: The answer given.
    golds: The gold answer, or the gold answer and its aliases.
    length_slack: Tokens an answer may exceed the gold by without penalty (>= 0).

  Returns:
    The best penalised recall in [0, 1].
  """
  if length_slack < 0:
    raise ValueError(f"length_slack must be >= 0, got {length_slack}")
  if isinstance(golds, str):
    golds = [golds]
  predicted = len(answer_tokens(prediction))
  if not predicted:
    return 0.0
  items = candidate_count(prediction)
  best = 0.0
  for gold in golds:
    size = len(answer_tokens(gold))
    if not size:
      continue
    length_factor = min(1.0, (size + length_slack) / predicted)
    extra_items = max(0, items - candidate_count(gold))
    best = max(best, token_recall(prediction, gold) * length_factor / (1 + extra_items))
  return best


def answer_recall(item: RewardInput, *, penalized: bool = False, length_slack: int = 2) -> float:
  """Token recall (or penalised recall) of an item's final answer; 0.0 without an answer.

  Args:
    item: The response.
    penalized: Use `penalized_recall` (span by span for RAMP) instead of plain recall.
    length_slack: `penalized_recall`'s free extra tokens.

  Returns:
    QA: the (penalised) recall against the gold and its aliases. RAMP: the mean over the
    masks of the (penalised) recall of each fill against its span; 0.0 when the answer is
    not the paragraph with only its masks filled.
  """
  if item.answer is None:
    return 0.0
  if penalized:
    metric = functools.partial(penalized_recall, length_slack=length_slack)
  else:
    metric = token_recall
  if item.kind == "ramp":
    return ramp_recall(item.task, item.answer, item.masks, metric=metric)
  return metric(item.answer, item.gold)


# ---------------------------------------------------------------------------------------------
# The format reward.

_TAGS = {tag: name for name in ("think", "search", "answer", "information")
         for tag in (f"<{name}>", f"</{name}>")}
_TAG_RE = re.compile("|".join(re.escape(t) for t in _TAGS))
_INFORMATION = "information"
_INFORMATION_BLOCK_RE = re.compile(re.escape(protocol.INFORMATION[0]) + ".*?" + re.escape(protocol.INFORMATION[1]),
                                   re.DOTALL)


@dataclasses.dataclass(frozen=True)
class FormatCheck:
  """The verdict of `check_format`.

  Attributes:
    ok: The response follows the protocol.
    reason: Why not ("" when it does).
    searches: `<search>` blocks seen before the check stopped (all of them when `ok`).
  """

  ok: bool
  reason: str = ""
  searches: int = 0


def _blocks(text: str) -> list[tuple[str, str]] | str:
  """The (tag, content) blocks of model text, or why it is not a row of flat blocks.

  Only whitespace may stand between blocks; a block holds no protocol tag (no nesting).
  """
  blocks: list[tuple[str, str]] = []
  position, open_name, open_end = 0, None, 0
  for match in _TAG_RE.finditer(text):
    tag = match.group()
    name = _TAGS[tag]
    closing = tag.startswith("</")
    if open_name is None:
      if text[position:match.start()].strip():
        return f"text outside the tags before {tag}"
      if closing:
        return f"{tag} without <{name}>"
      open_name, open_end = name, match.end()
    else:
      if not closing or name != open_name:
        return f"{tag} inside <{open_name}>"
      blocks.append((name, text[open_end:match.start()]))
      open_name, position = None, match.end()
  if open_name is not None:
    return f"<{open_name}> is not closed"
  if text[position:].strip():
    return "text outside the tags at the end"
  return blocks


def _text_items(text: str) -> list[tuple[str, str]] | str:
  """`_items` of a whole response text: `<information>` blocks are cut out unread first."""
  items: list[tuple[str, str]] = []
  position = 0
  for match in _INFORMATION_BLOCK_RE.finditer(text):
    blocks = _blocks(text[position:match.start()])
    if isinstance(blocks, str):
      return blocks
    items.extend(blocks)
    items.append((_INFORMATION, ""))
    position = match.end()
  blocks = _blocks(text[position:])
  if isinstance(blocks, str):
    return blocks
  return items + blocks


def _items(response: str | Sequence[Segment]) -> list[tuple[str, str]] | str:
  """The response as (name, content) items, an environment observation as ("information", "")."""
  if isinstance(response, str):
    return _text_items(response)
  items: list[tuple[str, str]] = []
  for segment in response:
    if segment.type == OBSERVATION:
      text = segment.text.strip()
      opening, closing = protocol.INFORMATION
      if not (text.startswith(opening) and text.endswith(closing)):
        return "the environment answered with a message, not <information> (the protocol was broken)"
      items.append((_INFORMATION, ""))
    elif segment.type == MODEL:
      if protocol.INFORMATION[0] in segment.text or protocol.INFORMATION[1] in segment.text:
        return "the model wrote an <information> tag"
      blocks = _blocks(segment.text)
      if isinstance(blocks, str):
        return blocks
      items.extend(blocks)
    else:
      raise ValueError(f"unknown segment type {segment.type!r}")
  return items


def check_format(response: str | Sequence[Segment]) -> FormatCheck:
  """Whether a response follows the search-agent protocol (`agent.protocol`).

  The response must be, with only whitespace between blocks:

    (<think> T </think> <search> Q </search> <information> ... </information>)*
     <think> T </think> <answer> A </answer>

  that is: a non-empty think before every search and before the answer; tags balanced and
  never nested; a non-empty query in every search, followed by the environment's results;
  exactly one non-empty answer, and nothing after it.

  The `<information>` blocks are the environment's, so they are judged by where they stand,
  never by what they hold (retrieved text may contain anything). Given the response's
  segments, an observation segment must be one `<information>` block (any other message
  from the environment means the model broke the protocol) and a model segment must not
  write `<information>` at all (a forged observation). Given only the text, authorship is
  unknown, so every `<information>` block standing right after a `<search>` counts as the
  environment's; prefer segments.

  Args:
    response: The response's segments (`Trajectory.segments`) or its whole text.

  Returns:
    The verdict, with the reason and the number of searches.
  """
  items = _items(response)
  if isinstance(items, str):
    return FormatCheck(False, items)
  searches, i = 0, 0
  while True:
    if i >= len(items):
      return FormatCheck(False, "no <answer>", searches)
    name, content = items[i]
    if name != "think":
      return FormatCheck(False, f"<{name}> without a <think> before it", searches)
    if not content.strip():
      return FormatCheck(False, "an empty <think>", searches)
    if i + 1 >= len(items):
      return FormatCheck(False, "<think> without a <search> or <answer> after it", searches)
    name, content = items[i + 1]
    if name == "answer":
      if not content.strip():
        return FormatCheck(False, "an empty <answer>", searches)
      if i + 2 < len(items):
        return FormatCheck(False, f"<{items[i + 2][0]}> after the <answer>", searches)
      return FormatCheck(True, "", searches)
    if name != "search":
      return FormatCheck(False, f"<{name}> after a <think>", searches)
    if not content.strip():
      return FormatCheck(False, "an empty <search>", searches + 1)
    searches += 1
    if i + 2 >= len(items) or items[i + 2][0] != _INFORMATION:
      return FormatCheck(False, "a <search> without <information> after it", searches)
    i += 3


def format_reward(response: str | Sequence[Segment]) -> float:
  """1.0 when `check_format` accepts the response, else 0.0."""
  return 1.0 if check_format(response).ok else 0.0


# ---------------------------------------------------------------------------------------------
# Overlong shaping.


def overlong_penalty(num_tokens: Any, max_tokens: int, buffer_tokens: int, factor: float = 1.0) -> Any:
  """DAPO's soft overlong penalty, in tokens.

  With L_max = `max_tokens`, L_cache = `buffer_tokens` and |y| = `num_tokens`:

    0                                   if |y| <= L_max - L_cache
    ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
    -1                                  if |y| > L_max

  times `factor`.

  Args:
    num_tokens: Response lengths in tokens (a number or an array).
    max_tokens: L_max, the response budget (> 0).
    buffer_tokens: L_cache, the soft buffer before it (0 <= L_cache <= L_max; 0 is a step
      from 0 to -1 past L_max).
    factor: The penalty's scale (>= 0).

  Returns:
    The penalties, a float for a number, an array for an array.
  """
  if max_tokens <= 0:
    raise ValueError(f"max_tokens must be positive, got {max_tokens}")
  if not 0 <= buffer_tokens <= max_tokens:
    raise ValueError(f"buffer_tokens must be in [0, max_tokens={max_tokens}], got {buffer_tokens}")
  if factor < 0:
    raise ValueError(f"factor must be >= 0, got {factor}")
  lengths = np.asarray(num_tokens, dtype=np.float64)
  free = max_tokens - buffer_tokens
  ramp = (free - lengths) / max(buffer_tokens, 1)
  penalty = np.where(lengths <= free, 0.0, np.where(lengths <= max_tokens, ramp, -1.0)) * factor
  return float(penalty) if penalty.ndim == 0 else penalty


# ---------------------------------------------------------------------------------------------
# The judge.


@dataclasses.dataclass
class JudgeStats:
  """Counts of a `JudgeReward` over its life.

  Attributes:
    asked: Answers sent to the judge.
    judged: Answers the judge gave a verdict on.
    correct: Verdicts "correct".
    fallbacks: Answers scored by penalised recall instead, by reason (`FALLBACK_REASONS`).
  """

  asked: int = 0
  judged: int = 0
  correct: int = 0
  fallbacks: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  @property
  def fallback_total(self) -> int:
    """Answers that fell back, for any reason."""
    return sum(self.fallbacks.values())


@gin.configurable(module="masksearch_jax.rl.rewards")
class JudgeReward:
  """MaskSearch's model-based answer reward: an LLM says whether an answer is correct.

  The prompt and the verdict parser are the teacher's judge's (`synthesis.LLMJudge`, whose
  `max_tokens` and `temperature` Gin binds); a batch of answers goes out in one
  `batch_chat`. Each answer the judge cannot settle (its request failed, timed out, or the
  reply held no verdict) is reported as a fallback with its reason, and counted in `stats`.

  In a Gin file:

    rewards.RewardFunction.answer_reward = "judge"
    rewards.RewardFunction.judge = @rewards.JudgeReward()
    rewards.JudgeReward.backend = @judge/llm_backends.OpenAICompatibleBackend()
    judge/llm_backends.OpenAICompatibleBackend.base_url = "http://127.0.0.1:8000/v1"
    judge/llm_backends.OpenAICompatibleBackend.model = "Qwen/Qwen2.5-72B-Instruct"
    judge/llm_backends.OpenAICompatibleBackend.timeout = 30

  Args:
    backend: The judge's chat model.
    timeout: Seconds to wait for a whole batch of verdicts; when they are not all back by
      then every answer of the batch falls back ("timeout") and the late replies are
      dropped (the request thread ends on its own, within the backend's timeout and
      retries). None waits as long as the backend does. Each request's own limit is the
      backend's (`OpenAICompatibleBackend.timeout`); a request that runs out of it falls
      back alone.
    judge: The judge to use instead of `LLMJudge(backend)`.
  """

  def __init__(self, backend: LLMBackend | None = None, *, timeout: float | None = 300.0,
               judge: LLMJudge | None = None):
    if judge is None:
      if backend is None:
        raise ValueError("JudgeReward needs a backend (or a judge)")
      judge = LLMJudge(backend)
    if timeout is not None and timeout <= 0:
      raise ValueError(f"timeout must be positive or None, got {timeout}")
    self.judge = judge
    self.timeout = timeout
    self.stats = JudgeStats()

  def verdicts(self, items: Sequence[RewardInput]) -> list[bool | str]:
    """The judge's verdict on each item's answer, or why there is none.

    Args:
      items: The responses; an item without an answer is not asked and gets False.

    Returns:
      Per item: True (correct), False (incorrect, or no answer) or a fallback reason from
      `FALLBACK_REASONS`.
    """
    results: list[bool | str] = [False] * len(items)
    asked = [i for i, item in enumerate(items) if item.answer is not None]
    if not asked:
      return results
    triples = [(items[i].judge_question, items[i].gold, items[i].answer) for i in asked]
    replies = self._judge_many(triples)
    self.stats.asked += len(asked)
    for i, reply in zip(asked, replies):
      if isinstance(reply, bool):
        results[i] = reply
        self.stats.judged += 1
        self.stats.correct += int(reply)
        continue
      if isinstance(reply, LLMTimeoutError) or reply == "timeout":
        reason = "timeout"
      elif isinstance(reply, MalformedReplyError):
        reason = "malformed"
      else:
        reason = "llm_error"
      results[i] = reason
      self.stats.fallbacks[reason] += 1
      logger.debug("judge fell back (%s): %s", reason, reply)
    return results

  def _judge_many(self, triples: list[tuple[str, tuple[str, ...], str]]) -> list[Any]:
    """`LLMJudge.judge_many` within the batch deadline ("timeout" for every item past it).

    An `LLMError` the backend raises instead of returning it fails every item with it; any
    other exception propagates.
    """
    box: dict[str, Any] = {}

    def run() -> None:
      try:
        box["replies"] = self.judge.judge_many(triples)
      except Exception as e:  # pylint: disable=broad-except  Re-raised below, in the caller's thread.
        box["error"] = e

    if self.timeout is None:
      run()
    else:
      thread = threading.Thread(target=run, name="judge-reward", daemon=True)
      thread.start()
      thread.join(self.timeout)
      if thread.is_alive():
        logger.warning("the judge did not answer %d items within %.1f s; they fall back to recall",
                       len(triples), self.timeout)
        return ["timeout"] * len(triples)
    error = box.get("error")
    if isinstance(error, LLMError):
      return [error] * len(triples)
    if error is not None:
      raise error
    return box["replies"]


# ---------------------------------------------------------------------------------------------
# Combining.


@dataclasses.dataclass(frozen=True)
class RewardBatch:
  """The rewards of a batch of responses.

  Attributes:
    total: [n] the combined reward of each response (what advantages are computed from).
    components: name -> [n] per-response values: "answer" (the chosen answer reward),
      "recall", "penalized_recall", "format", "overlong" (scaled, <= 0), "searches";
      with the judge also "judge_fallback" (1 where penalised recall stood in).
    metrics: Batch means: "reward/total", "reward/<component>", "searches_per_response",
      and with the judge "judge/fallback_share" and the batch's fallback counts by reason
      ("judge/fallback_timeout", "judge/fallback_llm_error", "judge/fallback_malformed").
  """

  total: np.ndarray
  components: Mapping[str, np.ndarray]
  metrics: Mapping[str, float]


@gin.configurable(module="masksearch_jax.rl.rewards")
class RewardFunction:
  """The reward of a finished response, from Gin's weights.

    total = answer_weight * answer [* format, if format_gates_answer]
            + format_weight * format + overlong

  Args:
    answer_reward: "recall" (token-level recall, MaskSearch's metric), "penalized_recall"
      (recall scaled down for long or enumerated answers, see `penalized_recall`) or
      "judge" (an LLM's correct/incorrect, `judge` must be set; penalised recall where it
      fails).
    answer_weight: Weight of the answer reward (every choice of it lies in [0, 1]).
    format_weight: Weight of the format reward (1 when `check_format` accepts the response,
      else 0).
    format_gates_answer: Multiply the answer reward by the format reward, so a malformed
      response earns no answer reward at all.
    length_slack: Tokens a penalised-recall answer may exceed its gold by for free.
    judge: The `JudgeReward` of answer_reward "judge".
    overlong_max_tokens: DAPO's L_max, the response budget in tokens; None turns overlong
      shaping off. When on, every input needs `num_tokens`.
    overlong_buffer_tokens: DAPO's L_cache, the soft buffer below L_max where the penalty
      grows linearly from 0 to -1 (DAPO's recipe: 4096 of 20480).
    overlong_penalty_factor: The overlong penalty's scale (DAPO: 1.0).
  """

  def __init__(self, *, answer_reward: str = "penalized_recall", answer_weight: float = 1.0,
               format_weight: float = 0.2, format_gates_answer: bool = False, length_slack: int = 2,
               judge: JudgeReward | None = None, overlong_max_tokens: int | None = None,
               overlong_buffer_tokens: int = 4096, overlong_penalty_factor: float = 1.0):
    if answer_reward not in ANSWER_REWARDS:
      raise ValueError(f"answer_reward must be one of {ANSWER_REWARDS}, got {answer_reward!r}")
    if answer_reward == "judge" and judge is None:
      raise ValueError('answer_reward "judge" needs RewardFunction.judge (a JudgeReward)')
    if answer_weight < 0 or format_weight < 0:
      raise ValueError(f"weights must be >= 0, got answer {answer_weight} and format {format_weight}")
    if length_slack < 0:
      raise ValueError(f"length_slack must be >= 0, got {length_slack}")
    if overlong_max_tokens is not None:
      overlong_penalty(0, overlong_max_tokens, overlong_buffer_tokens, overlong_penalty_factor)  # Validates.
    self.answer_reward = answer_reward
    self.answer_weight = answer_weight
    self.format_weight = format_weight
    self.format_gates_answer = format_gates_answer
    self.length_slack = length_slack
    self.judge = judge
    self.overlong_max_tokens = overlong_max_tokens
    self.overlong_buffer_tokens = overlong_buffer_tokens
    self.overlong_penalty_factor = overlong_penalty_factor

  def __call__(self, items: Sequence[RewardInput]) -> RewardBatch:
    """Scores a batch of responses.

    Args:
      items: The responses.

    Returns:
      Their totals, components and batch metrics.
    """
    items = list(items)
    n = len(items)
    recall = np.array([answer_recall(x) for x in items], dtype=np.float64)
    penalized = np.array([answer_recall(x, penalized=True, length_slack=self.length_slack) for x in items],
                         dtype=np.float64)
    checks = [check_format(x.response) for x in items]
    formats = np.array([float(c.ok) for c in checks], dtype=np.float64)
    components: dict[str, np.ndarray] = {"recall": recall, "penalized_recall": penalized, "format": formats,
                                         "searches": np.array([c.searches for c in checks], dtype=np.float64)}
    metrics: dict[str, float] = {}
    if self.answer_reward == "recall":
      answer = recall
    elif self.answer_reward == "penalized_recall":
      answer = penalized
    else:
      assert self.judge is not None
      verdicts = self.judge.verdicts(items)
      fallback = np.array([isinstance(v, str) for v in verdicts], dtype=np.float64)
      answer = np.where(fallback > 0, penalized, np.array([float(v is True) for v in verdicts]))
      components["judge_fallback"] = fallback
      for reason in FALLBACK_REASONS:
        metrics[f"judge/fallback_{reason}"] = float(sum(v == reason for v in verdicts))
    components["answer"] = answer
    if self.overlong_max_tokens is not None:
      missing = [i for i, x in enumerate(items) if x.num_tokens is None]
      if missing:
        raise ValueError(f"overlong shaping needs num_tokens; inputs {missing[:5]} have none")
      overlong = np.asarray(overlong_penalty(np.array([x.num_tokens for x in items], dtype=np.float64),
                                             self.overlong_max_tokens, self.overlong_buffer_tokens,
                                             self.overlong_penalty_factor), dtype=np.float64).reshape(n)
    else:
      overlong = np.zeros(n)
    components["overlong"] = overlong
    gated = answer * formats if self.format_gates_answer else answer
    total = self.answer_weight * gated + self.format_weight * formats + overlong
    for name, values in components.items():
      key = {"searches": "searches_per_response", "judge_fallback": "judge/fallback_share"}.get(name, f"reward/{name}")
      metrics[key] = float(values.mean()) if n else 0.0
    metrics["reward/total"] = float(total.mean()) if n else 0.0
    return RewardBatch(total=total, components=components, metrics=metrics)


__all__ = ["ANSWER_REWARDS", "FALLBACK_REASONS", "FormatCheck", "JudgeReward", "JudgeStats", "KINDS",
           "RewardBatch", "RewardFunction", "RewardInput", "answer_recall", "candidate_count", "check_format",
           "format_reward", "overlong_penalty", "penalized_recall"]
