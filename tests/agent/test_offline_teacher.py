"""Tests of the offline teacher (masksearch_jax/agent/offline_teacher.py).

Kept shares measured on the tiny world (seed 0, 400 people) with the default settings (top 3
passages, at most 3 searches per hidden fact, seed 0):

  RAMP, every 4th train example (about 155 per count):
        1 mask 0.85   2 masks 0.79   3 masks 0.70   4 masks 0.61
  RAMP, the whole train split: 0.88, 0.80, 0.74, 0.62
  QA, every train question (166):
        compositional 1.00   inference 1.00   comparison 0.98   bridge_comparison 0.98
        2 hops 0.99   3 hops 1.00   4 hops 0.98

Almost every drop is "unresolved" (the teacher does not guess): the hidden fact's other
statement did not reach the top 3 (a city's founding year is stated on its own page, the one
masked, and again among many cities on its country's page), or the shown passages do not single
out the answer (a masked child among siblings, the masked name of one of many people born in a
city). The floors are about 0.1 under the measurements, so a regression fails them but a
reworded template or query does not.
"""

from __future__ import annotations

import collections
import copy
import random
import re
import string

import gin
import numpy as np
import pytest

from masksearch_jax.agent import offline_teacher as ot
from masksearch_jax.agent import protocol
from masksearch_jax.data import input_pipeline, world_io
from masksearch_jax.data import world as world_module
from masksearch_jax.data.trajectories import MODEL, OBSERVATION, read_trajectories, trajectory_features
from masksearch_jax.data.world_types import Date, Quantity
from masksearch_jax.retrieval.retriever import search_excluding
from masksearch_jax.retrieval.tantivy_index import TantivyRetriever

RAMP_STRIDE = 4
RAMP_FLOORS = {1: 0.75, 2: 0.68, 3: 0.6, 4: 0.5}
QA_FLOORS = {"compositional": 0.88, "inference": 0.88, "comparison": 0.88, "bridge_comparison": 0.88}


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_retriever(tiny_index):
  with TantivyRetriever(tiny_index) as retriever:
    yield retriever


def _bind_tiny_world() -> None:
  import masksearch_jax.data.ramp_source  # noqa: F401  Registers RampCorpus with Gin.
  from conftest import TINY_WORLD_CONFIG
  gin.clear_config()
  gin.bind_parameter("masksearch_jax.data.ramp_source.RampCorpus.world", TINY_WORLD_CONFIG)


@pytest.fixture(scope="module")
def ramp_examples(tiny_world):
  """Every RAMP_STRIDE-th train example of each mask count, from the tiny world (the corpus is in
  entity order: countries and cities first, then people and the rest, so a prefix would not do)."""
  _bind_tiny_world()
  try:
    return {k: list(ot.ramp_examples("train", k))[::RAMP_STRIDE] for k in (1, 2, 3, 4)}
  finally:
    gin.clear_config()


@pytest.fixture(scope="module")
def ramp_runs(ramp_examples, world_retriever):
  return {k: list(ot.synthesize_ramp(examples, world_retriever)) for k, examples in ramp_examples.items()}


@pytest.fixture(scope="module")
def train_questions(tiny_world):
  return [q for q in tiny_world.questions if q.split == "train"]


@pytest.fixture(scope="module")
def qa_run(train_questions, world_retriever, tiny_world):
  return list(ot.synthesize_qa(train_questions, world_retriever, tiny_world))


# -- helpers ---------------------------------------------------------------------------------


def test_value_helpers():
  assert ot.parse_date("3 May 1921") == ot.parse_date("May 3, 1921") == (1921, 5, 3)
  assert ot.parse_date("3 Mayo 1921") is None
  assert ot.sort_key("1,234 km") == (1234,) and ot.sort_key("987") == (987,) and ot.sort_key("Doga") is None
  assert ot.demonym_countries("Lazeran") == ["Lazera"]
  assert set(ot.demonym_countries("Higumerian")) == {"Higumeri", "Higumero", "Higumeria"}


# -- retrieval ---------------------------------------------------------------------------------


