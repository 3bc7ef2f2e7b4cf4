#!/usr/bin/env bash
# Build the authproxy container image from Dockerfile with buildah, without a
# Docker daemon or registry access, then check it:
#   1. lint the Dockerfile with dockerfile-utils (npm);
#   2. build local stand-ins for the two base images: a Go builder from this
#      machine's Go toolchain and busybox-static, and a runtime with the files
#      distroless/static provides (CA bundle, nonroot user, /tmp);
#   3. build the image with --isolation chroot and vfs storage in a private
#      folder, so nothing touches the machine's container storage;
#   4. check the image config (user, entrypoint, healthcheck, no shell);
#   5. run the image once: the binary starts, /healthz returns 200 and
#      /readyz 503 (the token endpoint is an unused loopback port), and the
#      HEALTHCHECK command exits 0;
#   6. print the image size and fail above MAX_IMAGE_BYTES.
#
# Needs root (buildah with chroot isolation). Installs buildah and
# busybox-static with apt-get when missing.
#
# Environment:
#   VERSION              version stamped into the binary (default: dev)
#   IMAGE                image name (default: localhost/authproxy:$VERSION)
#   IMAGE_WORKDIR        buildah storage (default: .cache/image in the repo)
#   MAX_IMAGE_BYTES      size limit (default: 15000000, that is 15 MB)
#   GO_IMAGE, RUNTIME_IMAGE
#                        use these base images instead of the local stand-ins
#   ADMIN_PORT, PROXY_PORT, TOKEN_PORT
#                        free loopback ports for the run check (19090, 18080,
#                        19091); nothing listens on TOKEN_PORT
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

version=${VERSION:-dev}
image=${IMAGE:-localhost/authproxy:$version}
workdir=${IMAGE_WORKDIR:-$repo/.cache/image}
max_bytes=${MAX_IMAGE_BYTES:-15000000}
admin_port=${ADMIN_PORT:-19090}
proxy_port=${PROXY_PORT:-18080}
token_port=${TOKEN_PORT:-19091}
dockerfile_utils_version=0.16.3

log() { printf '==> %s\n' "$*" >&2; }
fail() {
	printf 'image-build: %s\n' "$*" >&2
	exit 1
}

if [ "$(id -u)" -ne 0 ]; then
	fail "must run as root: buildah with chroot isolation needs it"
fi

# --- tools ---------------------------------------------------------------

missing=()
command -v buildah >/dev/null || missing+=(buildah)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v curl >/dev/null || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$workdir"
ba=(buildah --root "$workdir/storage" --runroot "$workdir/run" --storage-driver vfs)

# --- 1. lint -------------------------------------------------------------

# hadolint comes in no Debian or npm package, and dockerfilelint (npm) reports
# ARG values in FROM as errors. dockerfile-utils, the validator of the
# Dockerfile language server, resolves them. It checks syntax, arguments and
# repeated single-use instructions but not hadolint's style rules, so the
# config checks in step 4 cover user, entrypoint and healthcheck.
if command -v npm >/dev/null; then
	lint_dir=$workdir/npm
	if [ ! -x "$lint_dir/node_modules/.bin/dockerfile-utils" ]; then
		log "installing dockerfile-utils@$dockerfile_utils_version"
		npm install --silent --no-audit --no-fund --prefix "$lint_dir" "dockerfile-utils@$dockerfile_utils_version" >/dev/null
	fi
	log "linting Dockerfile"
	"$lint_dir/node_modules/.bin/dockerfile-utils" lint Dockerfile || fail "dockerfile-utils reported the problems above"
else
	fail "npm is missing: install it (apt-get install npm) to lint the Dockerfile"
fi

# --- 2. local base images ------------------------------------------------

# find_descendant PID NAME prints the pid of the first descendant of PID
# whose command name is NAME.
find_descendant() {
	local child
	for child in $(ps -o pid= --ppid "$1"); do
		if [ "$(ps -o comm= -p "$child")" = "$2" ]; then
			echo "$child"
			return 0
		fi
		find_descendant "$child" "$2" && return 0
	done
	return 1
}

image_exists() { "${ba[@]}" inspect --type image "$1" >/dev/null 2>&1; }

