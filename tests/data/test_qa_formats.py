"""Tests of masksearch_jax.data.qa_formats: world round trips, real-shaped files, errors, detection."""

from __future__ import annotations

import csv
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from masksearch_jax.data import qa_formats, world_io
from masksearch_jax.data.passage import CorpusFormatError
from masksearch_jax.data.qa_formats import QAExample, QAReadStats
from masksearch_jax.data.world import World, WorldConfig, generate_world
from masksearch_jax.data.world_types import Date, Entity, Fact, Quantity, Question, WorldPassage


@pytest.fixture(scope="module")
def world():
  return generate_world(WorldConfig(seed=0, size=300))


@pytest.fixture(scope="module")
def formats_dir(world, tmp_path_factory):
  out = tmp_path_factory.mktemp("qa") / "formats"
  qa_formats.write_world_questions(world, out, list(qa_formats.WORLD_FORMATS))
  return out


def _object_forms(world, fact) -> list[str]:
  """Every way a page may write a fact's object (a country may appear as its demonym)."""
  if fact.is_entity_valued:
    entity = world.entities[fact.obj]
    return [entity.name] + ([entity.attrs["demonym"]] if entity.kind == "country" else [])
  if isinstance(fact.obj, (Date, Quantity)):
    return fact.obj.aliases()
  return [str(fact.obj)]


def _page_sentences(world, entity_id) -> list[str]:
  return [s for p in world.passages if p.entity == entity_id for s in p.sentences()]


def _load_json_list(path):
  return json.loads(path.read_text(encoding="utf-8"))


def _read_jsonl(path):
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_text(path, text: str):
  path.write_text(text, encoding="utf-8")
  return path


def _write_lines(path, records):
  return _write_text(path, "".join(json.dumps(r) + "\n" for r in records))


# ---------------------------------------------------------------------------------------------
# World round trips.


def test_world_questions_cover_every_split_and_type(world):
  # The round trips below are only meaningful if the world has all of these.
  assert {q.split for q in world.questions} == {"train", "dev", "test"}
  assert {q.type for q in world.questions} == {"compositional", "inference", "comparison", "bridge_comparison"}
  assert any(q.aliases for q in world.questions)


def test_write_world_questions_layout(formats_dir):
  assert sorted(p.name for p in formats_dir.iterdir()) == ["2wiki", "flashrag", "hotpotqa", "musique"]
  for split in qa_formats.SPLITS:
    assert (formats_dir / "flashrag" / f"{split}.jsonl").is_file()
    assert (formats_dir / "hotpotqa" / f"hotpot_{split}_distractor_v1.json").is_file()
    assert (formats_dir / "musique" / f"musique_ans_v1.0_{split}.jsonl").is_file()
    assert (formats_dir / "2wiki" / f"{split}.json").is_file()
  assert (formats_dir / "2wiki" / "id_aliases.json").is_file()
  assert not [p for p in formats_dir.rglob(".*")]  # No temporary files left behind.


@pytest.mark.parametrize("fmt,pattern", [("flashrag", "flashrag/{split}.jsonl"),
                                         ("musique", "musique/musique_ans_v1.0_{split}.jsonl"),
                                         ("2wiki", "2wiki/{split}.json")])
def test_round_trip_keeps_question_answer_and_aliases(world, formats_dir, fmt, pattern):
  for split in qa_formats.SPLITS:
    path = formats_dir / pattern.format(split=split)
    read = list(qa_formats.read_qa(path))
    expected = [q for q in world.questions if q.split == split]
    assert len(read) == len(expected) > 0
    for example, question in zip(read, expected):
      assert example.id == question.id
      assert example.question == question.question
      assert example.answer == question.answer
      assert example.aliases == question.aliases
      assert example.source == fmt


def test_flashrag_metadata_round_trips(world, formats_dir):
  read = {e.id: e for e in qa_formats.read_flashrag(formats_dir / "flashrag" / "train.jsonl")}
  for question in (q for q in world.questions if q.split == "train"):
    assert read[question.id].metadata == {
        "type": question.type, "hops": question.hops, "evidence": question.evidence,
        "fact_ids": question.fact_ids, "entity_ids": question.entity_ids, "split": question.split,
        "sub_questions": question.sub_questions}


def test_hotpotqa_round_trip_and_supporting_facts_point_at_the_evidence(world, formats_dir):
  questions = {q.id: q for q in world.questions}
  facts = {f.id: f for f in world.facts}
  checked = 0
  for split in qa_formats.SPLITS:
    path = formats_dir / "hotpotqa" / f"hotpot_{split}_distractor_v1.json"
    examples = {e.id: e for e in qa_formats.read_hotpotqa(path)}
    for record in _load_json_list(path):
      question = questions[record["_id"]]
      example = examples[record["_id"]]
      assert example.question == question.question and example.answers == [question.answer]
      expected_type = "bridge" if question.type in ("compositional", "inference") else "comparison"
      assert record["type"] == example.metadata["type"] == expected_type
      assert record["level"] == ("hard" if question.hops >= 3 else "medium")
      context = dict((title, sentences) for title, sentences in record["context"])
      assert len(context) == len(record["context"])  # Each page once.
      assert len(record["supporting_facts"]) == question.hops
      for fact_id, (title, sent_id) in zip(question.fact_ids, record["supporting_facts"]):
        fact = facts[fact_id]
        subject = world.entities[fact.subject]
        assert title == subject.name
        # A context entry is the whole page, so sent_id indexes the page's sentences.
        assert context[title] == _page_sentences(world, subject.id)
        sentence = context[title][sent_id]
        assert any(form in sentence for form in _object_forms(world, fact)), (record["_id"], fact, sentence)
      supporting_pages = {title for title, _ in record["supporting_facts"]}
      assert len(context) == len(supporting_pages) + 8
      checked += 1
  assert checked == len(world.questions)


