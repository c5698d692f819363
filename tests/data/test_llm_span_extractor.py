"""LLMSpanExtractor against a real OpenAI-compatible HTTP server on loopback, and its parsing."""

from __future__ import annotations

import re

import gin
import pytest

from fake_openai_server import Reply
from masksearch_jax.agent.llm_backends import LLMBackend, OpenAICompatibleBackend
from masksearch_jax.data import llm_span_extractor as lse
from masksearch_jax.data.llm_span_extractor import LLMSpanExtractor, locate_spans, parse_entity_list
from masksearch_jax.data.salient_spans import filter_candidates
from masksearch_jax.data.spans import Span


def _paragraph_of(prompt: str) -> str:
  """The paragraph a request asks about (the prompt's last 'Paragraph:' section)."""
  return prompt.rsplit("Paragraph: ", 1)[1].rsplit("\nEntities:", 1)[0]


# Paragraphs, each with a marker word the fake server scripts its reply by.
PARAGRAPHS = {
    "good": "Vahivoze Tatekape (17 August 1838 – 12 December 1925) was a Lazeran director born in Merofude.",
    "fenced": "Doga is a city in Higumero with a population of 1,317,170 and an area of 53 square kilometres.",
    "malformed": "Zidu University was founded in 1854 by Fali Bosomida in Mimehi.",
    "missing": "The Kupe River is 1,234 km long and rises on Mount Kupe in Lazera.",
    "slow": "Tedimide Hufo wrote Hagadu and Other Stories, published by Sekanu Publishing in 1974.",
    "flaky": "The Puta Legacy, directed by Vahivoze Tatekape, premiered on July 7, 1906.",
    "bad": "Munepo Kirora was born in Fonofe on 14 April 1838 and died on 28 September 1927.",
    "limited": "Sunuzatu Nahega married Morivoli Tatekape in Gudukumi, a Gedorian city of 8,560 people.",
    "objects": "Tade Kolegu studied at Mora College and worked for Sekanu Publishing from 1901.",
}

SCRIPT = {
    "Vahivoze Tatekape (17": [Reply('["Vahivoze Tatekape", "17 August 1838", "12 December 1925", "Lazeran", '
                                    '"Merofude"]')],
    "Doga is a city": [Reply('Sure! Here are the entities:\n```json\n["Doga", "Higumero", "1,317,170", '
                             '"53 square kilometres"]\n```\nLet me know if you need more.')],
    "Zidu University": [Reply("I think the entities are Zidu University, 1854 and Fali Bosomida.")],
    "Kupe River": [Reply('["Kupe River", "Kupe river", "3,000 km", "Mount Everest", "Mount Kupe", "Lazera", '
                         '"Kupe"]')],
    "Tedimide Hufo wrote": [Reply('["Tedimide Hufo"]', delay=1.0)],
    "The Puta Legacy": [Reply("overloaded", status=500), Reply('["The Puta Legacy", "July 7, 1906"]')],
    "Munepo Kirora": [Reply("prompt too long", status=400)],
    "Sunuzatu Nahega": [Reply("rate limited", status=429),
                        Reply('The list: ["Sunuzatu Nahega", "Morivoli Tatekape", "Gudukumi", "8,560"].')],
    "Tade Kolegu": [Reply('{"entities": [{"text": "Tade Kolegu", "type": "PERSON"}, {"entity": "Mora College"}, '
                          '{"name": "Sekanu Publishing"}, {"text": 1901}]}')],
}


def _extractor(server, **kwargs) -> LLMSpanExtractor:
  backend = OpenAICompatibleBackend(server.base_url, "extractor-model", timeout=0.3, max_retries=1, backoff=0.01,
                                    concurrency=4)
  return LLMSpanExtractor(backend, **kwargs)


def _texts(spans):
  return None if spans is None else [(s.text, s.kind) for s in spans]