go_version=$(go env GOVERSION)
go_image=${GO_IMAGE:-localhost/authproxy-go-builder:$go_version}
runtime_image=${RUNTIME_IMAGE:-localhost/authproxy-runtime:local}

if [ -z "${GO_IMAGE:-}" ] && ! image_exists "$go_image"; then
	log "building $go_image from $(go env GOROOT)"
	ctr=$("${ba[@]}" from scratch)
	"${ba[@]}" copy --quiet "$ctr" /bin/busybox /bin/busybox
	"${ba[@]}" run --isolation chroot "$ctr" -- /bin/busybox --install -s /bin
	"${ba[@]}" run --isolation chroot "$ctr" -- /bin/sh -c 'mkdir -p /tmp /root /go /etc/ssl/certs && chmod 1777 /tmp'
	"${ba[@]}" copy --quiet "$ctr" "$(go env GOROOT)" /usr/local/go
	# go mod download reaches the module proxy over TLS.
	"${ba[@]}" copy --quiet "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
	"${ba[@]}" config \
		--env PATH=/go/bin:/usr/local/go/bin:/bin \
		--env HOME=/root \
		--env GOPATH=/go \
		--env GOTOOLCHAIN=local \
		--env GOPROXY="$(go env GOPROXY)" \
		--env GOSUMDB="$(go env GOSUMDB)" \
		--workingdir /go "$ctr"
	"${ba[@]}" commit --quiet --rm "$ctr" "$go_image" >/dev/null
fi

if [ -z "${RUNTIME_IMAGE:-}" ] && ! image_exists "$runtime_image"; then
	log "building $runtime_image"
	rootfs=$(mktemp -d)
	mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
	chmod 1777 "$rootfs/tmp"
	chown 65532:65532 "$rootfs/home/nonroot"
	cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
	ctr=$("${ba[@]}" from scratch)
	"${ba[@]}" copy --quiet "$ctr" "$rootfs" /
	"${ba[@]}" config --user 65532:65532 --workingdir /home/nonroot "$ctr"
	"${ba[@]}" commit --quiet --rm "$ctr" "$runtime_image" >/dev/null
	rm -rf "$rootfs"
fi

# --- 3. build ------------------------------------------------------------

log "building $image (GO_IMAGE=$go_image RUNTIME_IMAGE=$runtime_image)"
start=$(date +%s)
# --format docker keeps HEALTHCHECK, which the OCI image format has no field for.
"${ba[@]}" bud --quiet --isolation chroot --format docker --layers \
	--build-arg GO_IMAGE="$go_image" \
	--build-arg RUNTIME_IMAGE="$runtime_image" \
	--build-arg VERSION="$version" \
	-t "$image" -f Dockerfile . >/dev/null
log "built in $(($(date +%s) - start))s"

# --- 4. image config -----------------------------------------------------

inspect() { "${ba[@]}" inspect --type image --format "$1" "$image"; }

user=$(inspect '{{.Docker.Config.User}}')
[ "$user" = "65532:65532" ] || fail "image user is '$user', expected 65532:65532"

# buildah's templates print string lists as [a b c].
entrypoint=$(inspect '{{.Docker.Config.Entrypoint}}')
[ "$entrypoint" = '[/authproxy]' ] || fail "image entrypoint is $entrypoint, expected [/authproxy]"

healthcheck=$(inspect '{{.Docker.Config.Healthcheck.Test}}')
[ "$healthcheck" = '[CMD /authproxy healthcheck]' ] ||
	fail "image healthcheck is $healthcheck, expected [CMD /authproxy healthcheck]"

