"""deploy/checks.py: what deploy/check.sh asserts beyond schemas, for deploy/check.sh.

  checks.py chart VALUES RENDERED_DIR CONFIG_OUT_DIR
      RENDERED_DIR holds `helm template` output named after the values file used
      (defaults.yaml, full-values.yaml, litellm-values.yaml). Checks what the chart promises
      (probes, resources, draining, security, selectors, hooks, DATABASE_URL expansion) and
      writes every rendered config.yaml to CONFIG_OUT_DIR for `tollgate-admin check-config`.
  checks.py docker DOCKERFILE
      The Dockerfile builds binaries the workspace has, from paths that exist, and runs them
      as a non-root user.
  checks.py compose COMPOSE_FILE
      Health checks, start order and the one-off migration of the compose quick start.

Exits 1 with every broken promise listed.
"""

import os
import re
import sys
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
problems = []


def expect(condition, message):
    if not condition:
        problems.append(message)
    return condition


def load_all(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def one(docs, kind, name_suffix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    return found[0] if len(found) == 1 else None


def env_list(container):
    return container.get("env", [])


def env_value(container, name):
    for entry in env_list(container):
        if entry["name"] == name:
            return entry
    return None


def get(value, *keys):
    """value[k1][k2]…, or None where any step is missing."""
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return None
    return value


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_expansion(where, container):
    """Kubernetes fills $(NAME) only from variables defined before it in `env`."""
    defined = set()
    for entry in env_list(container):
        for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
            expect(name in defined, f"{where}: {entry['name']} uses $({name}), which no earlier env entry defines")
        defined.add(entry["name"])
    names = [e["name"] for e in env_list(container)]
    if "DATABASE_URL" in names:
        expect(names[-1] == "DATABASE_URL", f"{where}: DATABASE_URL is not the last env entry, so not every variable can fill it")


def check_common(name, docs, values, config_out):
    where = name
    deployment = one(docs, "Deployment")
    service = one(docs, "Service")
    if not expect(deployment and service, f"{where}: expected one Deployment and one Service"):
        return None
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (gateway,) = [c for c in spec["containers"] if c["name"] == "gateway"]

    # Probes on the unauthenticated health routes, on the service port.
    port = service["spec"]["ports"][0]
    expect(port["port"] == 4000 and port["targetPort"] == "http", f"{where}: Service is not port 4000 -> http")
    expect(service["spec"]["type"] == "ClusterIP", f"{where}: Service is not ClusterIP")
    container_ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    expect(container_ports.get("http") == 4000, f"{where}: container port http is not 4000")
    expect(gateway["livenessProbe"]["httpGet"]["path"] == "/health/liveliness", f"{where}: liveness path")
    expect(gateway["readinessProbe"]["httpGet"]["path"] == "/health/readiness", f"{where}: readiness path")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        expect(gateway[probe]["httpGet"]["port"] == "http", f"{where}: {probe} not on the http port")

    # Draining: preStop sleep, then --shutdown_grace, all inside the termination grace period.
    args = gateway["args"]
    grace = float(args[args.index("--shutdown_grace") + 1])
    sleep = int(gateway["lifecycle"]["preStop"]["exec"]["command"][-1])
    expect(gateway["lifecycle"]["preStop"]["exec"]["command"][0] == "/bin/sleep", f"{where}: preStop is not a sleep")
    expect(
        spec["terminationGracePeriodSeconds"] >= sleep + grace + 5,
        f"{where}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} < preStop {sleep} + grace {grace} + margin",
    )
    expect(grace >= 60, f"{where}: --shutdown_grace {grace} is too short for streamed answers")

    # Non-root, read-only root filesystem, writable /tmp.
    expect(spec["securityContext"].get("runAsNonRoot") is True, f"{where}: pod is not runAsNonRoot")
    sc = gateway["securityContext"]
    expect(sc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable")
    expect(sc.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped")
    mounts = {m["mountPath"]: m["name"] for m in gateway["volumeMounts"]}
    expect("/tmp" in mounts, f"{where}: no writable /tmp")

    # The config the gateway is told to read is the one mounted.
    config_path = args[args.index("--config") + 1]
    expect(os.path.dirname(config_path) in mounts, f"{where}: --config {config_path} is not in a mounted directory")

    # Master key from a Secret, under both names configs use.
    for var in ("LITELLM_MASTER_KEY", "PROXY_MASTER_KEY"):
        entry = env_value(gateway, var)
        expect(entry and "secretKeyRef" in entry.get("valueFrom", {}), f"{where}: {var} not from a Secret")
    expect(env_value(gateway, "DATABASE_URL"), f"{where}: the gateway has no DATABASE_URL")
    check_expansion(f"{where} gateway", gateway)

    # Selectors: the Service and the PDB pick the gateway pods and never the migration pod.
    labels = pod["metadata"]["labels"]
    expect(selects(deployment["spec"]["selector"]["matchLabels"], labels), f"{where}: Deployment selector misses its pods")
    expect(selects(service["spec"]["selector"], labels), f"{where}: Service selector misses the gateway pods")
    pdb = one(docs, "PodDisruptionBudget")
    if pdb:
        expect(selects(pdb["spec"]["selector"]["matchLabels"], labels), f"{where}: PDB selector misses the gateway pods")
    job = one(docs, "Job")
    if job:
        job_labels = job["spec"]["template"]["metadata"]["labels"]
        expect(not selects(service["spec"]["selector"], job_labels), f"{where}: the Service would send traffic to the migration pod")
        if pdb:
            expect(not selects(pdb["spec"]["selector"]["matchLabels"], job_labels), f"{where}: the PDB counts the migration pod")
        (migrate,) = job["spec"]["template"]["spec"]["containers"]
        expect(migrate["command"] == ["tollgate-admin", "migrate"], f"{where}: the Job does not run tollgate-admin migrate")
        expect(env_value(migrate, "DATABASE_URL") == env_value(gateway, "DATABASE_URL"), f"{where}: the Job migrates another DATABASE_URL than the gateway uses")
        expect(migrate.get("envFrom") == gateway.get("envFrom"), f"{where}: the Job's envFrom differs from the gateway's")
        check_expansion(f"{where} migration", migrate)
        expect(job["spec"]["template"]["spec"]["restartPolicy"] == "Never", f"{where}: Job restartPolicy")
        disable = env_value(gateway, "DISABLE_SCHEMA_UPDATE")
        expect(disable and disable["value"] == "true", f"{where}: with a migration Job the gateway must not migrate too")
    else:
        expect(env_value(gateway, "DISABLE_SCHEMA_UPDATE") is None, f"{where}: no migration Job, yet the gateway is told not to migrate")

    # The ConfigMap carries proxy_config as config.yaml; hand it on to check-config.
    configmap = one(docs, "ConfigMap", "-config")
    if expect(configmap, f"{where}: no config ConfigMap"):
        config = yaml.safe_load(configmap["data"]["config.yaml"])
        expect(config == values["proxy_config"], f"{where}: config.yaml differs from proxy_config")
        os.makedirs(config_out, exist_ok=True)
        with open(os.path.join(config_out, f"{name}.yaml"), "w") as f:
            f.write(configmap["data"]["config.yaml"])
        checksum = pod["metadata"].get("annotations", {}).get("checksum/config")
        expect(checksum, f"{where}: pods do not roll when config.yaml changes (no checksum/config)")
    return deployment, gateway, job


def merged(base, override):
    """Helm's merge of a values file over the defaults: maps merge, everything else replaces."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    result = dict(base)
    for key, value in override.items():
        result[key] = merged(base[key], value) if key in base else value
    return result


def check_chart(values_path, rendered_dir, config_out):
    chart_dir = os.path.dirname(values_path)
    with open(values_path) as f:
        defaults = yaml.safe_load(f)
    for file in sorted(os.listdir(rendered_dir)):
        if not file.endswith(".yaml"):
            continue
        name = file[: -len(".yaml")]
        values = defaults
        if name != "defaults":
            with open(os.path.join(chart_dir, "ci", file)) as f:
                values = merged(defaults, yaml.safe_load(f))
        docs = load_all(os.path.join(rendered_dir, file))
        result = check_common(name, docs, values, config_out)
        if result is None:
            continue
        deployment, gateway, job = result
        kinds = sorted(d["kind"] for d in docs)
        if name == "defaults":
            resources = gateway["resources"]
            expect(
                resources == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
                f"defaults: resources are {resources}, not requests 250m/512Mi, limits 1/2Gi",
            )
            expect(job is None, "defaults: a migration Job without a shared database")
            expect("Secret" in kinds, "defaults: no generated master key Secret")
            url = get(env_value(gateway, "DATABASE_URL"), "value") or ""
            mounts = [m["mountPath"] for m in gateway["volumeMounts"]]
            expect(any(url.startswith(f"sqlite://{m}/") for m in mounts), f"defaults: SQLite file {url!r} is not on a mounted volume")
            for absent in ("HorizontalPodAutoscaler", "Ingress", "NetworkPolicy"):
                expect(absent not in kinds, f"defaults: {absent} rendered although off by default")
        elif name == "full-values":
            for present in ("HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "PodDisruptionBudget", "Job", "ServiceAccount"):
                expect(present in kinds, f"full-values: no {present}")
            expect("replicas" not in deployment["spec"], "full-values: replicas set although the HPA owns them")
            expect("Secret" not in kinds, "full-values: a master key Secret generated although masterkeySecretName is set")
            hooks = get(job, "metadata", "annotations") or {}
            expect(hooks.get("helm.sh/hook") == "pre-install,pre-upgrade", "full-values: Job is not a pre-install/pre-upgrade hook")
            annotations = get(one(docs, "ServiceAccount"), "metadata", "annotations") or {}
            expect("iam.gke.io/gcp-service-account" in annotations and "eks.amazonaws.com/role-arn" in annotations,
                   "full-values: ServiceAccount lacks the Workload Identity / IRSA annotations")
            expect(gateway["readinessProbe"]["httpGet"]["scheme"] == "HTTPS", "full-values: probes stay HTTP with tls.enabled")
            secret_names = [e["secretRef"]["name"] for e in gateway.get("envFrom", []) if "secretRef" in e]
            expect("litellm-provider-keys" in secret_names, "full-values: provider keys Secret not in envFrom")
            backend = get(one(docs, "Ingress"), "spec", "rules", 0, "http", "paths", 0, "backend", "service")
            expect(backend == {"name": deployment["metadata"]["name"], "port": {"number": 4000}}, "full-values: Ingress backend")
            redis = get(env_value(gateway, "REDIS_PASSWORD"), "valueFrom", "secretKeyRef", "name")
            expect(redis == "redis-auth", "full-values: REDIS_PASSWORD not from its Secret")
        elif name == "litellm-values":
            expect(deployment["spec"]["replicas"] == 3, "litellm-values: replicaCount not honoured")
            key = get(env_value(gateway, "LITELLM_MASTER_KEY"), "valueFrom", "secretKeyRef")
            expect(key == {"name": "litellm-master-key", "key": "LITELLM_MASTER_KEY"}, "litellm-values: masterkeySecretName/Key not honoured")
            password = get(env_value(gateway, "DATABASE_PASSWORD"), "valueFrom", "secretKeyRef")
            expect(password == {"name": "postgres", "key": "DATABASE_PASSWORD"}, "litellm-values: db.secret.passwordKey not honoured")
            url = get(env_value(gateway, "DATABASE_URL"), "value") or ""
            expect("$(DATABASE_PASSWORD)" in url, "litellm-values: db.url not passed as written")
            annotations = get(job, "metadata", "annotations") or {}
            expect(annotations.get("argocd.argoproj.io/hook") == "PreSync" and "helm.sh/hook" not in annotations,
                   "litellm-values: migrationJob.hooks not honoured")


def check_docker(dockerfile):
    with open(dockerfile) as f:
        text = f.read()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.strip().startswith("#")]
    stages = [l for l in lines if l.upper().startswith("FROM ")]
    expect(len(stages) >= 2, "Dockerfile: not multi-stage")
    bins = {}
    for crate in ("bins/gateway", "bins/admin"):
        with open(os.path.join(ROOT, crate, "Cargo.toml"), "rb") as f:
            manifest = tomllib.load(f)
        for b in manifest.get("bin", []):
            bins[b["name"]] = manifest["package"]["name"]
    for binary in ("tollgate", "tollgate-admin"):
        expect(binary in bins, f"Dockerfile check: the workspace has no binary {binary}")
        expect(re.search(rf"target/release/{re.escape(binary)}\b", text), f"Dockerfile: {binary} is not copied from target/release")
    for package in set(bins.values()):
        expect(f"-p {package}" in text or f"--package {package}" in text, f"Dockerfile: does not build package {package}")
    patterns = []
    ignore_file = os.path.join(ROOT, ".dockerignore")
    if expect(os.path.exists(ignore_file), "no .dockerignore at the build context (the repository root)"):
        with open(ignore_file) as f:
            patterns = [l.strip() for l in f if l.strip() and not l.strip().startswith("#")]

    def pattern_regex(pattern):
        # Docker's syntax: `**` spans directories, `*` and `?` stay within one name.
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    rules = [(p.startswith("!"), pattern_regex(p.lstrip("!").strip("/"))) for p in patterns]

    def excluded(path):
        # Docker's rule: a pattern matching the path or one of its parent directories
        # applies; the last that applies decides, and `!` re-includes.
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for negated, regex in rules:
            if any(regex.match(c) for c in candidates):
                verdict = not negated
        return verdict

    for heavy in ("target", "crates/http/target", "bins/gateway/target", ".git", "docs", ".env", "deploy/compose/.env"):
        expect(excluded(heavy), f".dockerignore lets {heavy} into the build context")
    for needed in ("Cargo.toml", "Cargo.lock", "crates/http/src/lib.rs", "bins/gateway/Cargo.toml", "migrations/Cargo.toml", "xtask/Cargo.toml"):
        expect(not excluded(needed), f".dockerignore leaves {needed} out of the build context")
    for line in lines:
        if line.upper().startswith("COPY ") and "--from=" not in line:
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            for source in parts[:-1]:
                expect(os.path.exists(os.path.join(ROOT, source)), f"Dockerfile: COPY {source}: no such path in the repository")
                expect(not excluded(source.rstrip("/")), f"Dockerfile: COPY {source} is excluded by .dockerignore")
    users = [l.split()[1] for l in lines if l.upper().startswith("USER ")]
    expect(users and users[-1].split(":")[0] not in ("root", "0"), "Dockerfile: the runtime image runs as root")
    expect(any(l.upper().startswith("EXPOSE 4000") for l in lines), "Dockerfile: no EXPOSE 4000")


def check_compose(compose_file):
    with open(compose_file) as f:
        compose = yaml.safe_load(f)
    services = compose.get("services", {})
    for name in ("gateway", "migrate", "postgres", "redis"):
        expect(name in services, f"compose: no service {name}")
    if problems:
        return
    for name in ("gateway", "postgres", "redis"):
        expect("healthcheck" in services[name], f"compose: {name} has no healthcheck")
    want = {"postgres": "service_healthy", "redis": "service_healthy", "migrate": "service_completed_successfully"}
    depends = services["gateway"].get("depends_on", {})
    for name, condition in want.items():
        expect(isinstance(depends, dict) and depends.get(name, {}).get("condition") == condition,
               f"compose: gateway does not wait for {name} ({condition})")
    migrate_depends = services["migrate"].get("depends_on", {})
    expect(migrate_depends.get("postgres", {}).get("condition") == "service_healthy", "compose: migrate does not wait for a healthy postgres")
    expect("tollgate-admin" in " ".join(services["migrate"].get("command", []) + services["migrate"].get("entrypoint", [])),
           "compose: migrate does not run tollgate-admin")
    environment = services["gateway"].get("environment", {})
    expect(str(environment.get("DISABLE_SCHEMA_UPDATE")).lower() == "true", "compose: the gateway migrates too, racing the migrate service")
    ports = [str(p) for p in services["gateway"].get("ports", [])]
    expect(any(p.endswith(":4000") for p in ports), "compose: gateway port 4000 not published")
    base = os.path.dirname(os.path.abspath(compose_file))
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                expect(os.path.exists(os.path.join(base, source)), f"compose: mounted {source} does not exist")


def main():
    command, *args = sys.argv[1:]
    {"chart": check_chart, "docker": check_docker, "compose": check_compose}[command](*args)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
