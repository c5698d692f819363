"""Tests of the operator scripts in tools/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def test_world_index_script_builds_a_world_and_its_index(tmp_path):
  env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
  subprocess.run(["bash", str(TOOLS / "world_index.sh"), str(tmp_path / "out"), "600", "3"], check=True, env=env,
                 capture_output=True, timeout=300)
  manifest = json.loads((tmp_path / "out" / "world" / "manifest.json").read_text())
  assert manifest["config"]["seed"] == 3 and 450 <= manifest["counts"]["passages"] <= 750
  assert (tmp_path / "out" / "world" / "formats" / "wiki18" / "wiki-18.jsonl.gz").is_file()
  index_manifest = json.loads((tmp_path / "out" / "index" / "masksearch_index.json").read_text())
  assert index_manifest["num_passages"] == manifest["counts"]["passages"]


def test_copy_probe_flags_name_continuations_and_trains(tmp_path, tiny_world_vocabulary):
  import random
  import shutil

  sys.path.insert(0, str(TOOLS))
  try:
    import copy_probe
  finally:
    sys.path.remove(str(TOOLS))
  from masksearch_jax.data import names
  from masksearch_jax.data.trajectories import Trajectory, TrajectoryWriter

  # Only syllables after the first, in model-written text, count.
  pieces = ["▁Who", "▁Ka", "lo", "mi", "?", "▁Ka", "lo", "▁the"]
  assert copy_probe._name_continuations(pieces, [1, 1, 1, 1, 1, 0, 0, 1]) == [0, 0, 1, 1, 0, 0, 0, 0]
  # Token ids: Ka=1 lo=2 mi=3 Ku=4 x=5. "Ka" was only ever followed by "lo": unique. "Ku" was
  # followed by "lo", never by "mi": absent. "lo" was followed by "x", "mi" and "Ku": ambiguous.
  tokens = [1, 2, 5, 4, 2, 3, 1, 2, 4, 3, 2, 5]
  flags = [0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1]
  assert copy_probe.induction_kinds(tokens, flags) == [0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 2]

  data = tmp_path / "data"
  (data / "vocabulary").mkdir(parents=True)
  shutil.copy(tiny_world_vocabulary.sentencepiece_model_file, data / "vocabulary" / "spm.model")
  (data / "trajectories").mkdir()
  factory = names.NameFactory(random.Random(0))
  with TrajectoryWriter(data / "trajectories" / "qa-train.jsonl") as writer:
    for i in range(48):
      name = f"{factory.word()} {factory.word()}"
      writer.write(Trajectory(
          id=f"q{i}", kind="qa", prompt=f"Question: Where was {name} born?\n", stop_reason="answer", answer=name,
          segments=[{"type": "model", "text": f"<think> I need the birthplace of {name}. </think>\n<search> {name} "
                                              "</search>"},
                    {"type": "observation", "text": "\n\n<information>Doc 1(Title: x) y.\n</information>\n\n"},
                    {"type": "model", "text": f"<answer> {name} </answer>"}]))
  out = tmp_path / "probe.json"
  assert copy_probe.main(["--data_dir", str(data), "--row_length", "96", "--batch_size", "8", "--steps", "80",
                          "--held_out", "8", "--evaluations", "2", "--json", str(out),
                          "--save_params", str(tmp_path / "params.msgpack")]) == 0
  from flax import serialization
  saved = serialization.msgpack_restore((tmp_path / "params.msgpack").read_bytes())
  assert saved["embedding"].shape == (1024, 128) and set(saved) >= {"layers", "final_norm"}  # gin/models/tiny.gin
  results = json.loads(out.read_text())["results"]
  assert [r["step"] for r in results] == [40, 80]
  # The template around the (unseen) names is learnt within 80 steps; the copying is what the probe measures.
  assert results[-1]["train_loss"] < 1.0 and results[-1]["model_token_accuracy"] > 0.4
  assert all(0.0 <= r["name_continuation_accuracy"] <= 1.0 for r in results)
  shares = results[-1]["name_continuations_by_induction"]
  assert set(shares) == set(copy_probe.INDUCTION_KINDS) and abs(sum(v["share"] for v in shares.values()) - 1) < 1e-6
