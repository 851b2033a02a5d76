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
set +e
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