def _passage(pid, entity, title, sentences, facts=(), fact_sentences=()):
  starts, offset = [], 0
  for sentence in sentences:
    starts.append(offset)
    offset += len(sentence) + 1
  return WorldPassage(pid, title, " ".join(sentences), entity, "train", starts, list(facts), list(fact_sentences), [])


def test_sentence_ids_count_over_the_whole_page(tmp_path):
  # Generated worlds state a subject's own facts in the first passage of its page, so build a
  # world where the fact is in the second passage, after another page's passage.
  entities = {"Q1": Entity("Q1", "person", "Ana Bel"), "Q2": Entity("Q2", "city", "Vora"),
              "Q3": Entity("Q3", "city", "Lune")}
  facts = [Fact(0, "Q1", "place_of_birth", "Q2"), Fact(1, "Q2", "population", Quantity(5000))]
  passages = [
      _passage("Q2-0", "Q2", "Vora", ["Vora is a city.", "Vora has 5,000 inhabitants."], [1], [1]),
      _passage("Q1-0", "Q1", "Ana Bel", ["Ana Bel is a poet.", "She writes.", "She reads."]),
      _passage("Q3-0", "Q3", "Lune", ["Lune is a city."]),
      _passage("Q1-1", "Q1", "Ana Bel", ["She lived long.", "Ana Bel was born in Vora."], [0], [1]),
  ]
  question = Question(
      "comp-1", "compositional", "What is the population of the birthplace of Ana Bel?", "5,000", ["5000"], 2,
      [["Ana Bel", "place of birth", "Vora"], ["Vora", "population", "5,000"]], [0, 1], ["Q1"], "train",
      [["Where was Ana Bel born?", "Vora"], ["What is the population of #1?", "5,000"]])
  world = World(WorldConfig(seed=0, size=1), entities, facts, passages, [question])
  qa_formats.write_hotpotqa(world, [question], tmp_path / "h.json", num_distractors=1)
  (record,) = _load_json_list(tmp_path / "h.json")
  assert record["supporting_facts"] == [["Ana Bel", 4], ["Vora", 1]]
  context = dict(record["context"])
  assert context["Ana Bel"][4] == "Ana Bel was born in Vora." and len(context["Ana Bel"]) == 5
  assert sorted(context) == ["Ana Bel", "Lune", "Vora"]
  qa_formats.write_musique(world, [question], tmp_path / "m.jsonl", num_paragraphs=3)
  (record,) = _read_jsonl(tmp_path / "m.jsonl")
  paragraphs = record["paragraphs"]
  supports = [paragraphs[s["paragraph_support_idx"]]["paragraph_text"] for s in record["question_decomposition"]]
  assert supports == [passages[3].text, passages[0].text]
  assert sum(p["is_supporting"] for p in paragraphs) == 2 and len(paragraphs) == 3
  world.facts.append(Fact(2, "Q3", "population", Quantity(7)))  # Stated nowhere.
  stray = Question("comp-2", "compositional", "How many live in Lune?", "7", [], 1, [], [2], ["Q3"], "train", [])
  with pytest.raises(ValueError, match="not stated on the page of Lune"):
    qa_formats.write_hotpotqa(world, [stray], tmp_path / "x.json")
  assert not (tmp_path / "x.json").exists()


def test_hotpotqa_distractors_follow_the_seed(world, tmp_path):
  questions = world.questions[:20]
  qa_formats.write_hotpotqa(world, questions, tmp_path / "a.json", seed=0)
  qa_formats.write_hotpotqa(world, questions, tmp_path / "b.json", seed=0)
  qa_formats.write_hotpotqa(world, questions, tmp_path / "c.json", seed=1, num_distractors=3)
  assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
  a, c = _load_json_list(tmp_path / "a.json"), _load_json_list(tmp_path / "c.json")
  assert [r["supporting_facts"] for r in a] == [r["supporting_facts"] for r in c]
  assert [len(r["context"]) for r in a] != [len(r["context"]) for r in c]
  assert all(len(r["context"]) == len({t for t, _ in r["supporting_facts"]}) + 3 for r in c)


