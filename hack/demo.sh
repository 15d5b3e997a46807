#!/usr/bin/env bash
# make demo: two local registries on loopback as two regions, a multi-arch, multi-layer, signed
# image seeded into region-a, replicated to region-b with `replicate -f deploy/examples/oci.yaml`,
# and the digests compared with skopeo.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# The demo needs only a registry and skopeo (make tools installs what the tests need).
missing=()
for pair in docker-registry:docker-registry skopeo:skopeo; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "missing: ${missing[*]}: sudo apt-get install ${missing[*]}" >&2; exit 1; }
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --quiet
bin="$root/target/debug/image-replication-operator"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_registry() { # name port
  local dir="$work/$1"
  mkdir -p "$dir"
  if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
    echo "port $2 is in use; stop what listens there and run make demo again" >&2
    exit 1
  fi
  cat > "$dir/config.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$2}
YAML
  docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "registry $1 did not start:" >&2; cat "$dir/log" >&2; exit 1
}

echo "== starting registries: region-a on 127.0.0.1:5000, region-b on 127.0.0.1:5001"
start_registry region-a 5000
start_registry region-b 5001

echo "== seeding 127.0.0.1:5000/team/web:1.4 (linux/amd64 + linux/arm64, shared base layer, cosign-style signature)"
out="$(python3 hack/make-oci-layout.py "$work/layout" --tag 1.4 --layers 3 --layer-size 2000000 --sign)"
sig="$(sed -n 's/^signature tag: //p' <<<"$out")"
for tag in 1.4 "$sig"; do
  skopeo copy --quiet --all --dest-tls-verify=false "oci:$work/layout:$tag" "docker://127.0.0.1:5000/team/web:$tag"
done

echo "== $bin replicate -f deploy/examples/oci.yaml"
"$bin" replicate -f deploy/examples/oci.yaml

digest() { skopeo inspect --raw --tls-verify=false "docker://$1" | sha256sum | cut -d' ' -f1; }
a="$(digest 127.0.0.1:5000/team/web:1.4)"; b="$(digest 127.0.0.1:5001/team/web:1.4)"
sa="$(digest "127.0.0.1:5000/team/web:$sig")"; sb="$(digest "127.0.0.1:5001/team/web:$sig")"
echo "== result"
echo "region-a team/web:1.4  sha256:$a"
echo "region-b team/web:1.4  sha256:$b"
echo "signature ($sig): region-a sha256:$sa, region-b sha256:$sb"
if [ "$a" = "$b" ] && [ "$sa" = "$sb" ]; then echo "digests match"; else echo "DIGESTS DIFFER" >&2; exit 1; fi
