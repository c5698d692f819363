"""MaskSearch's teacher pipeline against a real OpenAI-compatible HTTP server on loopback.

The server answers with a toy "LLM" (`ToyLLM`): it tells the roles apart by the opening
line of their prompts (`synthesis.ROLE_MARKERS`), plans searches from what the test knows
about each task, and answers only from the `<information>` text it is shown (by regex), so a
kept trajectory really was solved from the real search results of the tiny world's index.
Faults (malformed replies, errors, delays) are injected per role and task by `Faults`.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import string
import threading
import time
from typing import Any

import gin
import pytest

from conftest import TINY_WORLD_CONFIG
from fake_openai_server import Reply
from masksearch_jax.agent import protocol, synthesis
from masksearch_jax.agent.llm_backends import LLMHTTPError, OpenAICompatibleBackend
from masksearch_jax.agent.synthesis import (LLMJudge, MalformedReplyError, Observer, Planner, Rewriter,
                                            SynthesisTask, parse_judgement, synthesize_with_llm)
from masksearch_jax.data.trajectories import MODEL, OBSERVATION, read_trajectories
from masksearch_jax.retrieval.retriever import SearchHit
from masksearch_jax.retrieval.tantivy_index import TantivyRetriever

MARKERS = synthesis.ROLE_MARKERS
TOP_K = 3


# -- the toy LLM ------------------------------------------------------------------------------


def role_of(text: str) -> str:
  return next(role for role, marker in MARKERS.items() if text.startswith(marker))


def last_message(body: dict) -> str:
  return body["messages"][-1]["content"]


def between(text: str, start: str, end: str) -> str:
  return text.split(start, 1)[1].split(end, 1)[0]


def toy_rewrites(query: str) -> list[str]:
  """What the toy rewriter answers for `query` (the test checks the trajectories against it)."""
  return [query, f"{query} facts", f"information on {query}"]


def normalize(text: str) -> str:
  text = "".join(c for c in text.lower() if c not in string.punctuation)
  return " ".join(text.split())


def search_reply(think: str, queries: list[tuple[str, str]]) -> str:
  plan = json.dumps([{"query": q, "intent": i} for q, i in queries])
  return f"<think> {think} </think>\n<search>{plan}</search>"


def documents(transcript: str) -> list[str]:
  """The passage texts of every `<information>` block of a transcript."""
  texts = []
  for block in re.findall(r"<information>(.*?)</information>", transcript, re.DOTALL):
    texts += re.findall(r"^Doc \d+\(Title: .*?\) (.*)$", block, re.MULTILINE)
  return texts


class ToyLLM:
  """Answers each role by reading its prompt; see the module docstring.

  Args:
    hops: Question text -> [(subject, relation label, answer, sub-question)], one per hop.
    masks: Masked paragraph -> (its masked spans, its page title).
    delay: Seconds each answer takes (so concurrent requests overlap).
  """

  def __init__(self, hops: dict[str, list[tuple[str, str, str, str]]],
               masks: dict[str, tuple[list[str], str]] | None = None, delay: float = 0.0):
    self.hops = hops
    self.masks = masks or {}
    self.delay = delay
    self.lock = threading.Lock()
    self.in_flight = 0
    self.max_in_flight = 0

  def __call__(self, body: dict) -> Reply:
    with self.lock:
      self.in_flight += 1
      self.max_in_flight = max(self.max_in_flight, self.in_flight)
    try:
      time.sleep(self.delay)
      return Reply(self.reply(last_message(body)))
    finally:
      with self.lock:
        self.in_flight -= 1

  def reply(self, text: str) -> str:
    role = role_of(text)
    if role == "planner":
      return self.plan(between(text, "Task:\n", "\n\nFirst think"))
    if role == "rewriter":
      return json.dumps({"queries": toy_rewrites(between(text, "Query: ", "\n"))})
    if role == "observer":
      return self.observe(between(text, "Task:\n", "\n\nProgress so far:\n"),
                          between(text, "Progress so far:\n", "\n\nReply in exactly"))
    return self.judge(text)

  @staticmethod
  def masked_paragraph(task: str) -> str | None:
    suffix = "\n\n" + protocol.RAMP_INSTRUCTION
    return task[:-len(suffix)] if task.endswith(suffix) else None

  def plan(self, task: str) -> str:
    masked = self.masked_paragraph(task)
    if masked is not None:
      # One search per mask: the words of the sentence around it.
      sentences = [s for s in re.split(r"(?<=[.;])\s+", masked) if protocol.MASK in s]
      queries = [(" ".join(s.replace(protocol.MASK, " ").split()[:14]), f"find the masked span of: {s[:40]}")
                 for s in sentences]
      return search_reply("The paragraph has masks; I search for the sentences around them.", queries)
    subject, relation, _, _ = self.hops[task][0]
    return search_reply(f"First I need the {relation} of {subject}.", [(f"{subject} {relation}", relation)])

  def observe(self, task: str, transcript: str) -> str:
    docs = documents(transcript)
    searched = re.findall(r"<search> (.*?) </search>", transcript)
    masked = self.masked_paragraph(task)
    if masked is not None:
      pattern = "(.+?)".join(re.escape(piece) for piece in masked.split(protocol.MASK))
      for doc in docs:
        match = re.fullmatch(pattern, doc)
        if match:
          fills = ", ".join(match.groups())
          return f"<think> A result states the whole paragraph: {fills}. </think>\n<answer> {doc} </answer>"
      masks, title = self.masks[masked]
      info = " ".join(docs)
      missing = [i for i, span in enumerate(masks) if span not in info]
      if not missing:
        pieces = masked.split(protocol.MASK)
        filled = pieces[0] + "".join(span + piece for span, piece in zip(masks, pieces[1:]))
        return f"<think> The results give {', '.join(masks)}. </think>\n<answer> {filled} </answer>"
      # The words around the first missing mask, more of them after each failure.
      pieces = masked.split(protocol.MASK)
      width = 4 + 2 * len(searched)
      around = pieces[missing[0]].split()[-width:] + pieces[missing[0] + 1].split()[:width]
      query = " ".join([title, *around]).replace(protocol.MASK, " ")
      return search_reply(f"The results miss mask {missing[0] + 1}; I search its page.", [(query, "retry")])
    info = " ".join(docs)
    hops = self.hops[task]
    for i, (subject, relation, answer, sub_question) in enumerate(hops):
      if answer not in info:
        query = f"{subject} {relation}"
        if query in searched:  # Reflect: that search failed, rephrase it as a question.
          rephrased = sub_question
          for j, (_, _, previous, _) in enumerate(hops[:i]):
            rephrased = rephrased.replace(f"#{j + 1}", previous)
          return search_reply(f"The search for {query} did not give the {relation}; I rephrase it.",
                              [(rephrased, relation)])
        return search_reply(f"Now I need the {relation} of {subject}.", [(query, relation)])
    subject, relation, final, _ = hops[-1]
    return f"<think> The results say the {relation} of {subject} is {final}. </think>\n<answer> {final} </answer>"

  @staticmethod
  def judge(text: str) -> str:
    gold = [between(text, "\nGold answer: ", "\n")]
    if "\nOther accepted answers: " in text:
      gold += between(text, "\nOther accepted answers: ", "\n").split(" | ")
    prediction = between(text, "\nPredicted answer: ", "\n\nReply with one word")
    return "correct" if normalize(prediction) in {normalize(g) for g in gold} else "incorrect"


class Faults:
  """The toy LLM, except for the requests a rule matches.

  Args:
    toy: The toy LLM.
    rules: (role, a substring of the request's last message, replies): requests of that role
      carrying the substring get the replies in order (the last one repeats); a reply may be
      a callable of the toy's own reply, returning a `Reply`.
  """

  def __init__(self, toy: ToyLLM, rules: list[tuple[str, str, list[Any]]]):
    self.toy = toy
    self.rules = [(role, needle, list(replies)) for role, needle, replies in rules]
    self.lock = threading.Lock()

  def __call__(self, body: dict) -> Reply:
    text = last_message(body)
    role = role_of(text)
    for rule_role, needle, replies in self.rules:
      if rule_role == role and needle in text:
        with self.lock:
          reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return reply(self.toy.reply(text)) if callable(reply) else reply
    return self.toy(body)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_retriever(tiny_index):
  with TantivyRetriever(tiny_index, num_threads=2) as retriever:
    yield retriever


@pytest.fixture(scope="module")
def questions(tiny_world, tiny_retriever):
  """Two-hop questions the toy solves at once: each hop's search finds that hop's answer."""
  def solvable(q) -> bool:
    return all(answer in merged_observation(tiny_retriever, toy_rewrites(f"{subject} {relation}"))
               for subject, relation, answer in q.evidence)

  chosen = [q for q in tiny_world.questions if q.type == "compositional" and q.hops == 2 and solvable(q)][:8]
  assert len(chosen) == 8
  return chosen


@pytest.fixture(scope="module")
def toy_hops(questions):
  return {q.question: [(subject, relation, answer, sub[0]) for (subject, relation, answer), sub
                       in zip(q.evidence, q.sub_questions)] for q in questions}


@pytest.fixture(scope="module")
def ramp_masks(ramp_examples):
  return {ex["masked_paragraph"]: (list(ex["masks"]), ex["title"]) for ex in ramp_examples}


@pytest.fixture(scope="module")
def ramp_examples():
  from masksearch_jax.data.ramp_source import RampDataSource
  with gin.unlock_config():
    gin.bind_parameter("masksearch_jax.data.ramp_source.RampCorpus.world", TINY_WORLD_CONFIG)
  try:
    return list(itertools.islice(RampDataSource(None).examples("train"), 6))
  finally:
    gin.clear_config()


def backend_for(server, **kwargs) -> OpenAICompatibleBackend:
  options = {"timeout": 5.0, "max_retries": 1, "backoff": 0.01, "concurrency": 8, **kwargs}
  return OpenAICompatibleBackend(server.base_url, "teacher-model", **options)


def run(kind, tasks, retriever, server, out_path, **kwargs):
  options = {"progress": False}
  options.update(kwargs)
  backend = options.pop("backend", None) or backend_for(server)
  with backend:
    return synthesize_with_llm(kind, tasks, retriever, backend, str(out_path), **options)


def merged_observation(retriever, queries: list[str], top_k: int = TOP_K, hide: str | None = None) -> str:
  """The observation the pipeline must show for `queries`, merged here independently.

  `hide` is a passage id left out of the results (a RAMP paragraph's own passage).
  """
  results = [[h for h in result if h.id != hide][:top_k]
             for result in retriever.batch_search(queries, top_k + 1 if hide else top_k)]
  hits: dict[str, SearchHit] = {}
  for rank in range(top_k):
    for result in results:
      if rank < len(result):
        hits.setdefault(result[rank].id, result[rank])
  docs = list(hits.values())[:top_k]
  return "\n\n" + protocol.format_observation([(h.title, h.text) for h in docs]) + "\n\n"


def check_trajectory(t, retriever, hide: str | None = None) -> None:
  """Everything a kept trajectory must satisfy, against the real retriever."""
  assert t.stop_reason == "answer" and t.reward == 1.0
  types = [s.type for s in t.segments]
  assert types == [MODEL, OBSERVATION] * len(t.searches) + [MODEL]
  assert t.meta["role_calls"]["planner"] == 1 and t.meta["role_calls"]["judge"] == 1
  assert t.meta["role_calls"]["rewriter"] == len(t.searches) == len(t.meta["rewrites"])
  assert t.meta["role_calls"]["observer"] == t.meta["turns"] == len(t.meta["observer_actions"])
  assert t.meta["observer_actions"][-1] == "answer"
  assert t.meta["teacher"] == "llm" and t.meta["teacher_model"] == "teacher-model"
  assert "<search>" in t.meta["plan"]
  for i, query in enumerate(t.searches):
    model, observation = t.segments[2 * i], t.segments[2 * i + 1]
    assert re.fullmatch(r"<think> [^<>]+ </think>\n<search> (.+) </search>", model.text).group(1) == query
    assert t.meta["rewrites"][i] == toy_rewrites(query)
    assert observation.text == merged_observation(retriever, t.meta["rewrites"][i], hide=hide)
  final = re.fullmatch(r"<think> [^<>]+ </think>\n<answer> (.+) </answer>", t.segments[-1].text)
  assert final and final.group(1) == t.answer


def observations(t) -> str:
  return "".join(s.text for s in t.segments if s.type == OBSERVATION)


# -- the happy path -----------------------------------------------------------------------------


def test_ramp_and_qa_tasks_give_consistent_kept_trajectories(fake_openai, tiny_retriever, questions, toy_hops,
                                                             ramp_examples, ramp_masks, tmp_path):
  toy = ToyLLM(toy_hops, ramp_masks, delay=0.02)
  server = fake_openai(default=toy)

  ramp_path = tmp_path / "ramp.jsonl"
  ramp_stats = run("ramp", ramp_examples, tiny_retriever, server, ramp_path)
  qa_path = tmp_path / "qa.jsonl"
  qa_stats = run("qa", questions, tiny_retriever, server, qa_path)

  assert toy.max_in_flight > 1  # Requests of different tasks went out together.
  for stats, tasks in ((ramp_stats, ramp_examples), (qa_stats, questions)):
    assert stats.tasks == len(tasks) == stats.kept + stats.dropped
    assert stats.dropped_malformed == dict.fromkeys(synthesis.ROLES, 0)
    assert sum(stats.llm_errors.values()) == 0
  assert ramp_stats.kept >= 4 and qa_stats.kept == len(questions)

  ramp = list(read_trajectories(ramp_path))
  assert len(ramp) == ramp_stats.kept
  by_id = {f"ramp-{ex['passage_id']}-m{len(ex['masks'])}": ex for ex in ramp_examples}
  for t in ramp:
    example = by_id[t.id]
    check_trajectory(t, tiny_retriever, hide=example["passage_id"])
    # The paragraph's own passage never showed; every masked span was found elsewhere.
    assert example["targets"] not in observations(t)
    assert all(span in observations(t) for span in example["masks"])
    assert t.kind == "ramp" and t.prompt == protocol.ramp_prompt(example["masked_paragraph"])
    assert t.gold == (example["targets"],) and t.answer == example["targets"]
    assert t.meta["masks"] == list(example["masks"]) and t.meta["passage_id"] == example["passage_id"]
    # The first round searched one sub-query per mask (the toy planner's plan, up to 3);
    # the later sub-queries of a round think their intent.
    planned = json.loads(between(t.meta["plan"], "<search>", "</search>"))
    assert t.searches[:min(3, len(planned))] == tuple(p["query"] for p in planned[:3])
    for i, p in enumerate(planned[1:3], 1):
      assert t.segments[2 * i].text.startswith(f"<think> {p['intent']} </think>")
    assert t.meta.get("ignored_sub_queries", 0) == max(0, len(planned) - 3)
  # Three rewrites searched per sub-query, kept or not.
  assert ramp_stats.searches == 3 * ramp_stats.sub_queries >= 3 * sum(len(t.searches) for t in ramp)

  qa = list(read_trajectories(qa_path))
  assert len(qa) == qa_stats.kept
  by_question = {q.id: q for q in questions}
  for t in qa:
    q = by_question[t.meta["question_id"]]
    check_trajectory(t, tiny_retriever)
    assert t.id == f"qa-{q.id}" and t.kind == "qa" and t.prompt == protocol.qa_prompt(q.question)
    assert t.gold == (q.answer, *q.aliases) and t.answer == q.answer and q.answer in observations(t)
    assert t.searches[0] == f"{q.evidence[0][0]} {q.evidence[0][1]}"

  # Every request named the model and came with the role's system prompt.
  bodies = [body for _, body, _ in server.requests]
  assert all(b["model"] == "teacher-model" and b["messages"][0]["role"] == "system" for b in bodies)
  assert server.count(MARKERS["planner"]) == len(ramp_examples) + len(questions)
  assert server.count(MARKERS["judge"]) == ramp_stats.kept + ramp_stats.dropped_incorrect + qa_stats.kept + \
      qa_stats.dropped_incorrect


def test_without_hiding_the_source_the_ramp_paragraph_itself_is_found(fake_openai, tiny_retriever, ramp_examples,
                                                                      ramp_masks, tmp_path):
  server = fake_openai(default=ToyLLM({}, ramp_masks))
  stats = run("ramp", ramp_examples, tiny_retriever, server, tmp_path / "ramp.jsonl", hide_source=False)
  copied = [t for t in read_trajectories(tmp_path / "ramp.jsonl") if t.gold[0] in observations(t)]
  assert stats.kept >= 4 and len(copied) >= 4
  for t in copied:
    check_trajectory(t, tiny_retriever)
    assert "states the whole paragraph" in t.segments[-1].text


def test_summary_line_and_progress_bar(fake_openai, tiny_retriever, questions, toy_hops, tmp_path, capsys):
  server = fake_openai(default=ToyLLM(toy_hops))
  stats = run("qa", questions[:2], tiny_retriever, server, tmp_path / "qa.jsonl", progress=True)
  err = capsys.readouterr().err
  assert f"2 tasks: {stats.kept} kept, {stats.dropped} dropped" in err
  assert "synthesize qa" in err and "kept=" in err
  assert stats.to_json()["dropped"] == stats.dropped


def test_the_observer_reflects_after_a_useless_search(fake_openai, tiny_retriever, questions, toy_hops, tmp_path):
  q = questions[0]
  useless = Reply(json.dumps({"queries": ["zzzq", "qqzzx", "xqzq"]}))
  faults = Faults(ToyLLM(toy_hops), [("rewriter", f"Query: {q.evidence[0][0]} {q.evidence[0][1]}\n", [useless])])
  server = fake_openai(default=faults)
  stats = run("qa", [q], tiny_retriever, server, tmp_path / "qa.jsonl")
  assert stats.kept == 1
  (t,) = read_trajectories(tmp_path / "qa.jsonl")
  assert t.meta["rewrites"][0] == ["zzzq", "qqzzx", "xqzq"]
  assert t.segments[1].text == "\n\n<information></information>\n\n"  # Nothing found.
  assert t.searches[1] == q.sub_questions[0][0]  # The reflection rephrased the failed search.
  assert "did not give" in t.segments[2].text
  assert t.meta["observer_actions"][:2] == ["search", "search"] and t.answer == q.answer


# -- malformed replies ----------------------------------------------------------------------------


def test_malformed_replies_of_each_role_drop_only_their_trajectory(fake_openai, tiny_retriever, questions,
                                                                    toy_hops, tmp_path):
  q = questions
  faults = Faults(ToyLLM(toy_hops), [
      ("planner", q[0].question, [Reply("I would search for the birthplace first.")]),
      ("rewriter", q[1].evidence[0][0], [Reply('{"queries": ["only one", "ONLY ONE"]}')]),
      ("observer", q[2].question, [Reply("<think> I am done. </think>")]),
      ("judge", q[3].question, [Reply("It depends on how you look at it.")]),
      ("judge", q[4].question, [Reply("incorrect")]),
  ])
  server = fake_openai(default=faults)
  stats = run("qa", q, tiny_retriever, server, tmp_path / "qa.jsonl")
  assert stats.dropped_malformed == {"planner": 1, "rewriter": 1, "observer": 1, "judge": 1}
  assert stats.dropped_incorrect == 1
  assert stats.tasks == len(q) and stats.kept == len(q) - 5
  kept = {t.id for t in read_trajectories(tmp_path / "qa.jsonl")}
  assert kept == {f"qa-{x.id}" for x in q[5:]}


@pytest.mark.parametrize("reply", [
    "<search>[{\"query\": \"a\", \"intent\": \"b\"}]</search>",  # No think.
    "<think> t </think>",  # No search.
    "<think> t </think><search>not json</search>",
    "<think> t </think><search>[]</search>",
    "<think> t </think><search>{\"query\": \"a\", \"intent\": \"b\"}</search>",  # Not a list.
    "<think> t </think><search>[\"a plain string\"]</search>",
    "<think> t </think><search>[{\"query\": \"a\"}]</search>",  # No intent.
    "<think> t </think><search>[{\"query\": \"  \", \"intent\": \"b\"}]</search>",
    "<think> t </think><search>[{\"query\": 3, \"intent\": \"b\"}]</search>",
    "<think> t </think><search>[{\"query\": \"a </search>\", \"intent\": \"b\"}]</search>",
    "<think> t </think><search>[{\"query\": \"a\", \"intent\": \"b\"}]",  # Unclosed.
    "<think> t </think><search>[{\"query\": \"a\", \"intent\": \"b\"}]</search><search>[]</search>",
    "<think> t </think><answer> x </answer>",  # A planner must search.
    "<think> t <search> x </search> </think><search>[{\"query\": \"a\", \"intent\": \"b\"}]</search>",
    "<search>[{\"query\": \"a\", \"intent\": \"b\"}]</search><think> t </think>",  # Action before think.
    "<think>   </think><search>[{\"query\": \"a\", \"intent\": \"b\"}]</search>",
    "<think> t </think><information>Doc 1(Title: x) y</information><search>[]</search>",
])
def test_planner_parse_is_strict(reply):
  with pytest.raises(MalformedReplyError):
    Planner().parse(reply)


def test_planner_and_observer_parse_good_replies():
  step = Planner(max_sub_queries=2).parse(
      'Here is my plan.\n<think> Find X.\n Then Y. </think>\n<search>[{"query": " born  in\\nX ", "intent": "birth"},'
      ' {"query": "Y", "intent": "y"}, {"query": "Z", "intent": "z"}]</search>\nDone.')
  assert step.think == "Find X.\n Then Y." and step.answer is None
  assert step.sub_queries == (synthesis.SubQuery("born in X", "birth"), synthesis.SubQuery("Y", "y"))
  assert step.dropped_sub_queries == 1
  answer = Observer().parse("<think> It is Paris. </think>\n<answer> Paris </answer>")
  assert answer.answer == "Paris" and answer.think == "It is Paris." and not answer.sub_queries
  more = Observer().parse('<think> Wrong city; retry. </think><search>[{"query": "q", "intent": "i"}]</search>')
  assert more.answer is None and more.sub_queries[0].query == "q"
  for bad in ("<think> t </think><answer> </answer>", "<think> t </think><answer> a </answer><search>[]</search>",
              "<answer> a </answer>", "<think> t </think><answer> a <think> </answer>", "plain text"):
    with pytest.raises(MalformedReplyError):
      Observer().parse(bad)


def test_rewriter_parse():
  rewriter = Rewriter(min_queries=3, max_queries=4)
  assert rewriter.parse('{"queries": ["a b", "c", "d"]}') == ["a b", "c", "d"]
  assert rewriter.parse('```json\n{"queries": ["a", " b\\n c ", "d", "e", "f"]}\n```') == ["a", "b c", "d", "e"]
  for bad in ('{"queries": ["a", "A", "b"]}', '["a", "b", "c"]', '{"queries": "a b c"}', "a, b, c",
              '{"queries": ["a", "b", 3]}', '{"queries": ["a", "b", ""]}', '{"query": ["a", "b", "c"]}'):
    with pytest.raises(MalformedReplyError):
      rewriter.parse(bad)
  with pytest.raises(ValueError):
    Rewriter(min_queries=4, max_queries=3)


# -- request errors -------------------------------------------------------------------------------


def test_timeouts_http_errors_and_retries_are_counted(fake_openai, tiny_retriever, questions, toy_hops, tmp_path):
  q = questions
  faults = Faults(ToyLLM(toy_hops), [
      ("planner", q[0].question, [Reply("late", delay=1.0)]),
      ("planner", q[1].question, [Reply("busy", status=500), lambda good: Reply(good)]),
      ("rewriter", q[2].evidence[0][0], [Reply("context length exceeded", status=400)]),
      ("observer", q[3].question, [Reply(body={"choices": []})]),
  ])
  server = fake_openai(default=faults)
  stats = run("qa", q[:5], tiny_retriever, server, tmp_path / "qa.jsonl",
              backend=backend_for(server, timeout=0.3, max_retries=1))
  assert stats.llm_errors == {"timeout": 1, "http": 1, "connection": 0, "reply": 1}
  assert stats.kept == 2 and stats.tasks == 5
  kept = {t.id for t in read_trajectories(tmp_path / "qa.jsonl")}
  assert kept == {f"qa-{q[1].id}", f"qa-{q[4].id}"}

  def requests_for(role: str, needle: str) -> int:
    return sum(1 for _, body, _ in server.requests if role_of(last_message(body)) == role
               and needle in last_message(body))

  assert requests_for("planner", q[0].question) == 2  # A timeout is retried.
  assert requests_for("planner", q[1].question) == 2  # 500, then success.
  assert requests_for("rewriter", q[2].evidence[0][0]) == 1  # A 400 is not retried.


def test_an_unreachable_judge_is_a_connection_error(fake_openai, tiny_retriever, questions, toy_hops, tmp_path):
  server = fake_openai(default=ToyLLM(toy_hops))
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  with OpenAICompatibleBackend(f"http://127.0.0.1:{port}/v1", "judge", max_retries=0) as judge:
    stats = run("qa", questions[:3], tiny_retriever, server, tmp_path / "qa.jsonl", judge_backend=judge)
  assert stats.kept == 0
  assert stats.llm_errors["connection"] == 3 and stats.calls["judge"] == 3
  assert server.count(MARKERS["judge"]) == 0
  assert (tmp_path / "qa.jsonl").read_text() == ""


def test_retrieval_errors_drop_the_tasks_of_that_search(fake_openai, questions, toy_hops, tmp_path):
  from masksearch_jax.retrieval.client import RetrievalError
  from masksearch_jax.retrieval.retriever import Retriever

  class Down(Retriever):
    def batch_search(self, queries, top_k=5):
      raise RetrievalError("server down")

  server = fake_openai(default=ToyLLM(toy_hops))
  stats = run("qa", questions[:2], Down(), server, tmp_path / "qa.jsonl")
  assert stats.retrieval_errors == 2 and stats.kept == 0 and stats.dropped == 2


# -- max turns --------------------------------------------------------------------------------------


def test_an_observer_that_never_answers_hits_max_turns(fake_openai, tiny_retriever, questions, toy_hops,
                                                       tmp_path):
  stubborn = questions[0].question
  forever = Reply(search_reply("Still not sure; one more search.", [("more about it", "anything")]))
  server = fake_openai(default=Faults(ToyLLM(toy_hops), [("observer", stubborn, [forever])]))
  stats = run("qa", questions[:3], tiny_retriever, server, tmp_path / "qa.jsonl", max_turns=3)
  assert stats.dropped_max_turns == 1 and stats.tasks == 3
  observer_prompts = [last_message(b) for _, b, _ in server.requests
                      if role_of(last_message(b)) == "observer" and stubborn in last_message(b)]
  assert len(observer_prompts) == 3
  assert "you must answer now" in observer_prompts[-1] and "you must answer now" not in observer_prompts[0]
  assert "2 more search turns" in observer_prompts[0]
  assert f"qa-{questions[0].id}" not in {t.id for t in read_trajectories(tmp_path / "qa.jsonl")}


# -- the judge -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, verdict", [
    ("correct", True),
    ("Incorrect", False),
    ("  CORRECT.  ", True),
    ("incorrect\n", False),
    ("not correct", False),
    ('{"judgement": "correct"}', True),
    ('{"judgement": "incorrect"}', False),
    ('```json\n{"judgment": "Incorrect"}\n```', False),
    ('Verdict follows. {"verdict": true}', True),
    ('{"is_correct": false}', False),
    ("The prediction names the same person, so it is correct.", True),
    ("The dates differ, so the prediction is incorrect.", False),
    ("It might look correct at first, but it is not.\nJudgement: incorrect", False),
    ("**Verdict:** correct", True),
    ("yes", True),
    ("No", False),
])
def test_judge_parse(reply, verdict):
  assert parse_judgement(reply) is verdict


@pytest.mark.parametrize("reply", ["", "maybe", "I cannot tell.", "correct or incorrect?",
                                   '{"judgement": "unsure"}', "partly correct, partly incorrect"])
def test_judge_parse_refuses_no_or_mixed_verdicts(reply):
  with pytest.raises(MalformedReplyError):
    parse_judgement(reply)


def test_llm_judge_against_the_server(fake_openai):
  server = fake_openai({"Predicted answer: Paris": [Reply("correct")],
                        "Predicted answer: Lyon": [Reply('{"judgement": "incorrect"}')],
                        "Predicted answer: ???": [Reply("hmm")],
                        "Predicted answer: down": [Reply("nope", status=400)]})
  with backend_for(server) as backend:
    judge = LLMJudge(backend)
    assert judge.judge("What is the capital of France?", ["Paris", "City of Light"], "Paris") is True
    assert judge.judge("What is the capital of France?", "Paris", "Lyon") is False
    with pytest.raises(MalformedReplyError):
      judge.judge("What is the capital of France?", "Paris", "???")
    results = judge.judge_many([("Q?", "Paris", "Paris"), ("Q?", "Paris", "down"), ("Q?", "Paris", "???")])
  assert results[0] is True and isinstance(results[1], LLMHTTPError)
  assert isinstance(results[2], MalformedReplyError)
  prompt = last_message(server.requests[0][1])
  assert prompt.startswith(MARKERS["judge"])
  assert "Gold answer: Paris\nOther accepted answers: City of Light\nPredicted answer: Paris" in prompt
  assert "[mask]" not in prompt and "filled-in span" not in prompt
  ramp_prompt = judge.messages("The [mask] is big.\n\nFill in all the [mask].", "The sea is big.", "x")
  assert "filled-in span" in ramp_prompt[-1]["content"]


# -- files ------------------------------------------------------------------------------------------


def test_trajectories_are_written_as_tasks_finish(fake_openai, tiny_retriever, questions, toy_hops, tmp_path):
  out = tmp_path / "out" / "qa.jsonl"
  toy = ToyLLM(toy_hops)
  seen_lines: list[int] = []

  def watching(body: dict) -> Reply:
    if role_of(last_message(body)) == "planner":
      seen_lines.append(len(out.read_text().splitlines()) if out.exists() else 0)
    return toy(body)

  server = fake_openai(default=watching)
  tasks = questions[:4]
  stats = run("qa", tasks, tiny_retriever, server, out, window=1)
  assert stats.kept == 4
  assert seen_lines == [0, 1, 2, 3]  # Each task started after the previous one was on disk.
  trajectories = list(read_trajectories(out))
  assert [t.id for t in trajectories] == [f"qa-{q.id}" for q in tasks]

  # A second run continues the file.
  more = run("qa", questions[4:6], tiny_retriever, server, out)
  assert len(list(read_trajectories(out))) == 4 + more.kept


def test_tasks_from_records_dicts_and_task_objects(tiny_world):
  record = {"query": "The [mask] flows.\n\n" + protocol.RAMP_INSTRUCTION, "answer": "The Seine flows.",
            "ext": {"mask_num": 1, "masks": ["Seine"], "title": "Seine"}}
  task = synthesis.ramp_task(record, 7)
  assert task.id == "ramp-0000007" and task.prompt == protocol.ramp_prompt("The [mask] flows.")
  assert task.gold == ("The Seine flows.",) and task.meta["masks"] == ["Seine"]
  flashrag = synthesis.qa_task({"id": "x1", "question": "Who?", "golden_answers": ["A", "B", "A"]})
  assert flashrag.id == "qa-x1" and flashrag.gold == ("A", "B") and flashrag.text == "Who?"
  world = synthesis.qa_task(tiny_world.questions[0])
  assert world.gold == (tiny_world.questions[0].answer, *tiny_world.questions[0].aliases)
  given = SynthesisTask("t", "qa", "p", "q", ("a",))
  assert list(synthesis.make_tasks("qa", [given])) == [given]
  with pytest.raises(ValueError, match="kind"):
    list(synthesis.make_tasks("essay", []))
  with pytest.raises(ValueError):
    synthesis.ramp_task({"text": "no masks"})


def test_merge_results_interleaves_by_rank_and_drops_repeats():
  def hit(pid: str) -> SearchHit:
    return SearchHit(pid, pid.upper(), f"text {pid}", 1.0)

  results = [[hit("a"), hit("b"), hit("c")], [hit("b"), hit("d")], [], [hit("a"), hit("e")]]
  assert [h.id for h in synthesis.merge_results(results, 10)] == ["a", "b", "d", "e", "c"]
  assert [h.id for h in synthesis.merge_results(results, 2)] == ["a", "b"]
  assert synthesis.merge_results([], 3) == []


# -- configuration --------------------------------------------------------------------------------


def test_api_key_is_read_from_the_environment(fake_openai, tiny_retriever, questions, toy_hops, tmp_path,
                                              monkeypatch):
  monkeypatch.setenv("TEACHER_API_KEY", "sk-teacher-42")
  server = fake_openai(default=ToyLLM(toy_hops))
  backend = backend_for(server, api_key_env="TEACHER_API_KEY")
  run("qa", questions[:2], tiny_retriever, server, tmp_path / "qa.jsonl", backend=backend)
  assert len(server.requests) >= 2 * 4
  assert {headers.get("Authorization") for _, _, headers in server.requests} == {"Bearer sk-teacher-42"}


def test_gin_configures_the_backends_and_the_settings(fake_openai, tiny_retriever, questions, toy_hops, tmp_path,
                                                      monkeypatch):
  monkeypatch.delenv("OPENAI_API_KEY", raising=False)
  server = fake_openai(default=ToyLLM(toy_hops))
  judge_server = fake_openai(default=ToyLLM(toy_hops))
  gin.clear_config()
  try:
    gin.parse_config([
        "from masksearch_jax.agent import llm_backends",
        "from masksearch_jax.agent import synthesis",
        "synthesis.teacher_backends.backend = @llm_backends.OpenAICompatibleBackend()",
        f"llm_backends.OpenAICompatibleBackend.base_url = '{server.base_url}'",
        "llm_backends.OpenAICompatibleBackend.model = 'big-teacher'",
        "llm_backends.OpenAICompatibleBackend.concurrency = 4",
        "synthesis.teacher_backends.judge_backend = @judge/llm_backends.OpenAICompatibleBackend()",
        f"judge/llm_backends.OpenAICompatibleBackend.base_url = '{judge_server.base_url}'",
        "judge/llm_backends.OpenAICompatibleBackend.model = 'strict-judge'",
        "synthesis.synthesize_with_llm.top_k = 1",
        "synthesis.synthesize_with_llm.temperature = 0.7",
        "synthesis.LLMJudge.max_tokens = 8",
    ])
    backend, judge = synthesis.teacher_backends()
    assert backend.model == "big-teacher" and backend.concurrency == 4 and judge.model == "strict-judge"
    with backend, judge:
      stats = synthesize_with_llm("qa", questions[:2], tiny_retriever, backend, str(tmp_path / "qa.jsonl"),
                                  judge_backend=judge, progress=False)
  finally:
    gin.clear_config()
  assert stats.tasks == 2
  bodies = [b for _, b, _ in server.requests]
  assert {b["model"] for b in bodies} == {"big-teacher"} and {b["temperature"] for b in bodies} == {0.7}
  assert server.count(MARKERS["judge"]) == 0
  judged = [b for _, b, _ in judge_server.requests]
  assert len(judged) == stats.kept + stats.dropped_incorrect > 0
  assert all(b["model"] == "strict-judge" and b["max_tokens"] == 8 and b["temperature"] == 0.0 for b in judged)
  for t in read_trajectories(tmp_path / "qa.jsonl"):
    assert all(s.text.count("Doc ") == 1 for s in t.segments if s.type == OBSERVATION)


def test_settings_are_checked():
  with pytest.raises(ValueError, match="max_turns"):
    synthesis.LLMTeacher(None, None, judge=LLMJudge(None), max_turns=0)
  with pytest.raises(ValueError, match="kind"):
    synthesize_with_llm("essay", [], None, None, "unused.jsonl", progress=False)
