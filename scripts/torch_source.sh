# Where scripts/setup.sh installs torch from. Sourced, not run.
#
# PyPI's Linux wheel of torch is the CUDA build, with several GB of NVIDIA libraries. A machine
# without a GPU gets PyTorch's own CPU wheel index instead; where that index cannot be reached
# (an offline mirror, a firewall), the plain pin from pip's configured index, said plainly.

TORCH_VERSION="2.13.0"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
# Seconds the probe may take: long enough for a real connection, short enough that a machine
# that cannot reach the index never waits for pip's minutes of retries.
TORCH_PROBE_SECONDS=4

# Runs a command with a time limit where coreutils' timeout exists (not on stock macOS).
_bounded() {
  local seconds="$1"; shift
  if command -v timeout >/dev/null 2>&1; then timeout "$seconds" "$@"; else "$@"; fi
}

# True when nvidia-smi exists and lists at least one GPU.
gpu_visible() {
  command -v nvidia-smi >/dev/null 2>&1 || return 1
  local gpus
  gpus="$(_bounded 10 nvidia-smi -L 2>/dev/null)" || return 1
  [[ "$gpus" == *GPU* ]]
}

# True when URL answers within SECONDS (DNS, connect and transfer together).
url_reachable() {
  local url="$1" seconds="$2"
  if command -v curl >/dev/null 2>&1; then
    _bounded "$((seconds + 1))" curl -fsSL -o /dev/null --connect-timeout "$seconds" \
      --max-time "$seconds" "$url" >/dev/null 2>&1
  else
    _bounded "$((seconds + 1))" python3 -c \
      'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read(1)' \
      "$url" "$seconds" >/dev/null 2>&1
  fi
}

# Sets TORCH_INDEX (empty: pip's configured index) and TORCH_NOTE (one line saying which and why).
choose_torch_source() {
  if gpu_visible; then
    TORCH_INDEX=""
    TORCH_NOTE="a GPU is visible (nvidia-smi): torch==$TORCH_VERSION from pip's configured index"
    TORCH_NOTE+=" (on Linux PyPI's wheel is the CUDA build)"
  elif url_reachable "$TORCH_CPU_INDEX/" "$TORCH_PROBE_SECONDS"; then
    TORCH_INDEX="$TORCH_CPU_INDEX"
    TORCH_NOTE="no GPU visible: the CPU build, torch==$TORCH_VERSION from $TORCH_CPU_INDEX"
  else
    TORCH_INDEX=""
    TORCH_NOTE="no GPU visible, but $TORCH_CPU_INDEX could not be reached (${TORCH_PROBE_SECONDS} s probe):"
    TORCH_NOTE+=" torch==$TORCH_VERSION from pip's configured index"
    TORCH_NOTE+=" (from PyPI on Linux that is the CUDA build, several GB)"
  fi
}
