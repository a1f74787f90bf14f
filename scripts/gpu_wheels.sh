#!/usr/bin/env bash
# Wheels for running benchmarks/gpu_check.py on a GPU machine that has its own CUDA build of torch and no network.
#
# Here, with PyPI (downloads for the GPU machine's Python, not this one's):
#     bash scripts/gpu_wheels.sh [PYTHON_VERSION] [DIR]        # defaults: 3.12 .whl
# There, in the repository root (the machine's torch stays; nothing else is fetched):
#     python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#     PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_check.py --vectors PATH/official-tiny
#
# Only what the check imports and such an image lacks, at the versions this project pins: diffusers and the
# transformers / tokenizers / huggingface-hub it was tested with (about 17 MB; the check reads no video, so PyAV is
# not needed: add av==18.1.0 for the CLI's video paths). torch is never downloaded,
# and --no-deps keeps pip from resolving one. MediaPipe is not needed: the geometric generator's part is skipped
# without it. Add "--dir" to .git/info/exclude so the wheels are never committed.
set -euo pipefail
python_version="${1:-3.12}"
dir="${2:-.whl}"
packages=(diffusers==0.32.2 transformers==4.49.0 tokenizers==0.21.4 huggingface-hub==0.36.2)
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
mkdir -p "$dir"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation cp "${platforms[@]}" -d "$dir" "${packages[@]}"
echo "wheels for Python $python_version in $dir:"
ls -1 "$dir"
du -sh "$dir"