def test_search_excluding_drops_the_ids_and_still_fills_top_k(world_retriever):
  queries = ["Fomige city population", "When was Baka founded?"]
  plain = world_retriever.batch_search(queries, 5)
  excluded = {plain[0][0].id, plain[1][1].id}
  results = search_excluding(world_retriever, queries, excluded, 4)
  for hits, full in zip(results, plain):
    assert len(hits) == 4 and not excluded & {h.id for h in hits}
    assert [h.id for h in hits] == [h.id for h in full if h.id not in excluded][:4]
  assert search_excluding(world_retriever, queries, [], 3) == world_retriever.batch_search(queries, 3)


# -- reading -----------------------------------------------------------------------------------


def _object_forms(world, fact) -> set[str]:
  obj = fact.obj
  if fact.is_entity_valued:
    entity = world.entities[obj]
    return {entity.name} | ({entity.attrs["demonym"]} if entity.kind == "country" else set())
  if isinstance(obj, Date):
    return {obj.dmy(), obj.mdy()}
  if isinstance(obj, Quantity):
    return {obj.text(), obj.number()}
  return {str(obj)}


def test_reading_a_passage_finds_exactly_the_facts_it_states(tiny_world):
  """The grammar reads every fact of every passage of the world, and nothing else."""
  world = tiny_world
  truth = collections.defaultdict(set)
  for fact in world.facts:
    truth[(world.entities[fact.subject].name, fact.relation)] |= _object_forms(world, fact)
  stated = missed = wrong = ambiguous = 0
  for passage in world.passages:
    readings = ot.read_passage(passage.title, passage.text)
    read = {(r.subject, r.relation, r.value) for r in readings}
    for fact_id in passage.facts:
      fact = world.facts[fact_id]
      subject = world.entities[fact.subject].name
      stated += 1
      missed += not any((subject, relation, form) in read for form in _object_forms(world, fact)
                        for relation in (fact.relation, ot.PARENT))
    for r in readings:
      relations = ("father", "mother") if r.relation == ot.PARENT else (r.relation,)
      ambiguous += r.relation == ot.PARENT
      wrong += not any(r.value in truth[(r.subject, relation)] for relation in relations)
  assert stated > 4000 and missed == 0 and wrong == 0
  assert ambiguous < 0.01 * stated  # Parents of unknown gender ("Tabudo Muzu had two children").


def test_parse_sentence_fits_one_template_and_reads_pronouns_as_the_title():
  kind, match = ot.parse_sentence("The Road to Doga, directed by Kelo Rani, premiered on 3 May 1950 with a "
                                  "running time of 120 minutes.")
  assert kind == "person_directed" and match.group("film") == "The Road to Doga" and match.group("dur") == "120 minutes"
  readings = ot.read_passage("Kelo Rani", "Kelo Rani studied at Vumo University. She married Tabudo Muzu. "
                                          "She had two children: Zobi Muzu and Doga and Other Stories.")
  assert ("Kelo Rani", "spouse", "Tabudo Muzu") in {(r.subject, r.relation, r.value) for r in readings}
  assert {(r.subject, r.relation, r.value) for r in readings if r.relation == "mother"} == {
      ("Zobi Muzu", "mother", "Kelo Rani"), ("Doga and Other Stories", "mother", "Kelo Rani")}
  assert ot.parse_sentence("Nothing here fits a template.") is None


def test_plan_ramp_reads_the_question_from_the_masked_sentence():
  title = "Kelo Rani"
  paragraph = ("Kelo Rani (3 May 1900 – [mask]) was a Lazeran painter born in Vitole. She married [mask]. "
               "She had two children: Zobi Muzu and [mask].")
  death, spouse, child = ot.plan_ramp(paragraph, title)
  assert (death.relation, death.subjects, death.inverse) == ("date_of_death", ("Kelo Rani",), False)
  assert (spouse.relation, spouse.subjects) == ("spouse", ("Kelo Rani",))
  assert (child.relation, child.obj, child.inverse) == (ot.PARENT, "Kelo Rani", True)
  born = ot.plan_ramp("Vitole is a city in Lazera. [mask], a Lazeran painter (3 May 1900 – [mask]), was born "
                      "in Vitole.", "Vitole")
  assert born[0].relation == "place_of_birth" and born[0].obj == "Vitole"
  assert set(born[0].constraints) == {("date_of_birth", "3 May 1900"), ("country_of_citizenship", "Lazeran"),
                                      ("occupation", "painter")}
  assert born[1].relation == "date_of_death" and born[1].subject_mask == 0  # Waits for the name.
  assert ot.plan_ramp("It was [mask] of something.", "X") == [None]


