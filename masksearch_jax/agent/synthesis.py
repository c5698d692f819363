"""Agent trajectories written by a teacher LLM: MaskSearch's planner, rewriter, observer and judge.

MaskSearch makes its supervised data with a multi-agent pipeline over a chat model; this
module runs that pipeline over any `LLMBackend` (an OpenAI-compatible server, or the
project's own JAX policy) and the project's `Retriever`:

  planner   reads the task (a masked paragraph to fill, or a question) and writes
            `<think> ... </think>` and `<search>[{"query": ..., "intent": ...}, ...]</search>`,
            a JSON list of sub-queries.
  rewriter  turns each sub-query into at least three search-engine queries,
            `{"queries": [...]}`. All of them are searched and their results merged:
            interleaved by rank (every query's best hit, then every query's second, ...),
            repeats of a passage id dropped, the first `top_k` kept.
  observer  reads the task and everything so far and either answers
            (`<think>` then `<answer>`), continues (`<think>` then `<search>[...]</search>`
            with new sub-queries), or reflects (a `<think>` saying what went wrong, then a
            corrected search; the same format as continuing). After `max_turns` search
            rounds it must answer, or the trajectory is dropped ("max_turns").
  judge     compares the answer with the gold answer and says correct or incorrect
            (`LLMJudge`, also usable on its own as a reward or a filter).

A RAMP task's own passage is hidden from its searches (`hide_source`, on by default), as
in the project's other RAMP agents: finding the paragraph itself would let the teacher copy
the masked spans instead of finding them elsewhere.

Only trajectories the judge calls correct are kept. A reply that breaks its role's format
(`MalformedReplyError`) or a failed request (`LLMError`) drops that one trajectory and is
counted in `SynthesisStats`; it never raises out of a run.

What the student sees. Kept trajectories are written in the project's trajectory format
(`masksearch_jax.data.trajectories`) with the search-agent protocol the student policy
speaks: the prompt is `protocol.ramp_prompt` or `protocol.qa_prompt`, and the student
makes one search per turn. Each sub-query of the teacher becomes one student turn:

  model        "<think> T </think>\\n<search> sub-query </search>"
  observation  "\\n\\n<information>Doc 1(Title: ...) ...\\n</information>\\n\\n"
               (the merged results of that sub-query's rewrites)
  ...
  model        "<think> T </think>\\n<answer> A </answer>"

T is the planner's or observer's `<think>` for the first sub-query of a round, and the
sub-query's own "intent" for the others of the same round. `searches` holds the
sub-queries (what the student's `<search>` tags say); the rewrites behind each are in
`meta["rewrites"]`. So the student learns to ask one plain query and to read results
that are better than one query alone would get, as MaskSearch's data teaches.

Concurrency: every step is batched across the tasks in flight (up to `window` of them):
each loop sends all pending planner, rewriter, observer and judge requests in one
`batch_chat` per backend, and all rewritten queries in one `Retriever.batch_search`, so a
slow endpoint is asked many things at once and a small machine is never the bottleneck.
Finished tasks leave the window and new ones enter, so trajectories are written as they
finish.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import gin

from masksearch_jax.agent import protocol
from masksearch_jax.agent.llm_backends import (LLMBackend, LLMConnectionError, LLMError, LLMReplyError,
                                               LLMTimeoutError, Message)
from masksearch_jax.data.trajectories import MODEL, OBSERVATION, Segment, Trajectory, TrajectoryWriter
from masksearch_jax.retrieval.client import RetrievalError
from masksearch_jax.retrieval.retriever import Retriever, SearchHit

logger = logging.getLogger(__name__)

KINDS = ("ramp", "qa")
ROLES = ("planner", "rewriter", "observer", "judge")
LLM_ERROR_KINDS = ("timeout", "http", "connection", "reply")

SYSTEM_PROMPT = "You are a careful research assistant. Follow the requested output format exactly."

# The opening line of each role's prompt; each appears in that role's requests only.
ROLE_MARKERS = {
    "planner": "You are the planner of a search agent.",
    "rewriter": "You are the query rewriter of a search agent.",
    "observer": "You are the observer of a search agent.",
    "judge": "You are the judge of a search agent's answers.",
}

PLANNER_PROMPT = ROLE_MARKERS["planner"] + """
The agent solves the task below with a search engine over an encyclopedia. Assume you know \
nothing the search results have not shown: every fact the task needs must be looked up.

Task:
{task}

First think: what does the task ask for, which facts are needed, and in what order can they be \
found? Then write the first searches. Each is a short, self-contained query that names its \
entity (never "it", "he" or "#1") together with its intent, what it should find out. Ask only what \
can be searched now; a query that needs the answer of another one waits for a later turn. \
Write at most {max_sub_queries} searches.

Reply in exactly this format and nothing else:
<think> your analysis of the task and your plan </think>
<search>[{{"query": "...", "intent": "..."}}]</search>
The content of <search> must be a JSON list of objects, each with the string fields "query" and \
"intent"."""

REWRITER_PROMPT = ROLE_MARKERS["rewriter"] + """
The search engine matches keywords (BM25) against encyclopedia passages. Rewrite the query below \
into {min_queries} to {max_queries} different queries that are each likely to retrieve the passage \
that answers it: keep names and numbers exactly as written, and vary the rest (synonyms, a \
shorter keyword form, another phrasing of the relation).

Query: {query}
Intent: {intent}

Reply with a JSON object and nothing else, in this shape:
{{"queries": ["first rewrite", "second rewrite", "third rewrite"]}}"""

OBSERVER_PROMPT = ROLE_MARKERS["observer"] + """
The agent is solving the task below with a search engine. Read what it has done so far (its \
searches, and the results inside <information>) and decide the next step.

Task:
{task}

Progress so far:
{transcript}

