#!/usr/bin/env bash
# Set up a virtual environment and run the whole test suite. Used by the README and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The report test opens the page in headless Chromium (Debian's package). In CI, or when asked,
# install it; elsewhere that one test is skipped with its reason if Chromium is absent.
if [ ! -x /usr/bin/chromium ] && { [ "${CI:-}" = "true" ] || [ "${MEDBENCH_INSTALL_CHROMIUM:-}" = "1" ]; } \
   && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
. .venv/bin/activate
ruff check .
mypy
# pytest exit 5 (no tests collected) is a failure too.
run_pytest() {
  set +e
  python -m pytest -q -p no:cacheprovider "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; return 1; fi
  return "$rc"
}
if [ "$#" -gt 0 ]; then
  run_pytest "$@"
else
  # The vLLM tests get a process of their own: starting vLLM's engine walks every loaded module,
  # and the proxies that flask (loaded by moto for the S3 tests) leaves in them break that walk.
  run_pytest --ignore=tests/test_vllm.py
  run_pytest tests/test_vllm.py
fi
