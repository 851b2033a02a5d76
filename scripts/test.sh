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
# The container tests (tests/test_containers.py) build the runner images and run Jobs in Docker.
# In CI, or when asked (MEDBENCH_DOCKER=1), as root with apt-get: install docker.io and
# debootstrap, start dockerd if none answers, and make the local base image once (kept between
# runs); MEDBENCH_DOCKER=0 says no. Wherever Docker cannot run, those tests are skipped with one
# line saying why.
docker_up() {
  if ! command -v docker >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    setsid dockerd >/tmp/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker info >/dev/null 2>&1 || { echo "docker: dockerd did not start (/tmp/dockerd.log)"; return 0; }
  bash scripts/local-base-image.sh || echo "docker: no local base image; the container tests will be skipped"
}
if [ "${MEDBENCH_DOCKER:-}" != "0" ] && { [ "${CI:-}" = "true" ] || [ "${MEDBENCH_DOCKER:-}" = "1" ]; } \
   && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  docker_up
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
  # Two worker processes, a test file to each at a time (a file's fixtures, its servers and
  # models, are built once).
  run_pytest -n "${MEDBENCH_TEST_WORKERS:-2}" --dist loadfile --ignore=tests/test_vllm.py
  run_pytest tests/test_vllm.py
fi