Reply in exactly one of these forms and nothing else:
1. Answer, if the results give everything the task needs:
<think> how the results give the answer </think>
<answer> the answer </answer>
{answer_rule}
2. Continue, if something is still missing:
<think> what the results showed and what is still missing </think>
<search>[{{"query": "...", "intent": "..."}}]</search>
3. Reflect, if a search went wrong (off-topic results, a wrong assumption, a dead end):
<think> what went wrong and how to correct it </think>
<search>[{{"query": "...", "intent": "..."}}]</search>
A <search> holds a JSON list of at most {max_sub_queries} objects with the string fields "query" \
(short and self-contained) and "intent". Use only facts stated in the results; never guess. \
{turns_note}"""

RAMP_ANSWER_RULE = ("The answer is the whole paragraph with every [mask] replaced by the missing text "
                    "and nothing else changed.")
QA_ANSWER_RULE = "The answer is short (a name, a date, a number, a few words), without explanation."

JUDGE_PROMPT = ROLE_MARKERS["judge"] + """
Decide whether the predicted answer to the task is correct. It is correct when it states the same \
information as the gold answer: differences of wording, word order, letter case, punctuation or \
number and date formatting do not matter; a missing, wrong or contradicting piece of information \
does.{ramp_rule}

Task: {question}
Gold answer: {gold}{aliases}
Predicted answer: {prediction}

Reply with one word: correct or incorrect."""

RAMP_JUDGE_RULE = (" For a paragraph whose [mask]s were to be filled in, every filled-in span must agree "
                   "with the gold paragraph.")

_TAG_RE = re.compile(r"</?(?:think|search|answer|information)>")
_BLOCK_RE = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL) for name in ("think", "search", "answer")}
_FENCED_RE = re.compile(r"\A```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)\n?```\Z", re.DOTALL)


class MalformedReplyError(ValueError):
  """A role's reply does not follow the format its prompt asked for."""


# ---------------------------------------------------------------------------------------------
# Tasks.


@dataclasses.dataclass(frozen=True)
class SynthesisTask:
  """One thing for the teacher to solve.

  Attributes:
    id: The trajectory's id.
    kind: "ramp" (fill the masks of a paragraph) or "qa" (answer a question).
    prompt: The student's prompt (`protocol.ramp_prompt` or `protocol.qa_prompt`).
    text: The task as the teacher's roles and the judge read it: the masked paragraph with
      MaskSearch's fill-in instruction, or the question.
    gold: The gold answer first, then its aliases (for RAMP, the original paragraph).
    meta: What else goes into the trajectory's `meta` (masks, passage id, question type...).
    source_ids: Passage ids its searches may hide (a RAMP paragraph's own passage).
    source_texts: Passage texts its searches may hide (the RAMP paragraph, for records
      that do not name their passage).
  """

  id: str
  kind: str
  prompt: str
  text: str
  gold: tuple[str, ...]
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  source_ids: tuple[str, ...] = ()
  source_texts: tuple[str, ...] = ()


def ramp_task(example: Mapping[str, Any], index: int = 0) -> SynthesisTask:
  """The task of one RAMP example.

  Args:
    example: A `RampDataSource.examples` dict (`masked_paragraph`, `targets`, `masks`,
      `passage_id`, `title`, `mask_num`), or a MaskSearch jsonl record (`query`, `answer`,
      `ext`) as `masksearch make-ramp` writes.
    index: The example's position, for an id when it names no passage.
  """
  if "masked_paragraph" in example:
    masked, original = example["masked_paragraph"], example["targets"]
    masks = list(example.get("masks", ()))
    passage_id, title = example.get("passage_id", ""), example.get("title", "")
  elif "query" in example and "answer" in example:
    from masksearch_jax.data import masking
    masked, _ = masking.split_query(example["query"])
    original = example["answer"]
    ext = example.get("ext") or {}
    masks, passage_id, title = list(ext.get("masks", ())), "", ext.get("title", "")
  else:
    raise ValueError(f"a RAMP example needs 'masked_paragraph' and 'targets', or 'query' and 'answer'; "
                     f"got the keys {sorted(example)}")
  masked, original = _text(masked), _text(original)
  task_id = f"ramp-{_text(passage_id)}-m{len(masks)}" if passage_id else f"ramp-{index:07d}"
  return SynthesisTask(
      id=task_id, kind="ramp", prompt=protocol.ramp_prompt(masked),
      text=masked.strip() + "\n\n" + protocol.RAMP_INSTRUCTION, gold=(original,),
      meta={"masks": [_text(m) for m in masks], "passage_id": _text(passage_id), "title": _text(title)},
      source_ids=(_text(passage_id),) if passage_id else (), source_texts=(original,))


def qa_task(question: Any, index: int = 0) -> SynthesisTask:
  """The task of one question.

  Args:
    question: The world's `Question` or a `qa_formats.QAExample` (`id`, `question`,
      `answer`, `aliases`), or a dict with `question` and `answers`, `golden_answers` or
      `answer` (+ optional `aliases`) and an optional `id`.
    index: The question's position, for an id when it has none.
  """
  if isinstance(question, Mapping):
    text = question["question"]
    answers = question.get("answers") or question.get("golden_answers")
    if answers is None:
      answers = [question["answer"], *question.get("aliases", ())]
    qid, qtype = question.get("id"), question.get("type")
  else:
    text, answers = question.question, [question.answer, *question.aliases]
    qid, qtype = getattr(question, "id", None), getattr(question, "type", None)
  answers = list(dict.fromkeys(_text(a) for a in answers if _text(a).strip()))
  if not answers:
    raise ValueError(f"question {text!r} has no gold answer")
  meta = {"question_id": _text(qid)} if qid is not None else {}
  if qtype:
    meta["question_type"] = _text(qtype)
  return SynthesisTask(id=f"qa-{_text(qid)}" if qid is not None else f"qa-{index:07d}", kind="qa",
                       prompt=protocol.qa_prompt(_text(text)), text=_text(text).strip(),
                       gold=tuple(answers), meta=meta)