# -- kept shares ---------------------------------------------------------------------------------


def test_ramp_kept_share_by_mask_count(ramp_runs):
  shares = {k: sum(ok for _, ok in run) / len(run) for k, run in ramp_runs.items()}
  print("RAMP kept share by mask count:", {k: round(v, 3) for k, v in shares.items()})
  for k, run in ramp_runs.items():
    assert len(run) > 140
    assert shares[k] >= RAMP_FLOORS[k], (k, shares[k])
    for trajectory, accepted in run:
      assert trajectory.kind == "ramp" and trajectory.meta["mask_num"] == k
      assert accepted == (trajectory.meta["drop_reason"] is None) == (trajectory.reward == 1.0)


def test_qa_kept_share_by_type_and_hops(qa_run, train_questions):
  by_type, by_hops = collections.defaultdict(list), collections.defaultdict(list)
  for (trajectory, accepted), question in zip(qa_run, train_questions):
    assert trajectory.id == f"qa-{question.id}"
    by_type[question.type].append(accepted)
    by_hops[question.hops].append(accepted)
  shares = {t: sum(v) / len(v) for t, v in by_type.items()}
  print("QA kept share by type:", {t: round(s, 3) for t, s in shares.items()},
        "by hops:", {h: round(sum(v) / len(v), 3) for h, v in sorted(by_hops.items())})
  assert set(shares) == set(QA_FLOORS)
  for qtype, share in shares.items():
    assert share >= QA_FLOORS[qtype], (qtype, share)
  assert all(sum(v) / len(v) >= 0.88 for v in by_hops.values())


# -- what a kept trajectory is ---------------------------------------------------------------------


def _normalise(text: str) -> list[str]:
  """HotpotQA normalisation, written again here so the check does not trust the module."""
  text = "".join(c for c in text.lower() if c not in set(string.punctuation))
  return [w for w in text.split() if w not in ("a", "an", "the")]


def _recall(prediction: str, gold: str) -> float:
  gold_tokens = _normalise(gold)
  left = collections.Counter(_normalise(prediction))
  hit = 0
  for token in gold_tokens:
    if left[token]:
      left[token] -= 1
      hit += 1
  return hit / len(gold_tokens)


def test_kept_answers_have_recall_one_by_an_independent_check(ramp_runs, ramp_examples, qa_run, train_questions):
  for k, run in ramp_runs.items():
    for (trajectory, accepted), example in zip(run, ramp_examples[k]):
      if not accepted:
        continue
      masked = example["masked_paragraph"]
      assert trajectory.prompt == protocol.ramp_prompt(masked)
      assert trajectory.answer == trajectory.segments[-1].text.split("<answer> ")[1].split(" </answer>")[0]
      # Around the masks the answer is the paragraph itself; in them, the original's words.
      pattern = "(.+?)".join(re.escape(piece) for piece in masked.split("[mask]"))
      fills = re.fullmatch(pattern, trajectory.answer).groups()
      assert len(fills) == k == len(example["masks"])
      assert all(_recall(fill, gold) == 1.0 for fill, gold in zip(fills, example["masks"]))
      assert trajectory.gold == (example["targets"],)
  kept = 0
  for (trajectory, accepted), question in zip(qa_run, train_questions):
    if accepted:
      kept += 1
      assert max(_recall(trajectory.answer, g) for g in [question.answer, *question.aliases]) == 1.0
  assert kept > 100


def _observation_of(hits) -> str:
  return "\n\n" + protocol.format_observation([(h.title, h.text) for h in hits]) + "\n\n"


