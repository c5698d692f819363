"""Tests of tools/launch_tpu_pod.sh: the printed gcloud commands, --run, and what the workers run.

A fake `gcloud` (and fake `git`, `make`, `.venv/bin/python`, `.venv/bin/masksearch` for the
remote side) record their arguments, so the tests see exactly what would be called.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "launch_tpu_pod.sh"
REPO_URL = "https://github.com/example/masksearch_jax.git"
LIBTPU = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# `masksearch train` arguments as a user types them, with quotes inside gin flags, a binding with
# spaces, and characters a shell would expand if they were not quoted.
TRAIN_ARGS = [
    "--gin_file=models/tiny.gin",
    "--gin_file=runs/pretrain.gin",
    "--gin.MIXTURE_OR_TASK_NAME='ramp_mixed_1to4'",
    "--gin.MODEL_DIR='gs://bucket/run'",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 256, 'targets': 192}",
    "--gin_bindings=trainer.train.log_period = 5",
    "--gin.NOTE='it is $HOME and `date`'",
]
# More words a shell would split, expand or glob, for the checks that run the commands.
NASTY_ARGS = ["", "it's", 'say "hi"', "back\\slash", "*", "~", "bang!", "$(touch pwned)", "tab\there"]
PREFIX = "gcloud compute tpus tpu-vm ssh pod-1 --zone=us-central2-b --project=my-project --worker=all"
EXPECTED_LINES = [
    PREFIX + " --command='if [ -d masksearch_jax/.git ]; then git -C masksearch_jax fetch origin main && "
    "git -C masksearch_jax checkout --force -B main FETCH_HEAD; else git clone --branch main "
    f"{REPO_URL} masksearch_jax; fi'",
    PREFIX + " --command='cd masksearch_jax && make venv'",
    PREFIX + f" --command='cd masksearch_jax && .venv/bin/python -m pip install \"jax[tpu]==0.10.2\" -f {LIBTPU}'",
    PREFIX + " --command='cd masksearch_jax && nohup .venv/bin/masksearch train --multihost --gin_file=models/tiny.gin "
    "--gin_file=runs/pretrain.gin \"--gin.MIXTURE_OR_TASK_NAME='\\''ramp_mixed_1to4'\\''\" "
    "\"--gin.MODEL_DIR='\\''gs://bucket/run'\\''\" "
    "\"--gin.TASK_FEATURE_LENGTHS={'\\''inputs'\\'': 256, '\\''targets'\\'': 192}\" "
    "\"--gin_bindings=trainer.train.log_period = 5\" "
    r"'\''--gin.NOTE='\''\'\'''\''it is $HOME and `date`'\''\'\'''\'''\'' "
    "> train.log 2>&1 < /dev/null &'",
]
BASE_ARGS = ["--tpu", "pod-1", "--zone", "us-central2-b", "--project", "my-project", "--repo", REPO_URL]


def _recorder(path: Path, name: str) -> None:
  """Writes an executable at `path` that appends [name, cwd, argv] to $RECORD and exits $FAIL_<NAME> or 0."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(
      f"#!{sys.executable}\n"
      "import json, os, sys\n"
      "with open(os.environ['RECORD'], 'a') as f:\n"
      f"  f.write(json.dumps([{name!r}, os.getcwd(), sys.argv[1:]]) + '\\n')\n"
      f"sys.exit(int(os.environ.get('FAIL_{name.upper()}', '0')))\n")
  path.chmod(0o755)


def _calls(record: Path) -> list[list]:
  if not record.exists():
    return []
  return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.fixture
def sandbox(tmp_path):
  """A PATH with fake gcloud, git and make first, and the file they record their calls in."""
  bin_dir = tmp_path / "bin"
  for name in ("gcloud", "git", "make"):
    _recorder(bin_dir / name, name)
  record = tmp_path / "calls.jsonl"
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", RECORD=str(record))
  return env, record


def _launch(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, **kwargs)


def test_prints_the_commands_and_runs_nothing(sandbox):
  env, record = sandbox
  result = _launch([*BASE_ARGS, "--", *TRAIN_ARGS], env)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == EXPECTED_LINES
  assert result.stderr == ""
  assert _calls(record) == []  # Without --run nothing is called.


def test_run_calls_gcloud_with_the_printed_commands(sandbox, tmp_path):
  env, record = sandbox
  printed = _launch([*BASE_ARGS, "--", *TRAIN_ARGS, *NASTY_ARGS], env).stdout.splitlines()
  result = _launch([*BASE_ARGS, "--run", "--", *TRAIN_ARGS, *NASTY_ARGS], env)
  assert result.returncode == 0, result.stderr
  assert result.stdout == "\n".join(printed) + "\n"
  ran = _calls(record)
  assert [name for name, _, _ in ran] == ["gcloud"] * 4
  for (_, _, argv), line in zip(ran, printed):
    assert argv == shlex.split(line)[1:]
    assert argv[:8] == ["compute", "tpus", "tpu-vm", "ssh", "pod-1", "--zone=us-central2-b",
                        "--project=my-project", "--worker=all"]
  # A printed line pasted into a shell makes the same call as --run.
  record.unlink()
  for line in printed:
    subprocess.run(["bash", "-c", line], env=env, cwd=tmp_path, check=True, timeout=60)
  assert [argv for _, _, argv in _calls(record)] == [argv for _, _, argv in ran]
  assert not (tmp_path / "pwned").exists()


def test_run_stops_at_the_first_failing_command(sandbox):
  env, record = sandbox
  result = _launch([*BASE_ARGS, "--run", "--", *TRAIN_ARGS], dict(env, FAIL_GCLOUD="3"))
  assert result.returncode == 3
  assert len(_calls(record)) == 1
  assert result.stdout.splitlines() == EXPECTED_LINES[:1]