def make_tasks(kind: str, items: Iterable[Any]) -> Iterator[SynthesisTask]:
  """Tasks of `kind` from examples, records or questions (`SynthesisTask`s pass through).

  Args:
    kind: "ramp" or "qa".
    items: What `ramp_task` or `qa_task` takes, or `SynthesisTask`s.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  convert = ramp_task if kind == "ramp" else qa_task
  for i, item in enumerate(items):
    yield item if isinstance(item, SynthesisTask) else convert(item, i)


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------
# Roles: each builds its messages and strictly parses its reply.


@dataclasses.dataclass(frozen=True)
class SubQuery:
  """One search of a plan: the query and what it should find out."""

  query: str
  intent: str


@dataclasses.dataclass(frozen=True)
class Step:
  """A parsed planner or observer reply: a thought, then searches or an answer.

  Attributes:
    think: The `<think>` text.
    sub_queries: The searches (empty when answering).
    answer: The `<answer>` text, or None when searching.
    dropped_sub_queries: Searches past the role's limit, which were ignored.
  """

  think: str
  sub_queries: tuple[SubQuery, ...] = ()
  answer: str | None = None
  dropped_sub_queries: int = 0


def _messages(content: str) -> list[Message]:
  return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def _one_block(name: str, text: str) -> str | None:
  """The content of the only `<name>` block of `text`; None if there is none; malformed if several."""
  blocks = _BLOCK_RE[name].findall(text)
  if len(blocks) > 1:
    raise MalformedReplyError(f"{len(blocks)} <{name}> blocks, expected one")
  return blocks[0] if blocks else None


def _clean(text: str, what: str) -> str:
  """`text` stripped; malformed if empty or holding a protocol tag."""
  text = text.strip()
  if not text:
    raise MalformedReplyError(f"empty {what}")
  if _TAG_RE.search(text):
    raise MalformedReplyError(f"{what} holds a protocol tag: {text[:80]!r}")
  return text


def _parse_sub_queries(content: str, limit: int) -> tuple[tuple[SubQuery, ...], int]:
  try:
    items = json.loads(content)
  except ValueError as e:
    raise MalformedReplyError(f"<search> is not JSON: {e}") from None
  if not isinstance(items, list) or not items:
    raise MalformedReplyError("<search> must hold a non-empty JSON list")
  sub_queries = []
  for i, item in enumerate(items):
    if not isinstance(item, dict):
      raise MalformedReplyError(f"search {i} is not an object")
    query, intent = item.get("query"), item.get("intent")
    if not isinstance(query, str) or not isinstance(intent, str):
      raise MalformedReplyError(f"search {i} needs the string fields 'query' and 'intent'")
    sub_queries.append(SubQuery(" ".join(_clean(query, "query").split()), " ".join(_clean(intent, "intent").split())))
  return tuple(sub_queries[:limit]), max(0, len(sub_queries) - limit)


def _parse_step(reply: str, *, allow_answer: bool, max_sub_queries: int) -> Step:
  """A `<think>` followed by a `<search>` (or, if allowed, an `<answer>`); prose around is ignored."""
  if "<information>" in reply or "</information>" in reply:
    raise MalformedReplyError("the reply writes its own <information>")
  think = _one_block("think", reply)
  if think is None:
    raise MalformedReplyError("no <think> block")
  think = _clean(think, "<think>")
  rest = reply[reply.index("</think>") + len("</think>"):]
  search, answer = _one_block("search", rest), _one_block("answer", rest)
  leftover = _BLOCK_RE["answer"].sub("", _BLOCK_RE["search"].sub("", rest))
  before = reply[:reply.index("<think>")]
  if _TAG_RE.search(leftover) or _TAG_RE.search(before):
    raise MalformedReplyError("an unclosed, stray or misplaced protocol tag")
  if answer is not None:
    if not allow_answer:
      raise MalformedReplyError("the planner must search, not answer")
    if search is not None:
      raise MalformedReplyError("both <search> and <answer>")
    return Step(think, answer=_clean(answer, "<answer>"))
  if search is None:
    raise MalformedReplyError("no <search>" + (" or <answer>" if allow_answer else "") + " after <think>")
  sub_queries, dropped = _parse_sub_queries(search.strip(), max_sub_queries)
  return Step(think, sub_queries, dropped_sub_queries=dropped)


class _Role:
  """A role: its messages, the strict parser of its reply, and a one-off `ask`."""

  name = ""

  def messages(self, *args, **kwargs) -> list[Message]:
    raise NotImplementedError

  def parse(self, reply: str) -> Any:
    raise NotImplementedError

  def ask(self, backend: LLMBackend, *args, max_tokens: int | None = None, temperature: float = 0.0,
          **kwargs) -> Any:
    """Asks `backend` once and parses the reply.

    Args:
      backend: The chat model.
      *args: What `messages` takes.
      max_tokens: Most tokens of the reply.
      temperature: Sampling temperature.
      **kwargs: What `messages` takes.

    Raises:
      LLMError: The request failed.
      MalformedReplyError: The reply broke the role's format.
    """
    return self.parse(backend.chat(self.messages(*args, **kwargs), max_tokens=max_tokens, temperature=temperature))


class Planner(_Role):
  """Reads the task and writes the first searches.

  Args:
    max_sub_queries: Searches kept from a plan (the first ones); more are ignored.
  """

  name = "planner"

  def __init__(self, max_sub_queries: int = 3):
    self.max_sub_queries = max_sub_queries

  def messages(self, task: SynthesisTask) -> list[Message]:
    """The request for `task`'s plan."""
    return _messages(PLANNER_PROMPT.format(task=task.text, max_sub_queries=self.max_sub_queries))

  def parse(self, reply: str) -> Step:
    """`<think>` then `<search>[{"query", "intent"}, ...]</search>`; raises MalformedReplyError."""
    return _parse_step(reply, allow_answer=False, max_sub_queries=self.max_sub_queries)


