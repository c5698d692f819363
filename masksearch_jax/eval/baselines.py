"""The paper's baselines, run through the same evaluation as the search agent.

* **Prompt-only** (no agent training): the same `evaluate` with a checkpoint that never had
  agent training (for example the base model imported with `masksearch import-hf`, or a run
  trained on downstream data only) and its own method name (`METHOD` in `runs/eval.gin`).
  Nothing here is specific to it: the method name is a field of every run.
* **Plain RAG** (`mode='rag'`): retrieve the top-k passages for the question once, then let
  the policy answer without searching further. It runs through `SearchAgent` itself: the
  prompt is the question's prompt followed by the retrieved passages as an `<information>`
  block (exactly how an observation follows a search in the agent's own episodes), and the
  rollout is cut to one turn (`max_turns=1`), so a turn that searches instead of answering
  ends the episode without an answer. One code path decodes both, with the same sampler,
  limits and stop rules, which is cleaner than a second decoding loop over `Sampler`.

A retrieval that fails (after the retriever's own retries, each question is tried alone)
leaves its question with the agent's failed-search observation and counts as a search error.
"""

from __future__ import annotations

import logging
from typing import Sequence

from masksearch_jax.agent import protocol
from masksearch_jax.agent.rollout import failed_search_text, observation_text
from masksearch_jax.retrieval.client import RetrievalError
from masksearch_jax.retrieval.retriever import Retriever, SearchHit

logger = logging.getLogger(__name__)

MODES = ("agent", "rag")
_FAILURES = (RetrievalError, OSError, TimeoutError)


def agent_prompt(question: str) -> str:
  """The search agent's prompt (Search-R1's template)."""
  return protocol.qa_prompt(question)


def rag_prompt(question: str, hits: Sequence[SearchHit] | None, error: str | None = None) -> str:
  """The RAG baseline's prompt: the agent's prompt, then the retrieved passages as an observation.

  Args:
    question: The question.
    hits: The passages retrieved for it, best first (None when retrieval failed).
    error: The failure's name, when `hits` is None.
  """
  block = observation_text(hits) if hits is not None else failed_search_text(error or "error")
  return protocol.qa_prompt(question) + block.lstrip("\n")


def retrieve(retriever: Retriever, questions: Sequence[str], top_k: int, batch_size: int = 64
             ) -> list[tuple[list[SearchHit] | None, str | None]]:
  """Top-k passages per question, in batches; a failed batch is retried question by question.

  Returns:
    Per question: (hits, None), or (None, "ErrorName: message") when its search failed.
  """
  results: list[tuple[list[SearchHit] | None, str | None]] = []
  for start in range(0, len(questions), batch_size):
    batch = list(questions[start:start + batch_size])
    try:
      results += [(hits, None) for hits in retriever.batch_search(batch, top_k)]
      continue
    except _FAILURES as e:
      logger.warning("RAG retrieval of %d questions failed (%s); trying them one by one", len(batch), e)
    for question in batch:
      try:
        results.append((retriever.search(question, top_k), None))
      except _FAILURES as e:
        results.append((None, f"{type(e).__name__}: {e}"[:500]))
  return results
