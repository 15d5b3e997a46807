#!/usr/bin/env bash
# Unpack the envtest assets (etcd, kube-apiserver, kubectl: a real control plane for the tests)
# from ../shared/envtest into .tools/envtest and check them against its SHA256SUMS. Where there
# is no ../shared/envtest (a checkout elsewhere), say how to get them and exit 0: the real-server
# tests then skip, loudly, unless IMGREP_REQUIRE_ENVTEST is set (CI sets it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="${ENVTEST_SOURCE:-$root/../shared/envtest}"
dest="$root/.tools/envtest"
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  echo "envtest: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  exit 0
fi
if [ ! -f "$src/SHA256SUMS" ]; then
  echo "envtest: no assets at $src; the real-API-server tests will be skipped. Get them with" \
    "'setup-envtest use 1.36.x' (controller-runtime) and set KUBEBUILDER_ASSETS" >&2
  exit 0
fi
if [ -f "$dest/SHA256SUMS" ] && cmp -s "$src/SHA256SUMS" "$dest/SHA256SUMS" \
  && (cd "$dest" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
  exit 0
fi
command -v xz >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xz-utils >/dev/null
}
rm -rf "$dest" && mkdir -p "$dest"
for f in etcd kube-apiserver kubectl; do xz -T2 -dc "$src/$f.xz" > "$dest/$f"; done
chmod +x "$dest"/etcd "$dest"/kube-apiserver "$dest"/kubectl
cp "$src/SHA256SUMS" "$dest/SHA256SUMS"
(cd "$dest" && sha256sum --quiet -c SHA256SUMS) || { echo "envtest: checksum mismatch in $dest" >&2; rm -rf "$dest"; exit 1; }
echo "envtest: $("$dest/kube-apiserver" --version 2>/dev/null | head -1) and etcd in $dest"