class Rewriter(_Role):
  """Turns one sub-query into several search-engine queries.

  Args:
    min_queries: Fewest distinct queries a reply must give (MaskSearch asks for three).
    max_queries: Most queries kept (the first ones); more are ignored.
  """

  name = "rewriter"

  def __init__(self, min_queries: int = 3, max_queries: int = 5):
    if not 1 <= min_queries <= max_queries:
      raise ValueError(f"need 1 <= min_queries <= max_queries, got {min_queries} and {max_queries}")
    self.min_queries = min_queries
    self.max_queries = max_queries

  def messages(self, sub_query: SubQuery) -> list[Message]:
    """The request to rewrite `sub_query`."""
    return _messages(REWRITER_PROMPT.format(query=sub_query.query, intent=sub_query.intent,
                                            min_queries=self.min_queries, max_queries=self.max_queries))

  def parse(self, reply: str) -> list[str]:
    """`{"queries": [str, ...]}` (a ```json fence around it is allowed); distinct queries, in order.

    Raises:
      MalformedReplyError: Not that object, a non-string or empty query, or fewer than
        `min_queries` distinct queries.
    """
    text = reply.strip()
    fenced = _FENCED_RE.match(text)
    if fenced:
      text = fenced.group(1).strip()
    try:
      value = json.loads(text)
    except ValueError as e:
      raise MalformedReplyError(f"not a JSON object: {e}") from None
    if not isinstance(value, dict) or not isinstance(value.get("queries"), list):
      raise MalformedReplyError('expected {"queries": [...]}')
    queries: dict[str, str] = {}
    for i, query in enumerate(value["queries"]):
      if not isinstance(query, str) or not query.strip():
        raise MalformedReplyError(f"query {i} is not a non-empty string")
      query = " ".join(query.split())
      queries.setdefault(query.lower(), query)
    if len(queries) < self.min_queries:
      raise MalformedReplyError(f"{len(queries)} distinct queries, expected at least {self.min_queries}")
    return list(queries.values())[:self.max_queries]


class Observer(_Role):
  """Reads the task and the searches so far; answers, continues or reflects.

  Args:
    max_sub_queries: Searches kept from one reply (the first ones); more are ignored.
  """

  name = "observer"

  def __init__(self, max_sub_queries: int = 3):
    self.max_sub_queries = max_sub_queries

  def messages(self, task: SynthesisTask, transcript: str, turns_left: int) -> list[Message]:
    """The request after a search round.

    Args:
      task: The task.
      transcript: The student-facing response so far (thoughts, searches, `<information>`).
      turns_left: Search rounds still allowed; 0 tells the observer it must answer now.
    """
    if turns_left <= 0:
      note = "This was the last search turn: you must answer now (form 1)."
    else:
      note = f"At most {turns_left} more search turn{'s' if turns_left != 1 else ''} will be allowed."
    return _messages(OBSERVER_PROMPT.format(
        task=task.text, transcript=transcript.strip(), max_sub_queries=self.max_sub_queries,
        answer_rule=RAMP_ANSWER_RULE if task.kind == "ramp" else QA_ANSWER_RULE, turns_note=note))

  def parse(self, reply: str) -> Step:
    """`<think>` then `<answer>` or `<search>[...]</search>`; raises MalformedReplyError."""
    return _parse_step(reply, allow_answer=True, max_sub_queries=self.max_sub_queries)


_VERDICTS = {"correct": True, "true": True, "yes": True, "right": True,
             "incorrect": False, "not correct": False, "false": False, "no": False, "wrong": False}
_JUDGEMENT_KEYS = ("judgement", "judgment", "verdict", "label", "result", "decision", "correct", "is_correct")
_LABELLED_RE = re.compile(r"(?:judge?ment|verdict|decision|label|result)\W{0,4}(not\s+correct|incorrect|correct)\b",
                          re.IGNORECASE)
_VERDICT_RE = re.compile(r"\b(not\s+correct|incorrect|correct)\b", re.IGNORECASE)


def _verdict(value: Any) -> bool | None:
  if isinstance(value, bool):
    return value
  if isinstance(value, str):
    return _VERDICTS.get(" ".join(re.sub(r"[^\w\s]", " ", value).lower().split()))
  return None


def parse_judgement(reply: str) -> bool:
  """The judge's verdict: True for correct, False for incorrect.

  Understands, in this order: a JSON object with a "judgement" (or "judgment", "verdict",
  "label", "result", "decision", "correct", "is_correct") field holding "correct" /
  "incorrect" / a boolean; a labelled verdict ("Judgement: incorrect"); a reply that is one
  word (correct, incorrect, yes, no, true, false); and otherwise the words "correct",
  "incorrect" and "not correct" in prose, when they all agree.

  Args:
    reply: The judge's reply.

  Raises:
    MalformedReplyError: No verdict, or contradicting ones.
  """
  text = reply.strip()
  decoder = json.JSONDecoder()
  for match in re.finditer(r"\{", text):
    try:
      value, _ = decoder.raw_decode(text, match.start())
    except ValueError:
      continue
    if isinstance(value, dict):
      for key in _JUDGEMENT_KEYS:
        verdict = _verdict(value.get(key))
        if verdict is not None:
          return verdict
  labelled = {_verdict(m.group(1)) for m in _LABELLED_RE.finditer(text)}
  if len(labelled) == 1:
    return labelled.pop()
  whole = _verdict(text)
  if whole is not None:
    return whole
  found = {_verdict(m.group(1)) for m in _VERDICT_RE.finditer(text)}
  if len(found) == 1:
    return found.pop()
  raise MalformedReplyError("no verdict" if not found else "contradicting verdicts")