def test_a_whole_batch_finishes_and_counts_every_outcome(fake_openai):
  server = fake_openai(SCRIPT)
  extractor = _extractor(server)
  keys = list(PARAGRAPHS)
  results = dict(zip(keys, extractor.extract_many([PARAGRAPHS[k] for k in keys])))
  extractor.backend.close()

  assert _texts(results["good"]) == [("Vahivoze Tatekape", "name"), ("17 August 1838", "date"),
                                     ("12 December 1925", "date"), ("Lazeran", "name"), ("Merofude", "name")]
  assert _texts(results["fenced"]) == [("Doga", "name"), ("Higumero", "name"), ("1,317,170", "number"),
                                       ("53 square kilometres", "number")]
  assert results["malformed"] is None
  # "Kupe river", "3,000 km" and "Mount Everest" are not in the text; the lone "Kupe" only
  # occurs inside the longer spans already placed.
  assert _texts(results["missing"]) == [("Kupe River", "name"), ("Mount Kupe", "name"), ("Lazera", "name")]
  assert results["slow"] is None
  assert _texts(results["flaky"]) == [("The Puta Legacy", "name"), ("July 7, 1906", "date")]
  assert results["bad"] is None
  assert _texts(results["limited"]) == [("Sunuzatu Nahega", "name"), ("Morivoli Tatekape", "name"),
                                        ("Gudukumi", "name"), ("8,560", "number")]
  assert _texts(results["objects"]) == [("Tade Kolegu", "name"), ("Mora College", "name"),
                                        ("Sekanu Publishing", "name"), ("1901", "year")]
  for key, spans in results.items():
    for s in spans or []:
      assert PARAGRAPHS[key][s.start:s.end] == s.text

  assert extractor.stats == {"requests": 9, "ok": 6, "malformed": 1, "http_errors": 1, "timeouts": 1,
                             "connection_errors": 0, "spans": 22, "not_found": 4}
  # Retries: the 500 and the 429 were asked twice, the 400 once, the slow one twice (1 retry).
  assert server.count("The Puta Legacy") == 2 and server.count("Sunuzatu Nahega") == 2
  assert server.count("Munepo Kirora") == 1 and server.count("Tedimide Hufo wrote") == 2


def test_extract_one_paragraph_with_its_title(fake_openai):
  server = fake_openai(SCRIPT)
  extractor = _extractor(server)
  spans = extractor.extract(PARAGRAPHS["good"], title="Vahivoze Tatekape")
  extractor.backend.close()
  assert [s.text for s in spans] == ["Vahivoze Tatekape", "17 August 1838", "12 December 1925", "Lazeran",
                                     "Merofude"]
  # MaskSearch's filters then drop the title.
  kept = filter_candidates(spans, PARAGRAPHS["good"], "Vahivoze Tatekape")
  assert [s.text for s in kept] == ["17 August 1838", "12 December 1925", "Lazeran", "Merofude"]
  _, body, _ = server.requests[0]
  assert body["model"] == "extractor-model" and body["temperature"] == 0.0 and body["max_tokens"] == 512
  system, user = body["messages"]
  assert system["role"] == "system" and user["role"] == "user"
  assert "Title: Vahivoze Tatekape\nParagraph: " + PARAGRAPHS["good"] + "\nEntities:" in user["content"]
  assert "JSON list of strings" in user["content"] and "exactly as it is written" in user["content"]


def test_extract_never_raises_for_request_failures(fake_openai):
  server = fake_openai(SCRIPT)
  extractor = _extractor(server)
  assert extractor.extract(PARAGRAPHS["bad"]) is None
  assert extractor.extract(PARAGRAPHS["slow"]) is None
  assert extractor.extract(PARAGRAPHS["malformed"]) is None
  extractor.backend.close()
  assert extractor.stats["http_errors"] == 1 and extractor.stats["timeouts"] == 1
  assert extractor.stats["malformed"] == 1 and extractor.stats["ok"] == 0


def test_an_unreachable_server_counts_connection_errors():
  backend = OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m", timeout=0.5, max_retries=0)
  extractor = LLMSpanExtractor(backend)
  assert extractor.extract_many(["Doga lies in Lazera.", "Kupe is a river."]) == [None, None]
  backend.close()
  assert extractor.stats["connection_errors"] + extractor.stats["timeouts"] == 2


def test_empty_paragraphs_are_not_sent(fake_openai):
  server = fake_openai()
  extractor = _extractor(server)
  assert extractor.extract("  ") == []
  assert extractor.extract_many(["", "Doga lies in Lazera.", "\n"]) == [[], [], []]
  extractor.backend.close()
  assert len(server.requests) == 1 and extractor.stats["requests"] == 1


def test_max_spans_keeps_the_first_items_of_the_reply(fake_openai):
  server = fake_openai({"Doga": [Reply('["Lazera", "Kupe", "Doga", "Mimehi"]')]})
  extractor = _extractor(server, max_spans=2)
  spans = extractor.extract("Doga, Kupe, Mimehi and Lazera.")
  extractor.backend.close()
  assert [s.text for s in spans] == ["Kupe", "Lazera"]


def test_titles_must_match_paragraphs(fake_openai):
  server = fake_openai()
  extractor = _extractor(server)
  with pytest.raises(ValueError, match="2 paragraphs but 1 titles"):
    extractor.extract_many(["a b", "c d"], titles=["x"])
  extractor.backend.close()


def test_a_backend_returning_the_wrong_number_of_replies_is_a_bug():
  class Broken(LLMBackend):
    def chat(self, messages, **kwargs):
      return "[]"

    def batch_chat(self, conversations, **kwargs):
      return []

  with pytest.raises(RuntimeError, match="returned 0 replies for 1 conversations"):
    LLMSpanExtractor(Broken()).extract_many(["Doga lies in Lazera."])