def test_every_search_is_real_and_its_hits_are_the_next_observation(ramp_runs, ramp_examples, qa_run,
                                                                     world_retriever):
  runs = [(t, [e["passage_id"]]) for k in ramp_runs for (t, ok), e in zip(ramp_runs[k], ramp_examples[k]) if ok]
  runs += [(t, []) for t, ok in qa_run if ok]
  checked = 0
  for trajectory, exclude in runs:
    segments = trajectory.segments
    assert [s.type for s in segments] == [MODEL, OBSERVATION] * len(trajectory.searches) + [MODEL]
    assert trajectory.stop_reason == "answer" and segments[-1].text.endswith(f"<answer> {trajectory.answer} </answer>")
    for i, query in enumerate(trajectory.searches):
      model, observation = segments[2 * i], segments[2 * i + 1]
      assert re.fullmatch(r"<think> [^<>]+ </think>\n<search> (.+) </search>", model.text).group(1) == query
      hits = search_excluding(world_retriever, [query], exclude, 3)[0]
      assert hits and observation.text == _observation_of(hits)
      checked += 1
  assert checked > 1000


def test_the_masked_passage_never_appears_in_an_observation(ramp_runs, ramp_examples):
  for k, run in ramp_runs.items():
    for (trajectory, _), example in zip(run, ramp_examples[k]):
      for segment in trajectory.segments:
        if segment.type == OBSERVATION:
          assert example["targets"] not in segment.text


# -- the teacher reads text, never tables or golds ---------------------------------------------------


def _solution(trajectory):
  return trajectory.segments, trajectory.searches, trajectory.answer


def test_ramp_teacher_reads_neither_the_gold_nor_the_world(ramp_examples, ramp_runs, world_retriever, monkeypatch):
  """Same trajectories with the golds of the examples replaced and every way to the world's tables
  closed: the answers come from the masked paragraph and the retrieved text."""
  def closed(*args, **kwargs):
    raise AssertionError("the RAMP teacher must not load the world")

  monkeypatch.setattr(world_io, "load_world", closed)
  monkeypatch.setattr(world_io, "cached_world_dir", closed)
  monkeypatch.setattr(world_module, "generate_world", closed)
  for k in (1, 4):
    blinded = [{**e, "masks": ["?"] * k, "targets": "?"} for e in ramp_examples[k]]
    for (seen, _), (original, accepted) in zip(ot.synthesize_ramp(blinded, world_retriever), ramp_runs[k]):
      assert _solution(seen) == _solution(original)
      assert seen.reward == 0.0  # Judged against the replaced golds.


def _scrambled_world(world, seed: int = 1):
  """A copy whose fact values are shuffled within each relation, whose passages record no facts or
  mentions, and whose questions have wrong answers, evidence and sub-question answers."""
  scrambled = copy.deepcopy(world)
  rng = random.Random(seed)
  by_relation = collections.defaultdict(list)
  for fact in scrambled.facts:
    by_relation[fact.relation].append(fact)
  for facts in by_relation.values():
    values = [f.obj for f in facts]
    rng.shuffle(values)
    for fact, value in zip(facts, values):
      fact.obj = value
  for passage in scrambled.passages:
    passage.facts, passage.fact_sentences, passage.mentions = [], [], []
  for question in scrambled.questions:
    question.answer, question.aliases = "wrong", []
    question.evidence = [["wrong", "wrong", "wrong"] for _ in question.evidence]
    question.sub_questions = [[q, "wrong"] for q, _ in question.sub_questions]
  return scrambled


def test_qa_teacher_reads_no_value_from_the_tables(tiny_world, qa_run, world_retriever):
  """With every fact value of the world shuffled (a teacher that read values would now answer
  differently, or search for other names), the trajectories are the same."""
  scrambled = _scrambled_world(tiny_world)
  changed = sum(a.obj != b.obj for a, b in zip(tiny_world.facts, scrambled.facts))
  assert changed > 0.8 * len(tiny_world.facts)
  questions = [q for q in scrambled.questions if q.split == "train"]
  kept = 0
  for (seen, _), (original, accepted) in zip(ot.synthesize_qa(questions, world_retriever, scrambled), qa_run):
    assert _solution(seen) == _solution(original)
    assert seen.reward == 0.0  # Judged against the replaced answers.
    kept += accepted
  assert kept > 100


# -- judges and limits -------------------------------------------------------------------------------