@gin.configurable(module="masksearch_jax.agent.synthesis")
class LLMJudge(_Role):
  """Asks a chat LLM whether a prediction matches the gold answer.

  Args:
    backend: The chat model (in Gin, e.g. `@judge/OpenAICompatibleBackend()`).
    max_tokens: Most tokens of a reply.
    temperature: Sampling temperature (0: the same verdict every time).
  """

  name = "judge"

  def __init__(self, backend: LLMBackend, *, max_tokens: int = 1024, temperature: float = 0.0):
    self.backend = backend
    self.max_tokens = max_tokens
    self.temperature = temperature

  def messages(self, question: str, gold: str | Sequence[str], prediction: str, *,
               ramp: bool | None = None) -> list[Message]:
    """The request to judge `prediction`.

    Args:
      question: The question, or the task's text (a masked paragraph and its instruction).
      gold: The gold answer, or the gold answer followed by its aliases.
      prediction: The answer to judge.
      ramp: Whether the task fills masks (adds the rule for filled-in spans); None guesses
        from "[mask]" in `question`.
    """
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
      raise ValueError("judging needs at least one gold answer")
    if ramp is None:
      ramp = protocol.MASK in question
    aliases = f"\nOther accepted answers: {' | '.join(golds[1:])}" if len(golds) > 1 else ""
    return _messages(JUDGE_PROMPT.format(question=question.strip(), gold=golds[0].strip(), aliases=aliases,
                                         prediction=prediction.strip(), ramp_rule=RAMP_JUDGE_RULE if ramp else ""))

  def parse(self, reply: str) -> bool:
    """See `parse_judgement`."""
    return parse_judgement(reply)

  def judge(self, question: str, gold: str | Sequence[str], prediction: str) -> bool:
    """Whether `prediction` is a correct answer.

    Args:
      question: The question (or a RAMP task's text).
      gold: The gold answer, or the gold answer followed by its aliases.
      prediction: The answer to judge.

    Raises:
      LLMError: The request failed.
      MalformedReplyError: The reply held no verdict.
    """
    return self.ask(self.backend, question, gold, prediction, max_tokens=self.max_tokens,
                    temperature=self.temperature)

  def judge_many(self, items: Sequence[tuple[str, str | Sequence[str], str]]
                 ) -> list[bool | LLMError | MalformedReplyError]:
    """Verdicts of many (question, gold, prediction) triples, asked with one `batch_chat`.

    Args:
      items: The triples, as `judge` takes them.

    Returns:
      Per triple: its verdict, or the `LLMError` or `MalformedReplyError` that stopped it.
    """
    replies = self.backend.batch_chat([self.messages(*item) for item in items], max_tokens=self.max_tokens,
                                      temperature=self.temperature)
    results: list[bool | LLMError | MalformedReplyError] = []
    for reply in replies:
      if isinstance(reply, LLMError):
        results.append(reply)
        continue
      try:
        results.append(self.parse(reply))
      except MalformedReplyError as e:
        results.append(e)
    return results


# ---------------------------------------------------------------------------------------------
# Statistics.


def _llm_error_kind(error: LLMError) -> str:
  if isinstance(error, LLMTimeoutError):
    return "timeout"
  if isinstance(error, LLMConnectionError):
    return "connection"
  if isinstance(error, LLMReplyError):
    return "reply"
  return "http"  # LLMHTTPError, and any other failed request.


@dataclasses.dataclass
class SynthesisStats:
  """What a synthesis run did.

  Attributes:
    tasks: Tasks finished (kept or dropped).
    kept: Trajectories the judge called correct (written).
    dropped_incorrect: Trajectories the judge called incorrect.
    dropped_malformed: Trajectories dropped for a reply that broke its format, by role.
    dropped_max_turns: Trajectories still searching after the last allowed turn.
    llm_errors: Trajectories dropped for a failed request, by kind: "timeout",
      "connection", "http" (an error status) and "reply" (an answer without a message).
    retrieval_errors: Trajectories dropped because the retriever failed.
    calls: Requests sent, by role.
    sub_queries: Searches in the trajectories (one per student turn).
    searches: Queries sent to the retriever (the rewrites).
  """

  tasks: int = 0
  kept: int = 0
  dropped_incorrect: int = 0
  dropped_malformed: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(ROLES, 0))
  dropped_max_turns: int = 0
  llm_errors: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(LLM_ERROR_KINDS, 0))
  retrieval_errors: int = 0
  calls: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(ROLES, 0))
  sub_queries: int = 0
  searches: int = 0

  @property
  def dropped(self) -> int:
    """Trajectories dropped, for any reason."""
    return (self.dropped_incorrect + sum(self.dropped_malformed.values()) + self.dropped_max_turns
            + sum(self.llm_errors.values()) + self.retrieval_errors)

  def to_json(self) -> dict[str, Any]:
    """The counters as a JSON object."""
    record = dataclasses.asdict(self)
    record["dropped"] = self.dropped
    return record

  def summary(self) -> str:
    """One line: kept and dropped, with the reasons."""
    def detail(counts: dict[str, int]) -> str:
      parts = [f"{k} {v:,}" for k, v in counts.items() if v]
      return f" ({', '.join(parts)})" if parts else ""

    return (f"{self.tasks:,} tasks: {self.kept:,} kept, {self.dropped:,} dropped "
            f"[incorrect {self.dropped_incorrect:,}, malformed {sum(self.dropped_malformed.values()):,}"
            f"{detail(self.dropped_malformed)}, max_turns {self.dropped_max_turns:,}, llm errors "
            f"{sum(self.llm_errors.values()):,}{detail(self.llm_errors)}, retrieval errors "
            f"{self.retrieval_errors:,}]; {self.sub_queries:,} searches ({self.searches:,} rewritten queries); "
            f"requests{detail(self.calls)}")


# ---------------------------------------------------------------------------------------------
# The pipeline.


