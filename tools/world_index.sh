#!/usr/bin/env bash
# Generate an embedded world of about N passages and build its Tantivy index.
#
#   tools/world_index.sh OUT_DIR [NUM_PASSAGES=100000] [SEED=0]
#
# Writes OUT_DIR/world (the world, with wiki-18 and FlashRAG copies) and
# OUT_DIR/index; serve it with `masksearch serve-index --index OUT_DIR/index`.
set -euo pipefail
out=${1:?usage: tools/world_index.sh OUT_DIR [NUM_PASSAGES] [SEED]}
num_passages=${2:-100000}
seed=${3:-0}
bin=$(dirname "$0")/../.venv/bin
masksearch=$bin/masksearch
[ -x "$masksearch" ] || masksearch=masksearch
"$masksearch" generate-world --out "$out/world" --num_passages "$num_passages" --seed "$seed" \
  --formats wiki18,flashrag
"$masksearch" build-index --corpus "$out/world/passages.jsonl" --format jsonl --index "$out/index"