class _ScriptedJudge:
  """Accepts every other answer; records what it was asked."""

  def __init__(self):
    self.calls = []

  def judge(self, question, gold, prediction):
    self.calls.append((question, gold, prediction))
    return len(self.calls) % 2 == 1


def test_an_llm_judge_replaces_recall(ramp_examples, train_questions, tiny_world, world_retriever):
  judge = _ScriptedJudge()
  run = list(ot.synthesize_ramp(ramp_examples[1][:10], world_retriever, judge=judge))
  answered = [(t, ok) for t, ok in run if t.meta["drop_reason"] in (None, "judge")]
  assert len(judge.calls) == len(answered) > 5
  for (trajectory, accepted), (question, gold, prediction) in zip(answered, judge.calls):
    assert prediction == trajectory.answer and gold == trajectory.gold[0]
    assert question.endswith(protocol.RAMP_INSTRUCTION) and "[mask]" in question
    assert trajectory.reward == (1.0 if accepted else 0.0) and trajectory.meta["judge"] == "llm"
  assert [ok for _, ok in answered] == [i % 2 == 0 for i in range(len(answered))]

  class Failing:
    def judge(self, question, gold, prediction):
      raise RuntimeError("endpoint down")

  question = next(q for q in train_questions if q.type == "inference")
  trajectory, accepted = next(ot.synthesize_qa([question], world_retriever, tiny_world, judge=Failing()))
  assert not accepted and trajectory.meta["drop_reason"] == "judge_error"


def test_a_trajectory_out_of_turns_is_dropped_without_an_answer(train_questions, tiny_world, world_retriever):
  four_hops = [q for q in train_questions if q.hops == 4]
  out_of_turns = 0
  for trajectory, accepted in ot.synthesize_qa(four_hops, world_retriever, tiny_world, max_turns=3):
    assert len(trajectory.searches) <= 2  # Two searches and the answer are three turns.
    if trajectory.stop_reason == "max_turns":
      out_of_turns += 1
      assert not accepted and trajectory.answer is None and trajectory.meta["drop_reason"] == "max_turns"
      assert len(trajectory.searches) == 2 and trajectory.segments[-1].type == OBSERVATION
  assert out_of_turns > 0.8 * len(four_hops)


# -- files -------------------------------------------------------------------------------------------