def test_musique_decomposition_points_at_supporting_paragraphs(world, formats_dir):
  questions = {q.id: q for q in world.questions}
  facts = {f.id: f for f in world.facts}
  checked = 0
  for split in qa_formats.SPLITS:
    path = formats_dir / "musique" / f"musique_ans_v1.0_{split}.jsonl"
    examples = {e.id: e for e in qa_formats.read_musique(path)}
    for record in _read_jsonl(path):
      question = questions[record["id"]]
      paragraphs = record["paragraphs"]
      assert [p["idx"] for p in paragraphs] == list(range(20))
      assert record["answerable"] is True and record["answer_aliases"] == question.aliases
      steps = record["question_decomposition"]
      assert len(steps) == question.hops
      supported = set()
      for step, fact_id, (sub_question, sub_answer) in zip(steps, question.fact_ids, question.sub_questions):
        assert (step["question"], step["answer"]) == (sub_question, sub_answer)
        paragraph = paragraphs[step["paragraph_support_idx"]]
        assert paragraph["is_supporting"]
        fact = facts[fact_id]
        assert paragraph["title"] == world.entities[fact.subject].name
        assert any(form in paragraph["paragraph_text"] for form in _object_forms(world, fact))
        supported.add(paragraph["idx"])
      assert supported == {p["idx"] for p in paragraphs if p["is_supporting"]}
      example = examples[record["id"]]
      assert example.metadata["hops"] == question.hops
      assert example.metadata["supporting_idx"] == sorted(supported)
      assert [s["answer"] for s in example.metadata["decomposition"]] == [a for _, a in question.sub_questions]
      checked += 1
  assert checked == len(world.questions)


def test_2wiki_records_and_aliases(world, formats_dir):
  questions = {q.id: q for q in world.questions}
  aliases = {r["Q_id"]: r for r in _read_jsonl(formats_dir / "2wiki" / "id_aliases.json")}
  country_answers = 0
  for split in qa_formats.SPLITS:
    for record in _load_json_list(formats_dir / "2wiki" / f"{split}.json"):
      question = questions[record["_id"]]
      assert question.split == split
      assert record["type"] == question.type and record["evidences"] == question.evidence
      assert record["entity_ids"] == "_".join(question.entity_ids)
      assert len(record["supporting_facts"]) == question.hops
      answer_entity = world.entities.get(record["answer_id"])
      if answer_entity is not None:
        assert answer_entity.name == question.answer
        assert record["answer_id"] in aliases
        if answer_entity.kind == "country":
          country_answers += 1
          assert aliases[answer_entity.id]["demonyms"] == [answer_entity.attrs["demonym"]]
      else:
        assert record["answer_id"] == question.id
        assert question.answer not in {e.name for e in world.entities.values()}
  assert country_answers > 0


def test_world_io_real_format_copies_read_back(world, tmp_path):
  path = world_io.write_world(world, tmp_path / "w", formats=list(qa_formats.WORLD_FORMATS))
  read = list(qa_formats.read_qa(path / "formats" / "2wiki" / "dev.json"))
  assert [e.id for e in read] == [q.id for q in world.questions if q.split == "dev"]


def test_searchr1_parquet_round_trip(world, tmp_path):
  examples = [qa_formats.question_to_example(q, source="worldqa") for q in world.questions]
  path = tmp_path / "test.parquet"
  assert qa_formats.write_searchr1_parquet(examples, path) == len(examples)
  table = pq.read_table(path).to_pylist()
  assert table[3]["reward_model"] == {"style": "rule", "ground_truth": {"target": examples[3].answers}}
  assert table[3]["extra_info"] == {"split": "test", "index": 3}
  assert table[3]["prompt"][0]["role"] == "user"
  assert table[3]["prompt"][0]["content"].endswith(f"Question: {examples[3].question}\n")
  assert qa_formats.detect_qa_format(path) == "searchr1"
  read = list(qa_formats.read_qa(path))
  assert [(e.id, e.question, e.answers, e.source) for e in read] == [
      (e.id, e.question, e.answers, "worldqa") for e in examples]
  assert all({k: v for k, v in r.metadata.items() if k != "searchr1"} == e.metadata for r, e in zip(read, examples))
  assert read[3].metadata["searchr1"]["ability"] == "fact-reasoning"


def test_flashrag_writer_takes_qa_examples(tmp_path):
  examples = [QAExample("a", "Who?", ["X", "Y"], "bamboogle", {"k": [1]}), QAExample("b", "What?", ["Z"], "b")]
  path = tmp_path / "bamboogle" / "test.jsonl"
  assert qa_formats.write_flashrag(examples, path) == 2
  read = list(qa_formats.read_flashrag(path))
  assert [(e.id, e.question, e.answers, e.metadata, e.source) for e in read] == [
      ("a", "Who?", ["X", "Y"], {"k": [1]}, "bamboogle"), ("b", "What?", ["Z"], {}, "bamboogle")]


# ---------------------------------------------------------------------------------------------
# Writers: atomic, and refusing to overwrite.


def test_writers_refuse_to_overwrite_unless_asked(world, tmp_path):
  path = tmp_path / "dev.jsonl"
  qa_formats.write_flashrag(world.questions[:2], path)
  with pytest.raises(FileExistsError, match="overwrite"):
    qa_formats.write_flashrag(world.questions[:5], path)
  assert len(_read_jsonl(path)) == 2
  qa_formats.write_flashrag(world.questions[:5], path, overwrite=True)
  assert len(_read_jsonl(path)) == 5
  qa_formats.write_2wiki(world, world.questions[:3], tmp_path / "2wiki")
  with pytest.raises(FileExistsError):
    qa_formats.write_2wiki(world, world.questions, tmp_path / "2wiki")
  with pytest.raises(FileExistsError):
    qa_formats.write_world_questions(world, tmp_path, ["2wiki"])
  qa_formats.write_world_questions(world, tmp_path, ["2wiki"], overwrite=True)
  assert len(_load_json_list(tmp_path / "2wiki" / "train.json")) == sum(q.split == "train" for q in world.questions)
  assert sorted(os.listdir(tmp_path)) == ["2wiki", "dev.jsonl"]


