"""The README's examples stay true."""

from __future__ import annotations

import re
from pathlib import Path

import gin
import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_readme_opens_with_the_two_commands():
  first_block = re.search(r"```\n(.*?)```", README, re.S).group(1)
  assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "quickstart"],
                                                                             ["make", "test"]]


def test_gin_knobs_in_the_readme_parse():
  import tasks  # noqa: F401  pylint: disable=unused-import
  from masksearch_jax.data import ramp_source, seqio_tasks
  block = re.search(r"\*\*Gin knobs\*\*.*?```\n(.*?)```", README, re.S).group(1)
  lines = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
  gin.parse_config(lines)
  assert ramp_source.RampCorpus().path == "/data/wiki-18.jsonl.gz"
  assert ramp_source.RampMasking().spans == "world"
  assert seqio_tasks.mixture_rate("ramp_curriculum_stage2", "ramp_mask2") == 3.0
  assert seqio_tasks.QAFiles().hotpotqa == {"validation": "/data/hotpot_dev_distractor_v1.json"}
  assert seqio_tasks.TrajectoryFiles().paths == {"train": ["/runs/r1/trajectories.jsonl"]}