def test_synthesized_files_round_trip_and_resume(tiny_tasks, tiny_world, tiny_world_vocabulary, world_retriever,
                                                 tmp_path, train_questions):
  qa_path, ramp_path = tmp_path / "qa.jsonl", tmp_path / "ramp.jsonl"
  qa = ot.synthesize_to_file("qa", qa_path, world=tiny_world, retriever=world_retriever, limit=40, progress=False)
  ramp = ot.synthesize_to_file("ramp", ramp_path, world=tiny_world, retriever=world_retriever, num_masks=2,
                               limit=30, progress=False)
  expected = [t for t, ok in ot.synthesize_qa(train_questions[:40], world_retriever, tiny_world) if ok]
  assert list(read_trajectories(qa_path)) == expected and qa.kept == len(expected)
  assert qa.kept + qa.dropped == 40 and ramp.kept + ramp.dropped == 30 and ramp.kept >= 20
  assert sum(c["kept"] for c in qa.by_type.values()) == qa.kept and set(ramp.by_type) == {"2 mask"}
  assert qa.kept_share == qa.kept / 40 and qa.searches > qa.kept and qa.rate > 0
  assert f"{qa.kept} kept" in str(qa) and "trajectories/s" in str(qa)
  ramp_trajectories = list(read_trajectories(ramp_path))
  assert len(ramp_trajectories) == ramp.kept and all(t.kind == "ramp" and t.reward == 1.0 for t in ramp_trajectories)

  # Rerunning continues the file: what is written is skipped, the rest comes out the same.
  before = qa_path.read_bytes()
  again = ot.synthesize_to_file("qa", qa_path, world=tiny_world, retriever=world_retriever, limit=40, progress=False)
  assert (again.kept, again.skipped, again.dropped) == (0, qa.kept, qa.dropped)
  assert qa_path.read_bytes() == before
  fresh = ot.synthesize_to_file("qa", qa_path, world=tiny_world, retriever=world_retriever, limit=40,
                                overwrite=True, progress=False)
  assert fresh.kept == qa.kept and qa_path.read_bytes() == before  # Same seed, same file.
  other = tmp_path / "seed1.jsonl"
  ot.synthesize_to_file("qa", other, world=tiny_world, retriever=world_retriever, limit=40, seed=1, progress=False)
  assert [t.searches for t in read_trajectories(other)] != [t.searches for t in expected]

  # Both files feed the `trajectories` SeqIO task; observations carry no loss.
  tiny_tasks(f"masksearch_jax.data.seqio_tasks.TrajectoryFiles.paths = {{'train': ['{qa_path}', '{ramp_path}']}}")
  vocab = tiny_world_vocabulary
  features = [trajectory_features(t, vocab) for t in expected + ramp_trajectories]
  lengths = {name: max(len(f[name]) for f in features) for name in ("inputs", "targets")}  # Nothing cut off.
  config = input_pipeline.DatasetConfig("trajectories", lengths, batch_size=1, shuffle=False, pack=False)
  rows = 0
  for batch in input_pipeline.get_dataset(config, num_epochs=1).as_numpy_iterator():
    tokens, weights = batch["decoder_target_tokens"][0], batch["decoder_loss_weights"][0]
    learnt = vocab.decode([int(t) for t in tokens[weights > 0] if t != vocab.eos_id])
    read = vocab.decode([int(t) for t in tokens[(weights == 0) & (tokens > 0)]])
    assert "<search>" in learnt and "<answer>" in learnt
    assert "<information>" not in learnt and "Doc 1(Title:" not in learnt
    assert "<information>" in read and "Doc 1(Title:" in read
    assert np.all(weights[tokens == 0] == 0)
    rows += 1
  assert rows == qa.kept + ramp.kept


def test_synthesize_to_file_checks_its_arguments(tiny_world, world_retriever, tmp_path):
  with pytest.raises(ValueError, match="kind"):
    ot.synthesize_to_file("rl", tmp_path / "x.jsonl", retriever=world_retriever)
  with pytest.raises(ValueError, match="exactly one of"):
    ot.synthesize_to_file("qa", tmp_path / "x.jsonl", world=tiny_world)
  with pytest.raises(ValueError, match="split"):
    ot.synthesize_to_file("qa", tmp_path / "x.jsonl", world=tiny_world, retriever=world_retriever, split="dev2")
  _bind_tiny_world()
  try:
    other = world_module.WorldConfig(seed=5, size=400)
    with pytest.raises(ValueError, match="RampCorpus.world"):
      ot.synthesize_to_file("ramp", tmp_path / "x.jsonl", world=other, retriever=world_retriever)
  finally:
    gin.clear_config()
  assert not (tmp_path / "x.jsonl").exists()


def test_synthesize_command_writes_kept_trajectories_and_resumes(tiny_tasks, tmp_path, capsys):
  from masksearch_jax import cli
  from masksearch_jax.data.trajectories import read_trajectories
  out = tmp_path / "ramp.jsonl"
  assert cli.main(["synthesize", "--kind", "ramp", "--out", str(out), "--num_masks", "2", "--limit", "30"]) == 0
  err = capsys.readouterr().err
  assert "kept" in err
  first = list(read_trajectories(out))
  assert 15 <= len(first) <= 30 and all(t.kind == "ramp" and t.reward == 1.0 for t in first)
  # Run again with a larger limit: the file is continued, nothing is written twice.
  assert cli.main(["synthesize", "--kind", "ramp", "--out", str(out), "--num_masks", "2", "--limit", "40"]) == 0
  again = list(read_trajectories(out))
  assert [t.id for t in again[:len(first)]] == [t.id for t in first] and len({t.id for t in again}) == len(again)
  assert len(again) > len(first)
  qa = tmp_path / "qa.jsonl"
  assert cli.main(["synthesize", "--kind", "qa", "--out", str(qa), "--split", "validation", "--limit", "10"]) == 0
  assert all(t.kind == "qa" for t in read_trajectories(qa))