def test_interrupted_write_leaves_nothing(world, tmp_path):
  def failing():
    yield from world.questions[:3]
    raise RuntimeError("interrupted")
  for write in (lambda p: qa_formats.write_flashrag(failing(), p),
                lambda p: qa_formats.write_hotpotqa(world, failing(), p),
                lambda p: qa_formats.write_musique(world, failing(), p),
                lambda p: qa_formats.write_2wiki(world, failing(), p),
                lambda p: qa_formats.write_searchr1_parquet(failing(), p)):
    with pytest.raises(RuntimeError, match="interrupted"):
      write(tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_write_world_questions_rejects_unknown_formats(world, tmp_path):
  with pytest.raises(ValueError, match="unknown QA formats"):
    qa_formats.write_world_questions(world, tmp_path, ["flashrag", "squad"])
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Hand-written files in the real shapes.

HOTPOT_RECORD = {
    "_id": "5a8b57f25542995d1e6f1371",
    "answer": "yes",
    "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
    "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
    "context": [["Ed Wood (film)", ["Ed Wood is a 1994 American biographical period comedy-drama film.",
                                    " It stars Johnny Depp."]],
                ["Scott Derrickson", ["Scott Derrickson (born July 16, 1966) is an American director."]],
                ["Ed Wood", ["Edward Davis Wood Jr. was an American filmmaker."]]],
    "type": "comparison",
    "level": "hard",
}

MUSIQUE_RECORD = {
    "id": "2hop__13548_13529",
    "paragraphs": [
        {"idx": 0, "title": "Lionel Messi", "paragraph_text": "Messi plays for Inter Miami.", "is_supporting": False},
        {"idx": 1, "title": "Green", "paragraph_text": "Green is the color of envy.", "is_supporting": True},
        {"idx": 2, "title": "Miami", "paragraph_text": "Miami is in Florida.", "is_supporting": True},
    ],
    "question": "What is the color of the sport team's jersey?",
    "question_decomposition": [
        {"id": 13548, "question": "Which team?", "answer": "Miami", "paragraph_support_idx": 2},
        {"id": 13529, "question": "what color is #1 jersey", "answer": "green", "paragraph_support_idx": 1},
    ],
    "answer": "green",
    "answer_aliases": ["Green colour", "verdant"],
    "answerable": True,
}

TWOWIKI_RECORDS = [
    {"_id": "8813f87c0bdd11eba7f7acde48001122", "type": "compositional",
     "question": "Who is the mother of the director of film Polish-Russian War (Film)?",
     "context": [["Polish-Russian War (film)", ["Polish-Russian War is a 2009 Polish film.",
                                                "It was directed by Xawery Żuławski."]],
                 ["Xawery Żuławski", ["Xawery Żuławski is a Polish film director.",
                                      "He is the son of Małgorzata Braunek."]]],
     "supporting_facts": [["Polish-Russian War (film)", 1], ["Xawery Żuławski", 1]],
     "evidences": [["Polish-Russian War", "director", "Xawery Żuławski"],
                   ["Xawery Żuławski", "mother", "Małgorzata Braunek"]],
     "answer": "Małgorzata Braunek", "entity_ids": "Q7208719", "answer_id": "Q274082"},
    {"_id": "ac5a6e0c0bdd11eba7f7acde48001122", "type": "comparison",
     "question": "Are both Kurram Garhi and Trojkrsti located in the same country?",
     "context": [], "supporting_facts": [], "evidences": [["Kurram Garhi", "country", "Pakistan"],
                                                          ["Trojkrsti", "country", "Republic of Macedonia"]],
     "answer": "no", "entity_ids": "Q6444590_Q7845083"},
    {"_id": "q3", "type": "inference", "question": "Which country is X from?", "context": [],
     "supporting_facts": [], "evidences": [], "answer": "Poland", "entity_ids": "Q1", "answer_id": "Q36"},
]

TWOWIKI_ALIASES = [
    {"Q_id": "Q274082", "aliases": ["Malgorzata Braunek", "Małgorzata Braunek"], "demonyms": []},
    {"Q_id": "Q36", "aliases": ["Republic of Poland"], "demonyms": ["Polish", "Pole"]},
    {"Q_id": "ac5a6e0c0bdd11eba7f7acde48001122", "aliases": ["No"], "demonyms": []},
]

FANOUT_RECORDS = [
    {"id": "f1", "question": "What are the populations of the 3 largest cities?", "categories": ["Geography"],
     "decomposition": [{"id": "f1-1", "question": "Largest cities?", "decomposition": [], "answer": ["A", "B"],
                        "depends_on": [], "evidence": {"pageid": 1, "revid": 2, "title": "T", "url": "u"}}],
     "answer": {"Tokyo": "37,400,068", "Delhi": "28,514,000"}},
    {"id": "f2", "question": "Which presidents?", "categories": [], "decomposition": [],
     "answer": ["George Washington", "John Adams"]},
    {"id": "f3", "question": "Who?", "categories": [], "decomposition": [], "answer": "Ada Lovelace"},
    {"id": "f4", "question": "How many?", "categories": [], "decomposition": [], "answer": 42},
    {"id": "f5", "question": "Is it true?", "categories": [], "decomposition": [], "answer": True},
    {"id": "f6", "question": "Nested?", "categories": [], "decomposition": [], "answer": {"a": [1, False]}},
]

FRESHQA_HEADER = (["id", "split", "question", "effective_year", "next_review", "false_premise", "num_hops",
                   "fact_type", "source", *qa_formats.FRESHQA_ANSWER_COLUMNS, "note"])


def _freshqa_row(qid, question, answers, *, split="TEST", false_premise="FALSE", note=""):
  answers = list(answers) + [""] * (10 - len(answers))
  return [qid, split, question, "2023", "occasionally", false_premise, "one-hop", "slow-changing",
          "https://en.wikipedia.org/wiki/X", *answers, note]


def _write_freshqa(path, rows, *, preamble=2):
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    if preamble >= 1:
      writer.writerow(["FreshQA (questions as of 2024-01-01); see the paper", *[""] * 20])
    if preamble >= 2:
      writer.writerow([""] * 21)
    writer.writerow(FRESHQA_HEADER)
    writer.writerows(rows)
  return path


def _write_parquet(path, columns: dict):
  pq.write_table(pa.table(columns), path)
  return path


def test_read_hotpotqa_real_shape(tmp_path):
  path = _write_text(tmp_path / "hotpot_dev_distractor_v1.json", json.dumps([HOTPOT_RECORD], indent=1))
  (example,) = qa_formats.read_qa(path)
  assert example == QAExample(HOTPOT_RECORD["_id"], HOTPOT_RECORD["question"], ["yes"], "hotpotqa",
                              {"type": "comparison", "level": "hard",
                               "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]]})


def test_read_musique_real_shape(tmp_path):
  path = _write_lines(tmp_path / "musique_ans_v1.0_dev.jsonl", [MUSIQUE_RECORD])
  (example,) = qa_formats.read_qa(path)
  assert example.id == "2hop__13548_13529" and example.source == "musique"
  assert example.answers == ["green", "Green colour", "verdant"]
  assert example.metadata["answerable"] is True and example.metadata["hops"] == 2
  assert example.metadata["decomposition"] == MUSIQUE_RECORD["question_decomposition"]
  assert example.metadata["supporting_idx"] == [1, 2]
  assert example.metadata["supporting_titles"] == ["Green", "Miami"]


def test_read_2wiki_real_shape_with_aliases(tmp_path):
  path = _write_text(tmp_path / "dev.json", json.dumps(TWOWIKI_RECORDS, ensure_ascii=False))
  _write_lines(tmp_path / "id_aliases.json", TWOWIKI_ALIASES)
  examples = list(qa_formats.read_qa(path))
  assert [e.answers for e in examples] == [
      ["Małgorzata Braunek", "Malgorzata Braunek"],  # The answer itself is not repeated.
      ["no", "No"],  # Keyed by the record's _id (no answer_id).
      ["Poland", "Republic of Poland", "Polish", "Pole"]]  # Aliases, then demonyms.
  assert examples[1].metadata["entity_ids"] == ["Q6444590", "Q7845083"]
  assert examples[1].metadata["answer_id"] is None and examples[0].metadata["answer_id"] == "Q274082"
  assert examples[0].metadata["hops"] == 2 and examples[0].metadata["type"] == "compositional"
  # Without an alias file, only the answers.
  other = tmp_path / "other"
  other.mkdir()
  alone = _write_text(other / "dev.json", path.read_text(encoding="utf-8"))
  assert [e.answers for e in qa_formats.read_2wiki(alone)] == [["Małgorzata Braunek"], ["no"], ["Poland"]]
  explicit = qa_formats.read_2wiki(alone, aliases_path=tmp_path / "id_aliases.json")
  assert [e.answers for e in explicit] == [e.answers for e in examples]


def test_read_bamboogle_parquet(tmp_path):
  path = _write_parquet(tmp_path / "bamboogle.parquet",
                        {"Question": ["Who was president when the first Star Wars film came out?",
                                      "Which city hosted the 1992 Olympics?"],
                         "Answer": ["Jimmy Carter", "Barcelona"]})
  examples = list(qa_formats.read_qa(path))
  assert [(e.id, e.answers, e.source) for e in examples] == [
      ("0", ["Jimmy Carter"], "bamboogle"), ("1", ["Barcelona"], "bamboogle")]
  assert examples[1].question == "Which city hosted the 1992 Olympics?"


def test_read_fanoutqa_flattens_every_answer_type(tmp_path):
  path = _write_text(tmp_path / "fanout-final-dev.json", json.dumps(FANOUT_RECORDS))
  examples = list(qa_formats.read_qa(path))
  assert [e.answer for e in examples] == [
      "Tokyo - 37,400,068\nDelhi - 28,514,000",
      "George Washington\nJohn Adams",
      "Ada Lovelace",
      "42",
      "yes",
      "a - 1\nno"]
  assert examples[0].metadata["answer_raw"] == FANOUT_RECORDS[0]["answer"]
  assert examples[0].metadata["categories"] == ["Geography"]
  assert examples[0].metadata["decomposition"] == FANOUT_RECORDS[0]["decomposition"]
  assert all(e.source == "fanoutqa" for e in examples)


def test_read_freshqa_csv_with_preamble(tmp_path):
  path = _write_freshqa(tmp_path / "FreshQA_v12182023.csv", [
      _freshqa_row("0", "Who is the CEO of Twitter?", ["Linda Yaccarino", "", "Yaccarino"], note="a\nmultiline note"),
      _freshqa_row("1", "When did Einstein win his second Nobel Prize?",
                   ["Einstein won only one Nobel Prize."], split="DEV", false_premise="TRUE"),
      [""] * len(FRESHQA_HEADER),  # Sheets end with empty rows.
  ])
  examples = list(qa_formats.read_qa(path))
  assert [(e.id, e.answers) for e in examples] == [
      ("0", ["Linda Yaccarino", "Yaccarino"]), ("1", ["Einstein won only one Nobel Prize."])]
  assert examples[0].metadata == {
      "split": "TEST", "false_premise": False, "num_hops": "one-hop", "fact_type": "slow-changing",
      "effective_year": "2023", "next_review": "occasionally", "source": "https://en.wikipedia.org/wiki/X",
      "note": "a\nmultiline note"}
  assert examples[1].metadata["false_premise"] is True and examples[1].source == "freshqa"


def test_read_flashrag_with_and_without_metadata(tmp_path):
  (tmp_path / "nq").mkdir()
  path = _write_lines(tmp_path / "nq" / "test.jsonl", [
      {"id": "test_0", "question": "who got the first nobel prize in physics",
       "golden_answers": ["Wilhelm Conrad Röntgen", "Röntgen"], "metadata": {"split": "test"}},
      {"id": "test_1", "question": "when is the next deadpool movie being released",
       "golden_answers": ["May 18, 2018"]},
  ])
  examples = list(qa_formats.read_qa(path))
  assert [(e.id, e.answers, e.metadata, e.source) for e in examples] == [
      ("test_0", ["Wilhelm Conrad Röntgen", "Röntgen"], {"split": "test"}, "nq"),
      ("test_1", ["May 18, 2018"], {}, "nq")]
  other = _write_text(tmp_path / "my_questions.jsonl", path.read_text(encoding="utf-8"))
  assert {e.source for e in qa_formats.read_flashrag(other)} == {"flashrag"}
  assert {e.source for e in qa_formats.read_flashrag(other, source="nq")} == {"nq"}


def test_read_searchr1_parquet_real_shape(tmp_path):
  prompt = [{"role": "user", "content": "Answer the given question. ... Question: who wrote hamlet?\n"}]
  path = _write_parquet(tmp_path / "test.parquet", {
      "id": ["test_0", None],
      "question": ["who wrote hamlet?", "capital of France?"],
      "golden_answers": [["William Shakespeare", "Shakespeare"], None],
      "data_source": ["nq", "hotpotqa"],
      "prompt": [prompt, prompt],
      "ability": ["fact-reasoning", "fact-reasoning"],
      "reward_model": [{"style": "rule", "ground_truth": {"target": ["William Shakespeare", "Shakespeare"]}},
                       {"style": "rule", "ground_truth": {"target": ["Paris"]}}],
      "extra_info": [{"split": "test", "index": 0}, {"split": "test", "index": 7}],
  })
  examples = list(qa_formats.read_qa(path))
  assert [(e.id, e.question, e.answers, e.source) for e in examples] == [
      ("test_0", "who wrote hamlet?", ["William Shakespeare", "Shakespeare"], "nq"),
      ("7", "capital of France?", ["Paris"], "hotpotqa")]  # Answers from the reward model, id from extra_info.
  assert examples[1].metadata == {"searchr1": {"data_source": "hotpotqa", "ability": "fact-reasoning",
                                               "extra_info": {"split": "test", "index": 7}}}


def test_readers_accept_gzip_and_the_other_json_layout(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  path = tmp_path / "hotpot.jsonl.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write(json.dumps(HOTPOT_RECORD) + "\n")
  assert [e.answers for e in qa_formats.read_qa(path)] == [["yes"]]
  listed = _write_text(tmp_path / "musique.json", json.dumps([MUSIQUE_RECORD]))
  assert [e.id for e in qa_formats.read_qa(listed)] == ["2hop__13548_13529"]


# ---------------------------------------------------------------------------------------------
# Malformed records name the file and the line or record.


def _raises_at(reader, path, line, reason):
  with pytest.raises(CorpusFormatError) as info:
    list(reader(path))
  err = info.value
  assert err.path == str(path) and err.line == line
  assert reason in err.reason, err.reason
  where = f"{path}:{line}" if line is not None else str(path)
  assert str(err).startswith(f"{where}: ")
  return err


def test_jsonl_errors_name_the_line(tmp_path):
  good = json.dumps(MUSIQUE_RECORD)
  steps = [MUSIQUE_RECORD["question_decomposition"][0], {"question": "q"}]
  cases = {  # reason -> the bad line
      "bad JSON": '{"id": "x", "question": ',
      "missing field 'answer'": json.dumps({k: v for k, v in MUSIQUE_RECORD.items() if k != "answer"}),
      "field 'answer_aliases' should be a list, got string": json.dumps({**MUSIQUE_RECORD, "answer_aliases": "x"}),
      "expected a JSON object, got list": "[1, 2]",
      "field 'question' is empty": json.dumps({**MUSIQUE_RECORD, "question": " "}),
      "question_decomposition[1]: missing field 'answer'": json.dumps(
          {**MUSIQUE_RECORD, "question_decomposition": steps}),
  }
  for i, (reason, bad) in enumerate(cases.items()):
    # Blank lines are passed over but still counted.
    path = _write_text(tmp_path / f"m{i}.jsonl", f"{good}\n\n{bad}\n{good}\n")
    _raises_at(qa_formats.read_musique, path, 3, reason)
  raw = tmp_path / "bytes.jsonl"
  raw.write_bytes(good.encode() + b"\n" + good.encode().replace(b"green", b"gr\xffen", 1) + b"\n")
  _raises_at(qa_formats.read_musique, raw, 2, "not UTF-8")


def test_json_list_errors_name_the_record(tmp_path):
  records = [HOTPOT_RECORD] * 17 + [{**HOTPOT_RECORD, "answer": None}]
  path = _write_text(tmp_path / "a.json", json.dumps(records))
  err = _raises_at(qa_formats.read_hotpotqa, path, None, "record 17: field 'answer' should be a string, got null")
  assert "a.json: record 17: " in str(err)
  bad_facts = _write_text(tmp_path / "b.json", json.dumps([{**HOTPOT_RECORD, "supporting_facts": [["T", "0"]]}]))
  _raises_at(qa_formats.read_hotpotqa, bad_facts, None, "record 0: field 'supporting_facts'[0]")
  data = json.dumps([HOTPOT_RECORD, HOTPOT_RECORD, HOTPOT_RECORD], ensure_ascii=False).encode()
  third = data.rindex(b"Ed Wood is a 1994")
  (tmp_path / "c.json").write_bytes(data[:third] + b"\xe9" + data[third + 1:])
  _raises_at(qa_formats.read_hotpotqa, tmp_path / "c.json", None, "record 2: text is not valid UTF-8")
  fanout = _write_text(tmp_path / "f.json", json.dumps([FANOUT_RECORDS[0], {"id": "x", "question": "q"}]))
  _raises_at(qa_formats.read_fanoutqa, fanout, None, "record 1: missing field 'answer'")
  twowiki = _write_text(tmp_path / "dev.json", json.dumps([TWOWIKI_RECORDS[0], {**TWOWIKI_RECORDS[1], "_id": True}]))
  _raises_at(qa_formats.read_2wiki, twowiki, None, "record 1: field '_id' should be a string or an integer")


def test_unparseable_json_list_names_the_line_even_when_skipping(tmp_path):
  path = _write_text(tmp_path / "a.json", "[\n" + json.dumps(HOTPOT_RECORD) + ",\n{\"_id\": oops}\n]\n")
  with pytest.raises(CorpusFormatError) as info:
    list(qa_formats.read_hotpotqa(path, skip_bad=True))
  assert info.value.line == 3 and "bad JSON" in str(info.value)
  # A file that does not start with '[' is read as JSON lines.
  obj = _write_text(tmp_path / "b.json", json.dumps({"data": [HOTPOT_RECORD]}, indent=1))
  _raises_at(qa_formats.read_hotpotqa, obj, 1, "bad JSON")


def test_2wiki_alias_file_errors_name_that_file(tmp_path):
  path = _write_text(tmp_path / "dev.json", json.dumps(TWOWIKI_RECORDS))
  aliases = _write_lines(tmp_path / "id_aliases.json", TWOWIKI_ALIASES[:2] + [{"Q_id": "Q5", "aliases": "Five"}])
  with pytest.raises(CorpusFormatError) as info:
    list(qa_formats.read_2wiki(path))
  assert info.value.path == str(aliases) and info.value.line == 3 and "'aliases'" in info.value.reason


def test_freshqa_errors_name_the_csv_line(tmp_path):
  rows = [_freshqa_row("0", "Q0?", ["A0"], note="two\nlines"),  # Lines 4-5.
          _freshqa_row("1", "", ["A1"]),  # Line 6.
          _freshqa_row("2", "Q2?", [])]  # Line 7.
  path = _write_freshqa(tmp_path / "fresh.csv", rows)
  _raises_at(qa_formats.read_freshqa, path, 6, "empty 'question' cell")
  path = _write_freshqa(tmp_path / "fresh2.csv", [rows[0], rows[2]])
  _raises_at(qa_formats.read_freshqa, path, 6, "no answer in the answer_0 .. answer_9 cells")
  raw = _write_freshqa(tmp_path / "fresh3.csv", [rows[0], _freshqa_row("3", "Qmark?", ["A3"])])
  raw.write_bytes(raw.read_bytes().replace(b"Qmark", b"Q\xfe\xffark"))
  _raises_at(qa_formats.read_freshqa, raw, 6, "not valid UTF-8")
  no_header = _write_text(tmp_path / "fresh4.csv", "a,b,c\n1,2,3\n")
  with pytest.raises(CorpusFormatError, match="no header row"):
    list(qa_formats.read_freshqa(no_header))


def test_parquet_errors_name_the_row(tmp_path):
  path = _write_parquet(tmp_path / "b.parquet", {"Question": ["Q0?", None, "Q2?"], "Answer": ["A0", "A1", "A2"]})
  _raises_at(qa_formats.read_bamboogle, path, None, "row 1: field 'Question' should be a string, got null")
  missing = _write_parquet(tmp_path / "c.parquet", {"Question": ["Q0?"]})
  _raises_at(qa_formats.read_bamboogle, missing, None, "missing column 'Answer'")
  not_parquet = _write_text(tmp_path / "d.parquet", "Question,Answer\n")
  _raises_at(qa_formats.read_bamboogle, not_parquet, None, "not a readable parquet file")
  no_answer = _write_parquet(tmp_path / "e.parquet", {"question": ["q"], "golden_answers": [[]]})
  _raises_at(qa_formats.read_searchr1, no_answer, None, "row 0: no answer")


def test_skip_bad_skips_and_counts(tmp_path):
  good = json.dumps(MUSIQUE_RECORD)
  path = _write_text(tmp_path / "m.jsonl", "\n".join([
      good, "{oops", json.dumps({**MUSIQUE_RECORD, "id": "2"}), json.dumps({"id": "3"}), good]) + "\n")
  stats = QAReadStats()
  examples = list(qa_formats.read_qa(path, skip_bad=True, stats=stats))
  assert [e.id for e in examples] == ["2hop__13548_13529", "2", "2hop__13548_13529"]
  assert (stats.read, stats.skipped, stats.files) == (3, 2, 1)
  assert stats.skipped_by_reason == {"bad_json": 1, "missing_field": 1}
  assert stats.first_error.startswith(f"{path}:2: bad JSON")
  listed = _write_text(tmp_path / "h.json", json.dumps([HOTPOT_RECORD, 5, {**HOTPOT_RECORD, "question": 1}]))
  stats = QAReadStats()
  assert len(list(qa_formats.read_hotpotqa(listed, skip_bad=True, stats=stats))) == 1
  assert stats.skipped == 2 and stats.first_error == f"{listed}: record 1: expected a JSON object, got integer"
  fresh = _write_freshqa(tmp_path / "f.csv", [_freshqa_row("0", "Q?", []), _freshqa_row("1", "Q?", ["A"])])
  stats = QAReadStats()
  assert [e.id for e in qa_formats.read_freshqa(fresh, skip_bad=True, stats=stats)] == ["1"]
  assert stats.skipped == 1
  bamboogle = _write_parquet(tmp_path / "b.parquet", {"Question": ["Q0?", None], "Answer": ["A0", "A1"]})
  stats = QAReadStats()
  assert [e.id for e in qa_formats.read_bamboogle(bamboogle, skip_bad=True, stats=stats)] == ["0"]
  assert stats.skipped == 1 and stats.first_error.endswith("row 1: field 'Question' should be a string, got null")


# ---------------------------------------------------------------------------------------------
# Format detection.


def test_auto_detection(tmp_path):
  (tmp_path / "nq").mkdir()
  files = {
      "hotpotqa": _write_text(tmp_path / "hotpot_dev_distractor_v1.json", json.dumps([HOTPOT_RECORD])),
      "musique": _write_lines(tmp_path / "musique_ans_v1.0_dev.jsonl", [MUSIQUE_RECORD]),
      "2wiki": _write_text(tmp_path / "dev.json", json.dumps(TWOWIKI_RECORDS)),
      "fanoutqa": _write_text(tmp_path / "fanout-final-dev.json", json.dumps(FANOUT_RECORDS)),
      "flashrag": _write_lines(tmp_path / "nq" / "test.jsonl", [{"id": "0", "question": "q", "golden_answers": ["a"]}]),
      "freshqa": _write_freshqa(tmp_path / "fresh.csv", [_freshqa_row("0", "Q?", ["A"])]),
      "bamboogle": _write_parquet(tmp_path / "bamboogle.parquet", {"Question": ["q"], "Answer": ["a"]}),
      "searchr1": _write_parquet(tmp_path / "train.parquet", {"question": ["q"], "golden_answers": [["a"]]}),
  }
  for fmt, path in files.items():
    assert qa_formats.detect_qa_format(path) == fmt
    assert len(list(qa_formats.read_qa(path))) >= 1
  # A first record larger than the first read of the file.
  big = _write_text(tmp_path / "big.json", json.dumps([{**HOTPOT_RECORD, "context": [["T", ["x" * 200_000]]]}]))
  assert qa_formats.detect_qa_format(big) == "hotpotqa"


def test_auto_detection_failures_are_clear(tmp_path):
  cases = {
      "pass format=": _write_lines(tmp_path / "unknown.jsonl", [{"q": "x", "a": "y"}]),
      "no records": _write_text(tmp_path / "empty.json", "[]"),
      "alias file": _write_lines(tmp_path / "id_aliases.json", TWOWIKI_ALIASES),
      "columns": _write_parquet(tmp_path / "other.parquet", {"text": ["x"]}),
  }
  for reason, path in cases.items():
    with pytest.raises(CorpusFormatError, match=reason) as info:
      qa_formats.read_qa(path)
    assert info.value.path == str(path)
  bad = _write_text(tmp_path / "bad.jsonl", "\n{nope\n")
  with pytest.raises(CorpusFormatError) as info:
    qa_formats.detect_qa_format(bad)
  assert info.value.line == 2
  with pytest.raises(ValueError, match="unknown QA format"):
    qa_formats.read_qa(bad, format="squad")
  with pytest.raises(FileNotFoundError):
    qa_formats.read_qa(tmp_path / "missing.json")


def test_qa_example_needs_an_answer():
  with pytest.raises(ValueError, match="no answers"):
    QAExample("x", "q?", [], "test")
  example = QAExample("x", "q?", ["a", "b"], "test", {"k": 1})
  assert (example.answer, example.aliases) == ("a", ["b"])
  assert QAExample.from_json(json.loads(json.dumps(example.to_json()))) == example
