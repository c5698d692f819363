#!/usr/bin/env bash
# Print (or, with --run, run) the gcloud commands that install masksearch_jax on every worker of
# a Cloud TPU VM pod slice and start one training run across all of them.
#
#   tools/launch_tpu_pod.sh --tpu NAME --zone ZONE [--project PROJECT] --repo URL [--branch BRANCH]
#                           [--dir DIR] [--python PYTHON] [--log FILE] [--run] -- TRAIN_ARGS...
#
# See --help for the commands and every option.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tools/launch_tpu_pod.sh --tpu NAME --zone ZONE [--project PROJECT] --repo URL
                               [--branch BRANCH] [--dir DIR] [--python PYTHON] [--log FILE]
                               [--run] -- TRAIN_ARGS...

Prints the commands that set up and start a `masksearch train` run on every worker of a Cloud
TPU VM pod slice, one command per line, ready to copy. With --run it also runs them, in order,
stopping at the first that fails. Each is
  gcloud compute tpus tpu-vm ssh NAME --zone=ZONE [--project=PROJECT] --worker=all --command=CMD
so it runs on all workers at once; CMD, in turn:
  1. clones the repository into DIR, or fetches BRANCH and checks it out again (a deployment
     copy: local changes on the workers are not kept);
  2. `make venv`: creates DIR/.venv with the exact pins of requirements.txt;
  3. installs jax[tpu] at the pinned jax version (0.10.2), with libtpu from
     https://storage.googleapis.com/jax-releases/libtpu_releases.html, so jax finds the TPU
     (the pins in requirements.txt are for CPU);
  4. starts `DIR/.venv/bin/masksearch train --multihost TRAIN_ARGS...` (JAX finds the other
     workers from the TPU metadata) in the background with nohup, its
     output in DIR/LOG on each worker.
Every worker runs the same training command. On a pod slice `jax.distributed.initialize()` finds
its peers from the TPU metadata, so no --coordinator_address, --num_processes or --process_id;
each host then reads its own shard of the data and the checkpoints are written once. MODEL_DIR
should be a bucket (gs://...) that every worker can write. The workers need Python 3.11 (as
pyproject.toml says; e.g. `sudo apt-get install -y python3.11 python3.11-venv`, then --python
python3.11).