def merge_results(results: Sequence[Sequence[SearchHit]], top_k: int) -> list[SearchHit]:
  """The hits of several queries as one list: interleaved by rank, repeats dropped, `top_k` kept.

  Every query's best hit comes first (in query order), then every query's second best, and
  so on; a passage already taken (same id) is skipped.

  Args:
    results: Each query's hits, best first.
    top_k: Most hits returned.
  """
  merged: list[SearchHit] = []
  seen: set[str] = set()
  for rank in range(max((len(hits) for hits in results), default=0)):
    for hits in results:
      if rank < len(hits) and hits[rank].id not in seen:
        seen.add(hits[rank].id)
        merged.append(hits[rank])
        if len(merged) == top_k:
          return merged
  return merged


@dataclasses.dataclass
class Outcome:
  """How one task ended.

  Attributes:
    task: The task.
    trajectory: The kept trajectory, or None when dropped.
    reason: "kept", "incorrect", "max_turns", "malformed:<role>", "llm_error:<kind>" or
      "retrieval_error".
  """

  task: SynthesisTask
  trajectory: Trajectory | None
  reason: str


class _Episode:
  """One task in flight: its student-facing transcript and where the pipeline is."""

  def __init__(self, task: SynthesisTask):
    self.task = task
    self.state = "plan"  # plan -> rewrite -> observe -> (rewrite ...) -> judge
    self.segments: list[Segment] = []
    self.searches: list[str] = []
    self.rewrites: list[list[str]] = []
    self.calls = dict.fromkeys(ROLES, 0)
    self.plan: str | None = None
    self.actions: list[str] = []
    self.turns = 0
    self.step: Step | None = None
    self.round_rewrites: list[list[str] | None] = []
    self.dropped_sub_queries = 0
    self.judge_reply: str | None = None
    self.outcome: str | None = None

  def transcript(self) -> str:
    return "".join(s.text for s in self.segments)


