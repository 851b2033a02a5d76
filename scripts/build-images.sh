#!/usr/bin/env bash
# Build the runner images, check them, and print their sizes.
#   bash scripts/build-images.sh [--cpu | --gpu] [--local-base | --base IMAGE]
#                                [--repo PREFIX] [--tag TAG | --tag-by-inputs] [--no-cache]
#
#   --cpu / --gpu      only that image (default both): images/Dockerfile.cpu (API and echo models),
#                      images/Dockerfile (every local model, GPU or not)
#   --base IMAGE       the Python base of both (default: BASE_IMAGE in the Dockerfiles, the
#                      official python:3.11.14-slim-bookworm, pulled if absent)
#   --local-base       local/python:3.11-slim, made by scripts/local-base-image.sh where no
#                      registry is reachable (CI)
#   --repo PREFIX      name the images PREFIX/medbench-runner[-cpu] (your registry), ready to push
#   --tag TAG          default the version in pyproject.toml
#   --tag-by-inputs    tag in-<hash of the build context and the base>, and skip a build whose
#                      image already exists (what the container tests use between runs)
#   --no-cache         build every step again (a base with new security fixes; a timing)
#
# Each image is built under a temporary tag, then run once (`runner --help`) and weighed
# against its budget; only an image that passes all three gets its name. A failure prints one
# line, exits 1 and leaves any earlier image of that name as it was. Bad arguments exit 2.
# Budgets (MB, as `docker images` counts them) can be changed with MEDBENCH_CPU_IMAGE_BUDGET_MB /
# MEDBENCH_GPU_IMAGE_BUDGET_MB; docs/kubernetes.md says what fills them.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole script is one block, read before it runs: editing this file while a long build runs
# cannot change what the running build does next.
{

CPU_BUDGET_MB=${MEDBENCH_CPU_IMAGE_BUDGET_MB:-400}
GPU_BUDGET_MB=${MEDBENCH_GPU_IMAGE_BUDGET_MB:-11000}
LOCAL_BASE=local/python:3.11-slim
USAGE="usage: bash scripts/build-images.sh [--cpu | --gpu] [--local-base | --base IMAGE] [--repo PREFIX] [--tag TAG | --tag-by-inputs] [--no-cache]"

die() { echo "build-images: $*" >&2; exit 1; }
usage_error() { echo "build-images: $* ($USAGE)" >&2; exit 2; }

kinds="cpu gpu" base="" repo="" tag="" by_inputs=0 no_cache=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) kinds=cpu ;;
    --gpu) kinds=gpu ;;
    --local-base) base=$LOCAL_BASE ;;
    --base | --repo | --tag)
      [ $# -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"
      case "$1" in --base) base=$2 ;; --repo) repo=${2%/}/ ;; --tag) tag=$2 ;; esac
      shift ;;
    --tag-by-inputs) by_inputs=1 ;;
    --no-cache) no_cache=(--no-cache) ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
  shift
