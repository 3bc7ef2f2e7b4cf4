#!/usr/bin/env bash
# Check the Kubernetes manifests and monitoring files in deploy/, offline:
#   1. render every kustomization with kubectl kustomize (or kustomize);
#   2. validate the rendered objects with kubeconform -strict against JSON
#      schemas generated from the Kubernetes OpenAPI documents that ship in
#      the Go module sigs.k8s.io/kubectl-validate (tools/k8sschema), plus
#      hand-written schemas for PodMonitor and PrometheusRule
#      (tools/k8sschema/crds). The native-sidecar manifests are checked
#      against Kubernetes 1.29 and 1.30, the legacy-sidecar overlay against
#      1.27, which must also reject the native-sidecar base;
#   3. promtool check rules and promtool test rules on the PrometheusRule;
#   4. yamllint on deploy/, and shellcheck on this script and
#      scripts/image-build.sh.
#
# Installs what is missing: Debian's prometheus (promtool), yamllint
# and ShellCheck with apt-get, and kubeconform (and kustomize when kubectl is
# missing) with go install into .cache/bin. Exits non-zero on the first
# failed check.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

kubeconform_version=v0.8.0
kustomize_version=v5.5.0
kubectl_validate_version=v0.0.4

cache=$repo/.cache/check-deploy
bin=$repo/.cache/bin
mkdir -p "$cache" "$bin"

log() { printf '==> %s\n' "$*" >&2; }
fail() {
	printf 'check-deploy: %s\n' "$*" >&2
	exit 1
}

# --- tools ---------------------------------------------------------------

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v yamllint >/dev/null || missing+=(yamllint)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if [ "${#missing[@]}" -gt 0 ]; then
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$bin/kubeconform" ]; then
	log "installing kubeconform $kubeconform_version"
	GOBIN=$bin go install "github.com/yannh/kubeconform/cmd/kubeconform@$kubeconform_version"
fi

# Debian's kubernetes-client (1.20) embeds a kustomize too old for the
# labels field, so without kubectl the script uses kustomize itself.
if command -v kubectl >/dev/null; then
	render() { kubectl kustomize "$1"; }
else
	if [ ! -x "$bin/kustomize" ]; then
		log "installing kustomize $kustomize_version"
		GOBIN=$bin go install "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version"
	fi
	render() { "$bin/kustomize" build "$1"; }
fi

# --- 1. render -----------------------------------------------------------

rendered=$cache/rendered
rm -rf "$rendered"
mkdir -p "$rendered"

mapfile -t kustomizations < <(find deploy -name kustomization.yaml -printf '%h\n' | sort)
[ "${#kustomizations[@]}" -gt 0 ] || fail "no kustomization.yaml found under deploy/"

for dir in "${kustomizations[@]}"; do
	out=$rendered/$(echo "${dir#deploy/}" | tr '/' '-').yaml
	render "$dir" >"$out" || fail "kustomize could not render $dir"
	log "rendered $dir: $(grep -c '^kind:' "$out") objects"
done

# --- 2. schemas and kubeconform -----------------------------------------

# Run outside the repository: go mod download inside a module may add the
# module to that module's go.sum.
module_dir=$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/kubectl-validate@$kubectl_validate_version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$module_dir" ] || fail "go mod download sigs.k8s.io/kubectl-validate@$kubectl_validate_version gave no module directory"

generator=$bin/k8sschema
(cd tools/k8sschema && go build -o "$generator" .)

schemas() {
	local version=$1 dir=$cache/schemas/$1
	if [ ! -f "$dir/deployment-apps-v1.json" ]; then
		"$generator" -openapi-dir "$module_dir/pkg/openapiclient/builtins/$version" -out "$dir" >&2
	fi
	cp tools/k8sschema/crds/*.json "$dir/"
	echo "$dir"
}

# validate VERSION FILE... runs kubeconform in strict mode, with no remote
# schemas, so an object with an unknown kind fails instead of being skipped.
validate() {
	local version=$1 dir
	shift
	dir=$(schemas "$version")
	"$bin/kubeconform" -strict -summary -output text \
		-kubernetes-version "$version.0" \
		-schema-location "$dir/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
		"$@"
}

log "kubeconform: native sidecar, gateway and monitoring (Kubernetes 1.29, 1.30)"
for version in 1.29 1.30; do
	validate "$version" "$rendered/base.yaml" "$rendered/overlays-gateway.yaml" "$rendered/monitoring.yaml" ||
		fail "kubeconform rejected the manifests for Kubernetes $version"
done

log "kubeconform: legacy sidecar (Kubernetes 1.27, 1.30)"
for version in 1.27 1.30; do
	validate "$version" "$rendered/overlays-legacy-sidecar.yaml" ||
		fail "kubeconform rejected the legacy-sidecar overlay for Kubernetes $version"
done

# Kubernetes 1.27 has no restartPolicy on containers, so strict validation
# must reject the native-sidecar base there. This proves unknown fields fail.
if validate 1.27 "$rendered/base.yaml" >"$cache/base-1.27.txt" 2>&1; then
	fail "kubeconform accepted the native-sidecar base for Kubernetes 1.27; strict validation is not working"
fi
grep -q "restartPolicy" "$cache/base-1.27.txt" ||
	fail "kubeconform rejected the base for Kubernetes 1.27, but not for restartPolicy: $(cat "$cache/base-1.27.txt")"
log "kubeconform: base rejected for Kubernetes 1.27 (no native sidecars), as expected"

# --- 3. promtool ---------------------------------------------------------

# promtool reads plain rule files: the PrometheusRule's spec, de-indented.
rules_dir=$cache/rules
rm -rf "$rules_dir"
mkdir -p "$rules_dir"
sed -n '/^spec:$/,$p' deploy/monitoring/prometheusrule.yaml | sed '1d; s/^  //' >"$rules_dir/rules.yaml"
grep -q '^groups:' "$rules_dir/rules.yaml" ||
	fail "deploy/monitoring/prometheusrule.yaml: expected spec.groups as the last part of the file"
cp deploy/monitoring/alerts_test.yaml "$rules_dir/"

log "promtool check rules"
promtool check rules "$rules_dir/rules.yaml"
log "promtool test rules"
promtool test rules "$rules_dir/alerts_test.yaml"

# --- 4. linters ----------------------------------------------------------

log "yamllint deploy/"
yamllint -c deploy/.yamllint.yaml --strict deploy/

log "shellcheck"
shellcheck scripts/check-deploy.sh scripts/image-build.sh

log "all deploy checks passed"