class LLMTeacher:
  """MaskSearch's multi-agent pipeline over chat backends and a retriever.

  Args:
    backend: The chat model of the planner, rewriter and observer.
    retriever: Where searches go.
    judge: The judge; None judges with `backend` (`LLMJudge(backend)`).
    top_k: Passages per search turn (after merging the rewrites' results); each rewrite is
      also searched for `top_k` hits.
    max_turns: Most search rounds (a plan or continuation, then the rewrites' searches)
      before the observer must answer.
    max_sub_queries: Most searches kept from one planner or observer reply.
    min_rewrites: Fewest distinct queries a rewriter reply must give.
    max_rewrites: Most rewritten queries searched per sub-query.
    max_tokens: Most tokens of a planner, rewriter or observer reply.
    temperature: Sampling temperature of those roles.
    window: Tasks in flight at once; each pipeline step sends all their requests together.
    hide_source: Leave a task's own passage (`SynthesisTask.source_ids` and
      `source_texts`, a RAMP paragraph) out of its search results.
  """

  def __init__(self, backend: LLMBackend, retriever: Retriever, *, judge: LLMJudge | None = None,
               top_k: int = 3, max_turns: int = 5, max_sub_queries: int = 3, min_rewrites: int = 3,
               max_rewrites: int = 5, max_tokens: int = 1024, temperature: float = 0.0, window: int = 64,
               hide_source: bool = True):
    for name, value in (("top_k", top_k), ("max_turns", max_turns), ("max_sub_queries", max_sub_queries),
                        ("window", window)):
      if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    self.backend = backend
    self.retriever = retriever
    self.judge = judge if judge is not None else LLMJudge(backend)
    self.top_k = top_k
    self.max_turns = max_turns
    self.planner = Planner(max_sub_queries)
    self.rewriter = Rewriter(min_rewrites, max_rewrites)
    self.observer = Observer(max_sub_queries)
    self.max_tokens = max_tokens
    self.temperature = temperature
    self.window = window
    self.hide_source = hide_source
    self.stats = SynthesisStats()

  def run(self, tasks: Iterable[SynthesisTask]) -> Iterator[Outcome]:
    """Solves `tasks`, yielding each one's outcome as it finishes (not in task order).

    Args:
      tasks: The tasks (see `make_tasks`); read lazily, `window` ahead at most.
    """
    pending = iter(tasks)
    active: list[_Episode] = []
    exhausted = False
    while True:
      while not exhausted and len(active) < self.window:
        task = next(pending, None)
        if task is None:
          exhausted = True
        else:
          active.append(_Episode(task))
      if not active:
        return
      self._advance(active)
      still = []
      for episode in active:
        if episode.outcome is None:
          still.append(episode)
        else:
          yield self._finish(episode)
      active = still

  # One loop: every episode makes its next requests; the replies move it on.
  def _advance(self, episodes: list[_Episode]) -> None:
    requests: list[tuple[_Episode, _Role, list[Message], int]] = []
    for ep in episodes:
      if ep.state == "plan":
        requests.append((ep, self.planner, self.planner.messages(ep.task), 0))
      elif ep.state == "rewrite":
        assert ep.step is not None
        for i, sub_query in enumerate(ep.step.sub_queries):
          requests.append((ep, self.rewriter, self.rewriter.messages(sub_query), i))
      elif ep.state == "observe":
        requests.append((ep, self.observer, self.observer.messages(ep.task, ep.transcript(),
                                                                   self.max_turns - ep.turns), 0))
      elif ep.state == "judge":
        assert ep.step is not None and ep.step.answer is not None
        requests.append((ep, self.judge, self.judge.messages(ep.task.text, ep.task.gold, ep.step.answer,
                                                             ramp=ep.task.kind == "ramp"), 0))
    for (ep, role, _, index), reply in zip(requests, self._ask(requests)):
      ep.calls[role.name] += 1
      self.stats.calls[role.name] += 1
      if ep.outcome is not None:
        continue  # Another of its requests already dropped it.
      if isinstance(reply, LLMError):
        kind = _llm_error_kind(reply)
        self.stats.llm_errors[kind] += 1
        ep.outcome = f"llm_error:{kind}"
        logger.warning("%s: %s request failed (%s): %s", ep.task.id, role.name, kind, reply)
        continue
      try:
        parsed = role.parse(reply)
      except MalformedReplyError as e:
        self.stats.dropped_malformed[role.name] += 1
        ep.outcome = f"malformed:{role.name}"
        logger.debug("%s: malformed %s reply (%s): %r", ep.task.id, role.name, e, reply[:300])
        continue
      self._on_reply(ep, role, index, reply, parsed)
    self._search([ep for ep in episodes if ep.outcome is None and ep.state == "rewrite"
                  and all(r is not None for r in ep.round_rewrites)])

  def _ask(self, requests: list[tuple[_Episode, _Role, list[Message], int]]) -> list[str | LLMError]:
    """The replies to `requests`, one `batch_chat` per backend and sampling setting."""
    groups: dict[tuple[int, int | None, float], list[int]] = {}
    settings: dict[tuple[int, int | None, float], LLMBackend] = {}
    for i, (_, role, _, _) in enumerate(requests):
      if isinstance(role, LLMJudge):
        backend, max_tokens, temperature = role.backend, role.max_tokens, role.temperature
      else:
        backend, max_tokens, temperature = self.backend, self.max_tokens, self.temperature
      key = (id(backend), max_tokens, temperature)
      groups.setdefault(key, []).append(i)
      settings[key] = backend
    replies: list[str | LLMError] = [LLMError("not asked")] * len(requests)
    for key, indices in groups.items():
      _, max_tokens, temperature = key
      answers = settings[key].batch_chat([requests[i][2] for i in indices], max_tokens=max_tokens,
                                         temperature=temperature)
      if len(answers) != len(indices):
        raise RuntimeError(f"{type(settings[key]).__name__}.batch_chat returned {len(answers)} replies "
                           f"for {len(indices)} conversations")
      for i, answer in zip(indices, answers):
        replies[i] = answer
    return replies

  def _on_reply(self, ep: _Episode, role: _Role, index: int, reply: str, parsed: Any) -> None:
    if role is self.planner:
      ep.plan = reply
      self._start_round(ep, parsed)
    elif role is self.rewriter:
      ep.round_rewrites[index] = parsed
    elif role is self.observer:
      if parsed.answer is not None:
        ep.actions.append("answer")
        ep.step = parsed
        ep.state = "judge"
      elif ep.turns >= self.max_turns:
        ep.actions.append("search")
        self.stats.dropped_max_turns += 1
        ep.outcome = "max_turns"
      else:
        ep.actions.append("search")
        self._start_round(ep, parsed)
    else:
      ep.judge_reply = reply
      if parsed:
        ep.outcome = "kept"
      else:
        self.stats.dropped_incorrect += 1
        ep.outcome = "incorrect"

  def _start_round(self, ep: _Episode, step: Step) -> None:
    ep.step = step
    ep.round_rewrites = [None] * len(step.sub_queries)
    ep.dropped_sub_queries += step.dropped_sub_queries
    ep.state = "rewrite"

  def _hides(self, ep: _Episode) -> bool:
    return self.hide_source and bool(ep.task.source_ids or ep.task.source_texts)

  def _search(self, episodes: list[_Episode]) -> None:
    """Searches every rewrite of the episodes' rounds at once; appends their turns."""
    if not episodes:
      return
    # Episodes that hide their source get one hit more per query, so that `top_k` remain.
    results_of: dict[int, list[list[SearchHit]]] = {}
    try:
      for hides in (False, True):
        group = [ep for ep in episodes if self._hides(ep) == hides]
        queries = [q for ep in group for rewrites in ep.round_rewrites for q in rewrites]
        if not queries:
          continue
        results = self.retriever.batch_search(queries, self.top_k + 1 if hides else self.top_k)
        self.stats.searches += len(queries)
        position = 0
        for ep in group:
          size = sum(len(rewrites) for rewrites in ep.round_rewrites)
          hits = results[position:position + size]
          position += size
          if hides:
            ids, texts = set(ep.task.source_ids), set(ep.task.source_texts)
            hits = [[h for h in result if h.id not in ids and h.text not in texts][:self.top_k] for result in hits]
          results_of[id(ep)] = hits
    except RetrievalError as e:
      logger.warning("retrieval failed for %d tasks: %s", len(episodes), e)
      for ep in episodes:
        self.stats.retrieval_errors += 1
        ep.outcome = "retrieval_error"
      return
    for ep in episodes:
      assert ep.step is not None
      results, position = results_of[id(ep)], 0
      for i, (sub_query, rewrites) in enumerate(zip(ep.step.sub_queries, ep.round_rewrites)):
        hits = merge_results(results[position:position + len(rewrites)], self.top_k)
        position += len(rewrites)
        think = ep.step.think if i == 0 else sub_query.intent
        ep.segments.append(Segment(MODEL, f"{protocol.THINK[0]} {think} {protocol.THINK[1]}\n"
                                          f"{protocol.SEARCH[0]} {sub_query.query} {protocol.SEARCH[1]}"))
        observation = protocol.format_observation([(hit.title, hit.text) for hit in hits])
        ep.segments.append(Segment(OBSERVATION, f"\n\n{observation}\n\n"))
        ep.searches.append(sub_query.query)
        ep.rewrites.append(list(rewrites))
        self.stats.sub_queries += 1
      ep.turns += 1
      ep.state = "observe"

  def _finish(self, ep: _Episode) -> Outcome:
    self.stats.tasks += 1
    if ep.outcome != "kept":
      return Outcome(ep.task, None, ep.outcome or "")
    self.stats.kept += 1
    step = ep.step
    assert step is not None and step.answer is not None
    segments = [*ep.segments, Segment(MODEL, f"{protocol.THINK[0]} {step.think} {protocol.THINK[1]}\n"
                                             f"{protocol.ANSWER[0]} {step.answer} {protocol.ANSWER[1]}")]
    meta = {**ep.task.meta, "teacher": "llm", "teacher_model": str(getattr(self.backend, "model", "")) or
            type(self.backend).__name__, "role_calls": dict(ep.calls), "plan": ep.plan,
            "rewrites": ep.rewrites, "observer_actions": ep.actions, "judge_reply": ep.judge_reply,
            "turns": ep.turns}
    if ep.dropped_sub_queries:
      meta["ignored_sub_queries"] = ep.dropped_sub_queries
    trajectory = Trajectory(id=ep.task.id, kind=ep.task.kind, prompt=ep.task.prompt, segments=tuple(segments),
                            stop_reason="answer", answer=step.answer, gold=ep.task.gold,
                            searches=tuple(ep.searches), reward=1.0, meta=meta)
    return Outcome(ep.task, trajectory, "kept")