done
[ -n "$tag" ] && [ "$by_inputs" = 1 ] && usage_error "--tag and --tag-by-inputs exclude each other"
if [ -n "$tag" ] && ! [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  usage_error "--tag '$tag' is not a Docker tag (letters, digits, _ . -, at most 128)"
fi

command -v docker >/dev/null || die "docker is not installed (Debian/Ubuntu: apt-get install docker.io)"
if ! err=$(docker info 2>&1 >/dev/null); then
  die "no Docker daemon answers ($(printf '%s' "$err" | grep -m1 -i -e error -e cannot || printf '%s' "$err" | head -1)): start dockerd"
fi

# Both Dockerfiles name the same default base; the tests hold them to it.
default_base=$(sed -n 's/^ARG BASE_IMAGE=//p' images/Dockerfile)
base=${base:-$default_base}
if ! docker image inspect "$base" >/dev/null 2>&1; then
  [ "$base" = "$LOCAL_BASE" ] && die "$LOCAL_BASE not found: make it with bash scripts/local-base-image.sh"
  docker pull -q "$base" >/dev/null 2>&1 \
    || die "base image $base is not here and cannot be pulled (no registry? use --local-base)"
fi
# The images' venv, the uid and everything after need the base's Python 3.11 with venv.
if ! out=$(docker run --rm --network none --user 0 --entrypoint python3 "$base" \
    -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python " + sys.version.split()[0])' 2>&1); then
  die "base image $base has no usable Python 3.11 with venv: $(printf '%s' "$out" | tail -1)"
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
context=$(mktemp)
logs=$(mktemp -d "${TMPDIR:-/tmp}/medbench-build-XXXXXX")
keep_logs=0
tmp_tags=()
cleanup() {
  rm -f "$context"
  [ "$keep_logs" = 1 ] || rm -rf "$logs"
  for t in "${tmp_tags[@]}"; do docker rmi -f "$t" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
# The build context, exactly what .dockerignore lets through, as a reproducible tar (sorted, no
# owners, one mtime): its hash names the inputs, and the legacy builder gets no more than this.
tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --exclude=__pycache__ --exclude='*.pyc' \
    -f "$context" .dockerignore pyproject.toml README.md runner launcher images
inputs=$( { sha256sum <"$context"; echo "$base_id"; } | sha256sum | cut -c1-12)
[ "$by_inputs" = 1 ] && tag=in-$inputs
tag=${tag:-$version}

mb() { echo $(( $(docker image inspect -f '{{.Size}}' "$1") / 1000000 )); }

build() {
  local kind=$1 dockerfile name budget
  if [ "$kind" = cpu ]; then dockerfile=images/Dockerfile.cpu name=${repo}medbench-runner-cpu budget=$CPU_BUDGET_MB
  else dockerfile=images/Dockerfile name=${repo}medbench-runner budget=$GPU_BUDGET_MB; fi
  local image=$name:$tag
  if [ "$by_inputs" = 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "$kind: $image $(mb "$image") MB (budget $budget MB), already built from these inputs"
    return
  fi
  local tmp=medbench-build-tmp:$kind-$$ log=$logs/$kind.log start=$SECONDS
  tmp_tags+=("$tmp")
  # DOCKER_BUILDKIT=0: BuildKit would fetch its Dockerfile frontend from a registry.
  if ! DOCKER_BUILDKIT=0 docker build --force-rm "${no_cache[@]}" -f "$dockerfile" --build-arg "BASE_IMAGE=$base" \
      -t "$tmp" - <"$context" >"$log" 2>&1; then
    local step
    step=$(grep -E '^Step [0-9]+/[0-9]+ : ' "$log" | tail -1 | cut -c1-100)
    keep_logs=1
    die "the $kind image did not build (${step:-before its first step}; the log: $log)"
  fi
  local seconds=$((SECONDS - start))
  if ! out=$(docker run --rm --network none "$tmp" --help 2>&1); then
    die "the $kind image built but \`runner --help\` fails in it: $(printf '%s' "$out" | tail -1)"
  fi
  local size
  size=$(mb "$tmp")
  if [ "$size" -gt "$budget" ]; then
    die "the $kind image is $size MB, over its budget of $budget MB ($dockerfile; docs/kubernetes.md says what is in it); not tagged $image"
  fi
  local old
  old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  docker tag "$tmp" "$image"
  docker rmi "$tmp" >/dev/null
  # The image this one replaces, and (with --tag-by-inputs) the images of older inputs, unless a
  # container still uses them.
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$image")" ] \
      && [ "$(docker image inspect -f '{{len .RepoTags}}' "$old")" = 0 ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
  if [ "$by_inputs" = 1 ]; then
    docker images --format '{{.Repository}}:{{.Tag}}' "$name" | grep -E ":in-[0-9a-f]{12}$" \
      | grep -vx "$image" | xargs -r docker rmi >/dev/null 2>&1 || true
  fi
  # The legacy builder leaves the CPU image's build stage untagged, as the next build's cache:
  # keep this build's (the last step before the second FROM), remove those of earlier builds.
  local stage
  stage=$(awk '/^Step [0-9]+\/[0-9]+ : FROM /{if (++n == 2) {print id; exit}} /^ ---> [0-9a-f]+$/{id=$2}' "$log")
  if [ -n "$stage" ]; then
    docker images -q -f dangling=true -f "label=medbench.image-stage=$kind-build" | grep -v "^${stage:0:12}" \
      | xargs -r docker rmi >/dev/null 2>&1 || true
  fi
  echo "$kind: $image $size MB (budget $budget MB), built in ${seconds}s from $base"
}

for kind in $kinds; do build "$kind"; done
exit 0
}
