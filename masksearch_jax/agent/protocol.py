"""The search-agent protocol: tags, prompts and the observation format.

Search-R1's convention, so data and retrieval servers interoperate with that
ecosystem: the model thinks in `<think>`, asks in `<search>`, reads results in
`<information>` (inserted by the environment, never trained on) and answers in
`<answer>`. RAMP prompts add MaskSearch's fill-in instruction.
"""

from __future__ import annotations

from typing import Sequence

THINK = ("<think>", "</think>")
SEARCH = ("<search>", "</search>")
INFORMATION = ("<information>", "</information>")
ANSWER = ("<answer>", "</answer>")
MASK = "[mask]"

# Pieces every vocabulary must keep whole.
PROTOCOL_SYMBOLS: tuple[str, ...] = (*THINK, *SEARCH, *INFORMATION, *ANSWER, MASK)

# MaskSearch's instruction for a masked paragraph (its released generator's wording).
RAMP_INSTRUCTION = "Fill in all the [mask] and output the whole paragraph without changing its format."

# Search-R1's instruction ("base" template), with the question appended.
QA_PROMPT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every "
    "time you get new information. After reasoning, if you find you lack some knowledge, you can call "
    "a search engine by <search> query </search> and it will return the top searched results between "
    "<information> and </information>. You can search as many times as your want. If you find no "
    "further external knowledge needed, you can directly provide the answer inside <answer> and "
    "</answer>, without detailed illustrations. For example, <answer> Beijing </answer>. "
    "Question: {question}\n")

RAMP_PARAGRAPH_MARK = "\nParagraph: "  # Where a RAMP prompt's masked paragraph starts.
RAMP_PROMPT = (
    "Fill in every [mask] of the paragraph below. You must conduct reasoning inside <think> and "
    "</think> first every time you get new information. If you lack some knowledge, call a search "
    "engine by <search> query </search> and it will return the top searched results between "
    "<information> and </information>. You can search as many times as you want. When every [mask] "
    "is known, give the filled paragraph inside <answer> and </answer>. " + RAMP_INSTRUCTION +
    RAMP_PARAGRAPH_MARK + "{paragraph}\n")


def qa_prompt(question: str) -> str:
  """The prompt for a question (Search-R1's template)."""
  return QA_PROMPT.format(question=question.strip())


def ramp_prompt(masked_paragraph: str) -> str:
  """The prompt for a masked paragraph."""
  return RAMP_PROMPT.format(paragraph=masked_paragraph.strip())


def format_observation(documents: Sequence[tuple[str, str]]) -> str:
  """Search results as Search-R1 shows them: `Doc k(Title: T) text` lines inside <information>."""
  lines = "".join(f"Doc {k}(Title: {title}) {text}\n" for k, (title, text) in enumerate(documents, 1))
  return f"{INFORMATION[0]}{lines}{INFORMATION[1]}"