# ---------------------------------------------------------------------------------------------
# Entry points.


@gin.configurable(module="masksearch_jax.agent.synthesis")
def teacher_backends(backend: LLMBackend = gin.REQUIRED, judge_backend: LLMBackend | None = None
                     ) -> tuple[LLMBackend, LLMBackend | None]:
  """The teacher's chat backends, as Gin binds them.

  In a Gin file:

    synthesis.teacher_backends.backend = @llm_backends.OpenAICompatibleBackend()
    llm_backends.OpenAICompatibleBackend.base_url = "http://127.0.0.1:8000/v1"
    llm_backends.OpenAICompatibleBackend.model = "Qwen/Qwen2.5-72B-Instruct"
    # Optional: another model as the judge.
    synthesis.teacher_backends.judge_backend = @judge/llm_backends.OpenAICompatibleBackend()
    judge/llm_backends.OpenAICompatibleBackend.model = "..."

  Args:
    backend: The planner's, rewriter's and observer's model.
    judge_backend: The judge's model; None judges with `backend`.
  """
  return backend, judge_backend


@gin.configurable(module="masksearch_jax.agent.synthesis",
                  denylist=["kind", "tasks", "retriever", "backend", "out_path", "judge_backend"])
def synthesize_with_llm(kind: str, tasks: Iterable[Any], retriever: Retriever, backend: LLMBackend,
                        out_path: str, *, judge_backend: LLMBackend | None = None, top_k: int = 3,
                        max_turns: int = 5, max_sub_queries: int = 3, min_rewrites: int = 3,
                        max_rewrites: int = 5, max_tokens: int = 1024, temperature: float = 0.0,
                        window: int = 64, hide_source: bool = True, progress: bool = True,
                        on_outcome: Callable[[Outcome], None] | None = None) -> SynthesisStats:
  """Runs MaskSearch's teacher pipeline over `tasks` and appends the kept trajectories to `out_path`.

  Each kept trajectory is written (one jsonl line, `TrajectoryWriter`) as soon as its task
  finishes; an existing file is continued. Dropped tasks are only counted.

  Args:
    kind: "ramp" or "qa".
    tasks: RAMP examples or MaskSearch records (kind "ramp"), questions (kind "qa"), or
      `SynthesisTask`s; see `make_tasks`. Read lazily.
    retriever: Where searches go.
    backend: The planner's, rewriter's and observer's chat model.
    out_path: The trajectory jsonl file.
    judge_backend: The judge's chat model; None judges with `backend`.
    top_k: Passages per search turn (the merged results of a sub-query's rewrites).
    max_turns: Most search rounds before the observer must answer (MaskSearch: 5).
    max_sub_queries: Most searches kept from one planner or observer reply.
    min_rewrites: Fewest distinct rewritten queries per sub-query (MaskSearch: 3).
    max_rewrites: Most rewritten queries searched per sub-query.
    max_tokens: Most tokens of a planner, rewriter or observer reply.
    temperature: Sampling temperature of those roles.
    window: Tasks in flight at once; their requests go out together (keep it above the
      backend's concurrency).
    hide_source: Leave a RAMP paragraph's own passage out of its search results (so the
      masked spans must be found elsewhere).
    progress: Show a progress bar with kept and dropped counts, and print the summary
      line to stderr at the end (it is always logged).
    on_outcome: Called with each task's `Outcome` as it finishes (after its trajectory is
      written), e.g. to collect the dropped ones.

  Returns:
    The run's counters.
  """
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  # The judge's own settings come from Gin (`LLMJudge.max_tokens`, `LLMJudge.temperature`).
  judge = LLMJudge(judge_backend if judge_backend is not None else backend)
  teacher = LLMTeacher(backend, retriever, judge=judge, top_k=top_k, max_turns=max_turns,
                       max_sub_queries=max_sub_queries, min_rewrites=min_rewrites, max_rewrites=max_rewrites,
                       max_tokens=max_tokens, temperature=temperature, window=window, hide_source=hide_source)
  total = len(tasks) if hasattr(tasks, "__len__") else None
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=total, desc=f"synthesize {kind}", unit=" tasks")
  stats = teacher.stats
  try:
    with TrajectoryWriter(out_path) as writer:
      for outcome in teacher.run(make_tasks(kind, tasks)):
        if outcome.trajectory is not None:
          writer.write(outcome.trajectory)
        if on_outcome is not None:
          on_outcome(outcome)
        if bar is not None:
          bar.update(1)
          bar.set_postfix(kept=stats.kept, dropped=stats.dropped, refresh=False)
  finally:
    if bar is not None:
      bar.close()
  line = f"synthesize {kind} -> {out_path}: {stats.summary()}"
  logger.info("%s", line)
  if progress:
    print(line, file=sys.stderr)
  return stats


__all__ = ["KINDS", "LLMJudge", "LLMTeacher", "MalformedReplyError", "Observer", "Outcome", "Planner",
           "ROLES", "ROLE_MARKERS", "Rewriter", "Step", "SubQuery", "SynthesisStats", "SynthesisTask",
           "make_tasks", "merge_results", "parse_judgement", "qa_task", "ramp_task", "synthesize_with_llm",
           "teacher_backends"]