def test_a_model_that_copies_the_world_mentions(fake_openai, tiny_world):
  # A perfect extractor behind the server: it answers with the paragraph's true mentions.
  passages = {p.text: p for p in tiny_world.passages[:60]}

  def answer(body) -> Reply:
    passage = passages[_paragraph_of(body["messages"][-1]["content"])]
    mentions = [passage.text[m.start:m.end] for m in passage.mentions if m.kind != "occupation"]
    return Reply(lse.json.dumps(mentions))

  server = fake_openai(default=answer)
  extractor = _extractor(server)
  texts = list(passages)
  results = extractor.extract_many(texts, titles=[passages[t].title for t in texts])
  extractor.backend.close()
  assert extractor.stats["ok"] == len(texts)
  for text, spans in zip(texts, results):
    mention_texts = {text[m.start:m.end] for m in passages[text].mentions if m.kind != "occupation"}
    assert spans and {s.text for s in spans} <= mention_texts
    # Each distinct mention text is placed once (at its first free occurrence).
    assert len(spans) == len({s.text for s in spans})


def test_extractor_is_configured_by_gin(fake_openai):
  server = fake_openai({"Doga": [Reply('["Doga"]')]})
  gin.clear_config()
  try:
    gin.parse_config([
        f"OpenAICompatibleBackend.base_url = '{server.base_url}'",
        "OpenAICompatibleBackend.model = 'm'",
        "LLMSpanExtractor.backend = @OpenAICompatibleBackend()",
        "LLMSpanExtractor.max_spans = 3",
    ])
    extractor = LLMSpanExtractor()
  finally:
    gin.clear_config()
  assert extractor.max_spans == 3
  assert [s.text for s in extractor.extract("Doga lies there.")] == ["Doga"]
  extractor.backend.close()


# -- parsing and locating (no server) ------------------------------------------------------


@pytest.mark.parametrize("reply,items", [
    ('["a", "b"]', ["a", "b"]),
    ('  ["a", "b"]\n', ["a", "b"]),
    ('```json\n["a", "b"]\n```', ["a", "b"]),
    ('Here you go:\n```\n["a"]\n```\nand also ["b"]', ["a"]),
    ('The entities are ["a", "b"]. Hope this helps!', ["a", "b"]),
    ('Entities: [mask] is not a list, but ["a"] is.', ["a"]),
    ("['a', \"b's\"]", ["a", "b's"]),
    ('[{"text": "a"}, {"entity": "b"}, {"span": "c"}, {"other": "d"}, 7, 2.5, true, null, ["x"]]',
     ["a", "b", "c", "7", "2.5"]),
    ('{"entities": ["a"], "note": "x"}', ["a"]),
    ("[]", []),
    ('```json\n{"result": []}\n```', []),
])
def test_parse_entity_list(reply, items):
  assert parse_entity_list(reply) == items


@pytest.mark.parametrize("reply", ["", "no list here", '["unterminated', '{"entities": "a, b"}', "[mask]", "{}",
                                   '```json\n["broken",\n```'])
def test_parse_entity_list_gives_none_without_a_list(reply):
  assert parse_entity_list(reply) is None


def test_locate_spans_whole_words_first_free_occurrence():
  paragraph = "Kupesa met Kupe at the Kupe River; an American, not from America's south."
  spans, missing = locate_spans(paragraph, ["Kupe", "Kupe River", "America", "American", " Kupe ", "", "nowhere"])
  assert [(s.text, s.start) for s in spans] == [("Kupe", 11), ("Kupe River", 23), ("American", 38),
                                                ("America", 57)]
  assert missing == 1
  for s in spans:
    assert paragraph[s.start:s.end] == s.text


def test_locate_spans_kinds():
  paragraph = "On 3 May 1921 Doga, founded in 1854, had 1,234 people and a load factor of 0.75."
  spans, _ = locate_spans(paragraph, ["3 May 1921", "Doga", "1854", "1,234 people", "load factor", "0.75"])
  assert [(s.text, s.kind) for s in spans] == [("3 May 1921", "date"), ("Doga", "name"), ("1854", "year"),
                                               ("1,234 people", "number"), ("load factor", "term"),
                                               ("0.75", "number")]
  assert all(isinstance(s, Span) for s in spans)


def test_extraction_messages():
  messages = lse.extraction_messages("Doga lies in Lazera.")
  assert messages[0] == {"role": "system", "content": lse.SYSTEM_PROMPT}
  assert messages[1]["content"].endswith("Paragraph: Doga lies in Lazera.\nEntities:")
  assert "Title:" not in messages[1]["content"].split("Example")[1]
  assert re.search(r"people, places, organisations", messages[1]["content"])
