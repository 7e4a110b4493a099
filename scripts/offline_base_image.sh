#!/usr/bin/env bash
# ONLY for machines that cannot reach a container registry (no Docker Hub, no mirror).
#
# `bentoml containerize` builds FROM docker.io/library/python:3.11-slim. Where that image can
# be pulled, or is already present in podman's store, this script does nothing and exits 0:
# the real image is always preferred. Otherwise it builds a stand-in for it from Debian's own
# packages (debootstrap, minbase, bookworm: the same distribution and Python 3.11 as the
# official image) and imports it under the official name, so the Bento's generated
# Dockerfile builds unchanged. See ../shared/notes/containers.md for what was measured.
#
# The stand-in holds what the Bento's Dockerfile (env/docker/Dockerfile) uses from its base:
#   - /bin/sh and bash (the Dockerfile's RUN steps; env/docker/entrypoint.sh is a bash script)
#   - groupadd/useradd (package passwd) to create the non-root `bentoml` user
#   - python3.11 as `python`, `python3` and `python3.11` (found by `uv venv --python 3.11`)
#   - the `uv` binary (>= 0.13.4, so the Dockerfile skips `pip install uv`), copied from the
#     project's virtual environment (or whatever `uv` is on PATH)
#   - the host's CA bundle, so uv reaches the package index through a TLS-intercepting proxy
#     (without it the image build fails with "client error (Connect)"); SSL_CERT_FILE points
#     uv at it.
#
# Usage (as root, with podman and debootstrap installed):
#   scripts/offline_base_image.sh            # idempotent; reruns take well under a second
#   FORCE_STANDIN=1 scripts/offline_base_image.sh   # rebuild the stand-in even if one exists
# Environment:
#   BASE_IMAGE           image name to provide (default docker.io/library/python:3.11-slim)
#   STANDIN_CACHE_DIR    where the rootfs tarball is cached (default ~/.cache/catsdogs)
#   DEBIAN_MIRROR        debootstrap mirror (default http://deb.debian.org/debian)
#   PULL_TIMEOUT         seconds to try pulling the real image first (default 30)
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim}"
CACHE_DIR="${STANDIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/catsdogs}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PULL_TIMEOUT="${PULL_TIMEOUT:-30}"
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARBALL="$CACHE_DIR/python-3.11-slim-standin.tar"
CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

log() { printf 'offline_base_image: %s\n' "$*" >&2; }

command -v podman >/dev/null || { log "podman is not installed"; exit 1; }

if [ -z "${FORCE_STANDIN:-}" ]; then
  if podman image exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE is already present; nothing to do"
    exit 0
  fi
  # A reachable registry wins: pull the real image and stop.
  if timeout "$PULL_TIMEOUT" podman pull --quiet "$BASE_IMAGE" >/dev/null 2>&1; then
    log "pulled the real $BASE_IMAGE from its registry; nothing else to do"
    exit 0
  fi
  log "cannot pull $BASE_IMAGE (no registry reachable): building a stand-in from Debian packages"
fi

if [ ! -s "$TARBALL" ] || [ -n "${FORCE_STANDIN:-}" ]; then
  command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }
  [ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }

  UV_BIN="$ROOT_DIR/.venv/bin/uv"
  [ -x "$UV_BIN" ] || UV_BIN="$(command -v uv || true)"
  if [ -z "$UV_BIN" ] || [ ! -x "$UV_BIN" ]; then
    log "no uv binary found (.venv/bin/uv or PATH)"
    exit 1
  fi
  [ -s "$CA_BUNDLE" ] || { log "no CA bundle at $CA_BUNDLE"; exit 1; }

  mkdir -p "$CACHE_DIR"
  ROOTFS="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  trap 'rm -rf "$ROOTFS"' EXIT

  log "debootstrap bookworm into $ROOTFS (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$ROOTFS" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 || {
    tail -20 "$CACHE_DIR/debootstrap.log" >&2
    exit 1
  }

  # `python`, `python3.11` where python:3.11-slim has them (/usr/local/bin is first on PATH).
  ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
  ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python3"
  [ -e "$ROOTFS/usr/bin/python3.11" ] || { log "python3.11 missing from the rootfs"; exit 1; }
  ln -sf /usr/bin/python3.11 "$ROOTFS/usr/local/bin/python3.11"
  install -m 0755 "$UV_BIN" "$ROOTFS/usr/local/bin/uv"
  # The host's bundle includes the CA of this network's TLS proxy.
  cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  # Nothing of the build host's package caches or lists in the image.
  rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*

  tar -C "$ROOTFS" --numeric-owner -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
  rm -rf "$ROOTFS"
  trap - EXIT
  log "cached the rootfs at $TARBALL"
else
  log "using the cached rootfs $TARBALL"
fi

podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  --message "stand-in for python:3.11-slim built by scripts/offline_base_image.sh" \
  --quiet "$TARBALL" "$BASE_IMAGE" >/dev/null
log "imported the stand-in as $BASE_IMAGE"
