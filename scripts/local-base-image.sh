#!/usr/bin/env bash
# A local stand-in for the images' base (python:3.11.14-slim-bookworm) on a machine that reaches
# Debian's mirror and PyPI but no container registry (CI here): debootstrap a minimal bookworm
# with Python 3.11, trim it as Debian's slim images are trimmed, import it into Docker, and add
# this machine's CA bundle, which pip inside a build needs where TLS is intercepted. The bundle
# and the PIP_CERT / SSL_CERT_FILE / REQUESTS_CA_BUNDLE variables live in this local base only,
# never in images/.
#   bash scripts/local-base-image.sh [TAG]        (default local/python:3.11-slim)
# Built once: a TAG already made by this recipe is kept (the recipe's hash is a label on it).
# Needs root, debootstrap and a running dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-local/python:3.11-slim}
die() { echo "local-base-image: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker daemon answers at ${DOCKER_HOST:-/var/run/docker.sock}: start dockerd"
recipe=$(sha256sum "$0" | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "medbench.base-recipe"}}' "$tag" 2>/dev/null)" = "$recipe" ]; then
  echo "$tag: already built by this recipe"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
[ -r /etc/ssl/certs/ca-certificates.crt ] || die "/etc/ssl/certs/ca-certificates.crt: this machine's CA bundle is missing"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -5 "$work/debootstrap.log" >&2; die "debootstrap failed (the lines above are its log's last)"; }
root=$work/rootfs
# What Debian's own slim images leave out: downloaded packages, package lists, documentation,
# manual pages and translations, now and for every later apt-get install (gcc in the GPU image).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/99no-recommends"

raw="$tag-rootfs"
tar -C "$root" -c . | docker import - "$raw" >/dev/null
mkdir "$work/ctx"
cp /etc/ssl/certs/ca-certificates.crt "$work/ctx/host-ca-bundle.crt"
cat >"$work/ctx/Dockerfile" <<DOCKERFILE
FROM $raw
COPY host-ca-bundle.crt /etc/ssl/certs/host-ca-bundle.crt
ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca-bundle.crt LANG=C.UTF-8
LABEL medbench.base-recipe=$recipe
CMD ["python3"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$work/ctx" >"$work/build.log" 2>&1 \
  || { grep -v -i -e deprecated -e buildkit "$work/build.log" >&2; die "docker build of the base failed"; }
docker rmi "$raw" >/dev/null 2>&1 || true
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "$tag: built in $((SECONDS - start))s, $((size / 1000000)) MB ($(docker run --rm "$tag" python --version))"