def test_the_workers_run_what_was_asked(sandbox, tmp_path):
  """Each remote command, run by bash on a fake worker, calls git, make, pip and masksearch as intended."""
  env, record = sandbox
  train_args = TRAIN_ARGS + NASTY_ARGS
  printed = _launch([*BASE_ARGS, "--python", "python3.11", "--", *train_args], env).stdout.splitlines()
  remote = [shlex.split(line)[-1].removeprefix("--command=") for line in printed]
  home = tmp_path / "worker_home"
  home.mkdir()
  checkout = home / "masksearch_jax"

  def on_worker(command: str) -> list[list]:
    record.unlink(missing_ok=True)
    subprocess.run(["bash", "-c", command], env=env, cwd=home, check=True, timeout=60)
    return [[name, os.path.relpath(cwd, home), argv] for name, cwd, argv in _calls(record)]

  # A fresh worker clones; a worker with a checkout fetches the branch and checks it out.
  assert on_worker(remote[0]) == [["git", ".", ["clone", "--branch", "main", REPO_URL, "masksearch_jax"]]]
  (checkout / ".git").mkdir(parents=True)
  assert on_worker(remote[0]) == [
      ["git", ".", ["-C", "masksearch_jax", "fetch", "origin", "main"]],
      ["git", ".", ["-C", "masksearch_jax", "checkout", "--force", "-B", "main", "FETCH_HEAD"]]]
  assert on_worker(remote[1]) == [["make", "masksearch_jax", ["venv", "PYTHON=python3.11"]]]
  _recorder(checkout / ".venv" / "bin" / "python", "python")
  assert on_worker(remote[2]) == [["python", "masksearch_jax",
                                   ["-m", "pip", "install", "jax[tpu]==0.10.2", "-f", LIBTPU]]]
  # Training starts in the background with nohup: wait for the fake to record its call.
  _recorder(checkout / ".venv" / "bin" / "masksearch", "masksearch")
  record.unlink(missing_ok=True)
  subprocess.run(["bash", "-c", remote[3]], env=env, cwd=home, check=True, timeout=60)
  deadline = time.time() + 30
  while time.time() < deadline and not _calls(record):
    time.sleep(0.05)
  assert [[name, os.path.relpath(cwd, home), argv] for name, cwd, argv in _calls(record)] == [
      ["masksearch", "masksearch_jax", ["train", "--multihost", *train_args]]]
  assert (checkout / "train.log").is_file()
  assert not list(tmp_path.rglob("pwned"))


def test_options_change_the_commands(sandbox):
  env, _ = sandbox
  result = _launch(["--tpu=pod 2", "--zone=europe-west4-a", f"--repo={REPO_URL}", "--branch", "dev/x",
                    "--dir", "runs/my checkout", "--log", "logs/w.log", "--", "--gin_file=a.gin"], env)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 4
  prefix = "gcloud compute tpus tpu-vm ssh 'pod 2' --zone=europe-west4-a --worker=all --command="
  assert all(line.startswith(prefix) for line in lines)  # No --project: gcloud's default.
  remote = [shlex.split(line)[-1].removeprefix("--command=") for line in lines]
  assert remote[0] == ('if [ -d "runs/my checkout"/.git ]; then git -C "runs/my checkout" fetch origin dev/x && '
                       'git -C "runs/my checkout" checkout --force -B dev/x FETCH_HEAD; else git clone --branch '
                       f'dev/x {REPO_URL} "runs/my checkout"; fi')
  assert remote[1] == 'cd "runs/my checkout" && make venv'
  assert remote[3] == ('cd "runs/my checkout" && nohup .venv/bin/masksearch train --multihost --gin_file=a.gin > logs/w.log '
                       '2>&1 < /dev/null &')


@pytest.mark.parametrize("args,message", [
    (["--zone", "z", "--repo", REPO_URL, "--", "--gin_file=a.gin"], "--tpu NAME is required"),
    (["--tpu", "t", "--repo", REPO_URL, "--", "--gin_file=a.gin"], "--zone ZONE is required"),
    (["--tpu", "t", "--zone", "z", "--", "--gin_file=a.gin"], "--repo URL is required"),
    (["--tpu", "t", "--zone", "z", "--repo", REPO_URL], "no arguments for masksearch train"),
    (["--tpu", "t", "--zone", "z", "--repo", REPO_URL, "--gin_file=a.gin"], "unknown argument '--gin_file=a.gin'"),
    (["--tpu"], "--tpu needs a value"),
])
def test_mistakes_are_named_and_nothing_runs(sandbox, args, message):
  env, record = sandbox
  result = _launch(["--run", *args], env)
  assert result.returncode == 2
  assert message in result.stderr
  assert result.stdout == ""
  assert _calls(record) == []


def test_help_explains_every_option(sandbox):
  env, record = sandbox
  result = _launch(["--help"], env)
  assert result.returncode == 0
  for option in ("--tpu", "--zone", "--project", "--repo", "--branch", "--dir", "--python", "--log", "--run",
                 "--worker=all", "make venv", "jax[tpu]", LIBTPU, "nohup", "jax.distributed.initialize()"):
    assert option in result.stdout, option
  assert _calls(record) == []


def test_a_newline_in_an_argument_is_refused(sandbox):
  env, record = sandbox
  result = _launch([*BASE_ARGS, "--run", "--", "--gin_bindings=a = 1\nb = 2"], env)
  assert result.returncode == 2
  assert "contains a newline" in result.stderr
  assert result.stdout == "" and _calls(record) == []
