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
