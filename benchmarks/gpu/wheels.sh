#!/usr/bin/env bash
# Download, on a machine with PyPI access, exactly the packages the GPU suite needs that the GPU image lacks,
# into .whl/ (git-ignored), to carry with the working tree to the GPU machine (no network there), where
# `python3 -m benchmarks.gpu` installs them with `pip install --no-index --no-deps`.
#
# The GPU image (Python 3.12, x86_64; /work/.library/device/KINDS.md) has torch, transformers, accelerate,
# peft, numpy, pandas, pyarrow, huggingface-hub, tokenizers, xxhash, fsspec, psutil, ninja, einops, msgpack,
# py-cpuinfo, nvidia-ml-py, tensorboard. It lacks, and this fetches:
#   trl, datasets and its small dependencies dill + multiprocess, bitsandbytes (QLoRA),
#   deepspeed as its source archive (built there against the image's torch; ops compile on first use),
#   and deepspeed's pure dependencies hjson, pydantic (+ pydantic-core, annotated-types, typing-inspection).
# vLLM (~336 MB) and flash-attn cannot travel within the 64 MiB carry limit: the suite reports them skipped.
#
# Usage: bash benchmarks/gpu/wheels.sh   (PYTHON=... picks the interpreter; it needs pip, and torch +
# setuptools for deepspeed's metadata, e.g. PYTHON=.venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
DEST=.whl
LIMIT_MIB=64
mkdir -p "$DEST"

# Versions: the project's pins (constraints/cpu.txt) where it has them.
WHEELS=(
  trl==1.16.0
  datasets==5.2.0
  dill==0.4.1
  multiprocess==0.70.19
  bitsandbytes==0.50.2
  hjson==3.1.0
  pydantic==2.14.3
  pydantic_core==2.50.4
  annotated-types==0.8.0
  typing-inspection==0.4.5
)
"$PY" -m pip download --quiet --dest "$DEST" --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  "${WHEELS[@]}"
# deepspeed ships no wheel: its source archive (its metadata step imports torch, hence no build isolation)
"$PY" -m pip download --quiet --dest "$DEST" --no-deps --no-binary=:all: --no-build-isolation deepspeed==0.19.8

ls -l "$DEST"
wheels_bytes=$(du -cb "$DEST"/* | tail -1 | cut -f1)
project_bytes=$(git ls-files -z | xargs -0 du -cb | awk '/total$/ {s += $1} END {print s}')
total=$((wheels_bytes + project_bytes))
printf 'wheels: %.1f MiB, project (tracked files): %.1f MiB, carried total: %.1f MiB (limit %d MiB)\n' \
  "$(echo "$wheels_bytes / 1048576" | bc -l)" "$(echo "$project_bytes / 1048576" | bc -l)" \
  "$(echo "$total / 1048576" | bc -l)" "$LIMIT_MIB"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error: the carried total exceeds ${LIMIT_MIB} MiB" >&2
  exit 1
fi