ctr=$("${ba[@]}" from "$image")
cleanup() {
	if [ -n "${run_pid:-}" ] && kill -0 "$run_pid" 2>/dev/null; then
		kill "$run_pid" 2>/dev/null || true
		wait "$run_pid" 2>/dev/null || true
	fi
	"${ba[@]}" rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT

mnt=$("${ba[@]}" mount "$ctr")
for shell in bin/sh bin/bash bin/busybox; do
	[ ! -e "$mnt/$shell" ] || fail "image contains /$shell; the runtime image must have no shell"
done
"${ba[@]}" umount "$ctr" >/dev/null

# --- 5. run --------------------------------------------------------------

for port in "$admin_port" "$proxy_port" "$token_port"; do
	if ss -ltnH "sport = :$port" | grep -q .; then
		fail "port $port is in use: set ADMIN_PORT, PROXY_PORT and TOKEN_PORT to free ports"
	fi
done

image_version=$("${ba[@]}" run --isolation chroot "$ctr" -- /authproxy -version)
case "$image_version" in
*"$version"*) log "authproxy -version: $image_version" ;;
*) fail "authproxy -version printed '$image_version', expected it to contain $version" ;;
esac

# No process listens on the loopback token port, so the sidecar serves
# /healthz but never becomes ready. No request leaves the machine.
run_env=(
	--env CLIENT_ID=image-check
	--env CLIENT_SECRET=image-check-secret
	--env UPSTREAM_URL="http://127.0.0.1:$proxy_port"
	--env TOKEN_URL="http://127.0.0.1:$token_port/token"
	--env LISTEN_ADDR="127.0.0.1:$proxy_port"
	--env ADMIN_ADDR="127.0.0.1:$admin_port"
	--env LOG_LEVEL=warn
)
run_log=$workdir/run.log
log "running $image with ADMIN_ADDR=127.0.0.1:$admin_port"
"${ba[@]}" run --isolation chroot "${run_env[@]}" "$ctr" -- /authproxy >"$run_log" 2>&1 &
run_pid=$!

healthz=
for _ in $(seq 1 50); do
	if healthz=$(curl -fsS --max-time 1 "http://127.0.0.1:$admin_port/healthz" 2>/dev/null); then
		break
	fi
	kill -0 "$run_pid" 2>/dev/null || {
		cat "$run_log" >&2
		fail "the container exited before /healthz answered"
	}
	sleep 0.2
done
[ -n "$healthz" ] || {
	cat "$run_log" >&2
	fail "/healthz did not return 200 within 10s"
}
log "/healthz: $healthz"

readyz_code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz")
[ "$readyz_code" = 503 ] || fail "/readyz returned $readyz_code without a token, expected 503"
log "/readyz without a token: $readyz_code"

"${ba[@]}" run --isolation chroot --env ADMIN_ADDR="127.0.0.1:$admin_port" "$ctr" -- /authproxy healthcheck ||
	fail "authproxy healthcheck (the image's HEALTHCHECK) failed while /healthz answers"
log "HEALTHCHECK command: exit 0"

# buildah run does not forward SIGTERM (it kills its child instead), so the
# signal goes to the authproxy process, a descendant of run_pid.
authproxy_pid=$(find_descendant "$run_pid" authproxy) || fail "no authproxy process found under buildah run (pid $run_pid)"
kill -TERM "$authproxy_pid"
run_status=0
wait "$run_pid" || run_status=$?
[ "$run_status" -eq 0 ] || {
	cat "$run_log" >&2
	fail "the container exited with status $run_status after SIGTERM, expected 0"
}
run_pid=
log "SIGTERM: exit 0"

# --- 6. size -------------------------------------------------------------

# The size of the uncompressed layers, as `docker images` reports it.
archive=$(mktemp -d)
"${ba[@]}" push --quiet --disable-compression "$image" "dir:$archive" >/dev/null
size_bytes=$(find "$archive" -type f ! -name manifest.json ! -name version -printf '%s\n' | awk '{ sum += $1 } END { print sum }')
rm -rf "$archive"

mnt=$("${ba[@]}" mount "$ctr")
binary_bytes=$(stat -c %s "$mnt/authproxy")
"${ba[@]}" umount "$ctr" >/dev/null

awk -v image="$image" -v size="$size_bytes" -v binary="$binary_bytes" -v limit="$max_bytes" 'BEGIN {
	printf "image %s: %d bytes (%.1f MB), binary %d bytes, limit %d bytes\n", image, size, size / 1e6, binary, limit
}'
[ "$size_bytes" -le "$max_bytes" ] || fail "image is larger than MAX_IMAGE_BYTES ($max_bytes)"
