#!/usr/bin/env bash
# Build the cluster image (cluster/Dockerfile) from the repository root, optionally push it.
#   cluster/build-image.sh REGISTRY/reasonrank:TAG [--push]
# Then point the manifests at it: python -m cluster.render --image REGISTRY/reasonrank:TAG
set -euo pipefail
image=${1:?usage: cluster/build-image.sh REGISTRY/reasonrank:TAG [--push]}
cd "$(dirname "$0")/.."
DOCKER_BUILDKIT=1 docker build --platform linux/amd64 -f cluster/Dockerfile -t "$image" .
if [ "${2:-}" = "--push" ]; then
  docker push "$image"
fi