Options:
  --tpu NAME         The TPU VM (pod slice) name.                                    (required)
  --zone ZONE        Its zone, e.g. us-central2-b.                                   (required)
  --project PROJECT  Its Google Cloud project (default: gcloud's configured project).
  --repo URL         The git repository to clone on the workers.                     (required)
  --branch BRANCH    The branch to check out (default: main).
  --dir DIR          The checkout on each worker, relative to the login directory
                     (default: masksearch_jax).
  --python PYTHON    The Python that `make venv` builds the venv with, e.g. python3.11
                     (default: the Makefile's choice, python3.11 if present, else python3).
  --log FILE         The training log on each worker, relative to DIR (default: train.log).
  --run              Run the commands too (default: print them only).
  -h, --help         This help.
  --                 Everything after it is passed to `masksearch train` unchanged, e.g.
                     --gin_file=models/qwen2_5_0_5b.gin --gin_file=runs/pretrain.gin
                     --gin.MIXTURE_OR_TASK_NAME="'ramp_mixed_1to4'" --gin.TRAIN_STEPS=1000
                     --gin.MODEL_DIR="'gs://BUCKET/run'"

Example:
  tools/launch_tpu_pod.sh --tpu my-v4-32 --zone us-central2-b --project my-project \
    --repo https://github.com/OWNER/masksearch_jax.git -- \
    --gin_file=models/tiny.gin --gin_file=runs/pretrain.gin \
    --gin.MIXTURE_OR_TASK_NAME="'ramp_mixed_1to4'" --gin.TRAIN_STEPS=1000 \
    --gin.MODEL_DIR="'gs://my-bucket/runs/tiny'"
Follow a worker's log with
  gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=0 --command='tail -f DIR/LOG'
EOF
}

die() {
  echo "launch_tpu_pod.sh: $*" >&2
  echo "Try: tools/launch_tpu_pod.sh --help" >&2
  exit 2
}

# One shell word for $1: as it is when it holds only characters no shell treats specially, else
# in single quotes (an inner ' becomes '\'').
quote() {
  local s=$1
  if [[ $s =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# One word for the remote shell. Double quotes where nothing inside them expands, since the whole
# remote command is single-quoted again for the local shell: --gin.X="'v'" stays legible.
quote_remote() {
  local s=$1
  if [[ $s =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "$s"
  elif [[ $s != *[\"\$\`\\!]* ]]; then
    printf '"%s"' "$s"
  else
    quote "$s"
  fi
}

# The words of "$@" quoted for the remote shell and joined by spaces: a command line that the
# shell splits back into exactly these words.
remote_words() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote_remote "$word")"
  done
  printf '%s' "$out"
}

JAX_VERSION=0.10.2
LIBTPU_RELEASES=https://storage.googleapis.com/jax-releases/libtpu_releases.html

tpu="" zone="" project="" repo="" branch=main dir=masksearch_jax python="" log=train.log run=0
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --run) run=1; shift ;;
    --) shift; break ;;
    --tpu|--zone|--project|--repo|--branch|--dir|--python|--log)
      (($# >= 2)) || die "$1 needs a value"
      value=$2
      case $1 in
        --tpu) tpu=$value ;; --zone) zone=$value ;; --project) project=$value ;; --repo) repo=$value ;;
        --branch) branch=$value ;; --dir) dir=$value ;; --python) python=$value ;; --log) log=$value ;;
      esac
      shift 2 ;;
    --tpu=*|--zone=*|--project=*|--repo=*|--branch=*|--dir=*|--python=*|--log=*)
      name=${1%%=*} value=${1#*=}
      case $name in
        --tpu) tpu=$value ;; --zone) zone=$value ;; --project) project=$value ;; --repo) repo=$value ;;
        --branch) branch=$value ;; --dir) dir=$value ;; --python) python=$value ;; --log) log=$value ;;
      esac
      shift ;;
    *) die "unknown argument '$1' (the arguments of masksearch train go after --)" ;;
  esac
done
train_args=("$@")

[[ -n $tpu ]] || die "--tpu NAME is required"
[[ -n $zone ]] || die "--zone ZONE is required"
[[ -n $repo ]] || die "--repo URL is required"
[[ -n $branch && -n $dir && -n $log ]] || die "--branch, --dir and --log must not be empty"
((${#train_args[@]})) || die "no arguments for masksearch train: put them after --, e.g. -- --gin_file=..."
for word in "$tpu" "$zone" "$project" "$repo" "$branch" "$dir" "$python" "$log" "${train_args[@]}"; do
  # One command per line: a newline inside an argument would split it.
  [[ $word != *$'\n'* ]] || die "an argument contains a newline (give each Gin binding its own --gin_bindings): $word"
done

ssh_prefix=(gcloud compute tpus tpu-vm ssh "$tpu" "--zone=$zone")
[[ -z $project ]] || ssh_prefix+=("--project=$project")
ssh_prefix+=(--worker=all)

d=$(quote_remote "$dir")
b=$(quote_remote "$branch")
make_venv=(make venv)
[[ -z $python ]] || make_venv+=("PYTHON=$python")
remote_commands=(
  "if [ -d $d/.git ]; then git -C $d fetch origin $b && git -C $d checkout --force -B $b FETCH_HEAD; else git clone --branch $b $(quote_remote "$repo") $d; fi"
  "cd $d && $(remote_words "${make_venv[@]}")"
  "cd $d && $(remote_words .venv/bin/python -m pip install "jax[tpu]==$JAX_VERSION" -f "$LIBTPU_RELEASES")"
  "cd $d && nohup $(remote_words .venv/bin/masksearch train --multihost "${train_args[@]}") > $(quote_remote "$log") 2>&1 < /dev/null &"
)

printed_prefix=""
for word in "${ssh_prefix[@]}"; do
  printed_prefix+="${printed_prefix:+ }$(quote "$word")"
done
for remote in "${remote_commands[@]}"; do
  # Printed as --command='...': to a shell the same word as the whole argument quoted.
  printf '%s --command=%s\n' "$printed_prefix" "$(quote "$remote")"
  if ((run)); then
    "${ssh_prefix[@]}" "--command=$remote"
  fi
done
