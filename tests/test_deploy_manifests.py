"""The deployment files for a real cluster, checked by parsing (no Ray, no cluster, no Docker).

deploy/Dockerfile builds the one image that deploy/kuberay/rayservice.yaml (serving) and
deploy/kuberay/rayjob.yaml (training) run. No Kubernetes cluster is available to the tests,
so what can drift is checked here: the RayService's Serve application against
deploy/serve_config.yaml, the RayJob's entrypoint against the job's real argument parser and
configs, the image names, the Dockerfile's inputs and user, and that no secret is written in.
"""

import ast
import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from raygan.platform.cli import build_parser, collect_overrides
from raygan.platform.core.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SERVE_CONFIG = DEPLOY / "serve_config.yaml"
RAYSERVICE = DEPLOY / "kuberay" / "rayservice.yaml"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
RAYCLUSTER_GPU = DEPLOY / "kuberay" / "raycluster-gpu.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
IMAGE_WORKDIR = "/app"

# The only difference allowed between serve_config.yaml and the RayService's serveConfigV2:
# in a pod the proxies listen on the pod's address, not loopback.
POD_HTTP_HOST = "0.0.0.0"


# ----------------------------------------------------------------------------- helpers


def load(path: Path):
    return yaml.safe_load(path.read_text())


def serve_config():
    return load(SERVE_CONFIG)


def rayservice():
    return load(RAYSERVICE)


def rayjob():
    return load(RAYJOB)


def embedded_serve_config(svc) -> dict:
    raw = svc["spec"]["serveConfigV2"]
    assert isinstance(raw, str), "spec.serveConfigV2 must be a YAML string (KubeRay's format)"
    return yaml.safe_load(raw)


def serve_config_diffs(expected: dict, actual: dict, allowed_host: str = POD_HTTP_HOST) -> list:
    """Every difference between two Serve configs, except ``http_options.host`` when the
    actual one is ``allowed_host``. Deployments are compared by name, field by field."""
    diffs = []
    exp, act = copy.deepcopy(expected), copy.deepcopy(actual)
    exp_http, act_http = exp.pop("http_options", {}) or {}, act.pop("http_options", {}) or {}
    if act_http.get("host") == allowed_host:
        exp_http.pop("host", None)
        act_http.pop("host", None)
    if exp_http != act_http:
        diffs.append(f"http_options: {exp_http} != {act_http}")
    exp_apps = {a.get("name"): a for a in exp.pop("applications", [])}
    act_apps = {a.get("name"): a for a in act.pop("applications", [])}
    if exp != act:
        diffs.append(f"top level: {exp} != {act}")
    if set(exp_apps) != set(act_apps):
        diffs.append(f"applications: {sorted(exp_apps)} != {sorted(act_apps)}")
    for name in sorted(set(exp_apps) & set(act_apps)):
        e, a = dict(exp_apps[name]), dict(act_apps[name])
        e_deps = {d.get("name"): d for d in e.pop("deployments", [])}
        a_deps = {d.get("name"): d for d in a.pop("deployments", [])}
        for key in sorted(set(e) | set(a)):
            if e.get(key) != a.get(key):
                diffs.append(f"{name}.{key}: {e.get(key)!r} != {a.get(key)!r}")
        if set(e_deps) != set(a_deps):
            diffs.append(f"{name}.deployments: {sorted(e_deps)} != {sorted(a_deps)}")
        for dep in sorted(set(e_deps) & set(a_deps)):
            for key in sorted(set(e_deps[dep]) | set(a_deps[dep])):
                if e_deps[dep].get(key) != a_deps[dep].get(key):
                    diffs.append(f"{name}.deployments[{dep}].{key}: "
                                 f"{e_deps[dep].get(key)!r} != {a_deps[dep].get(key)!r}")
    return diffs


def pod_templates(cluster_spec: dict):
    """(group name, pod spec) of the head and every worker group of a RayCluster spec."""
    yield "head", cluster_spec["headGroupSpec"]["template"]["spec"]
    for group in cluster_spec.get("workerGroupSpecs", []):
        yield group["groupName"], group["template"]["spec"]


def containers(cluster_spec: dict):
    for group, pod in pod_templates(cluster_spec):
        for c in pod["containers"]:
            yield group, pod, c


def cluster_specs():
    return {"rayservice": rayservice()["spec"]["rayClusterConfig"],
            "rayjob": rayjob()["spec"]["rayClusterSpec"],
            "raycluster-gpu": load(RAYCLUSTER_GPU)["spec"]}


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def group_cpus(group: dict) -> float:
    """CPUs Ray sees on one pod of a group: rayStartParams num-cpus, else the CPU limit."""
    num = (group.get("rayStartParams") or {}).get("num-cpus")
    if num is not None:
        return float(num)
    limit = str(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    return float(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)


def dockerfile_instructions(text: str):
    """(INSTRUCTION, arguments) per Dockerfile instruction; continuations joined, comments out."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        op, _, args = buf.partition(" ")
        out.append((op.upper(), args.strip()))
        buf = ""
    return out


def entrypoint_argv():
    argv = shlex.split(rayjob()["spec"]["entrypoint"])
    assert argv[0] in ("python", "python3"), argv
    return argv


def entrypoint_family() -> str:
    m = re.fullmatch(r"jobs/train_(\w+)\.py", entrypoint_argv()[1])
    assert m, f"entrypoint runs {entrypoint_argv()[1]}, not jobs/train_<family>.py"
    return m.group(1)


# ----------------------------------------------------------------------------- Serve


def test_rayservice_application_equals_serve_config():
    expected, actual = serve_config(), embedded_serve_config(rayservice())
    assert serve_config_diffs(expected, actual) == []
    assert actual["http_options"]["host"] == POD_HTTP_HOST
    assert expected["http_options"]["host"] == "127.0.0.1"  # local `serve run` stays on loopback
    assert actual["http_options"]["port"] == 8000


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda c: c["applications"][0]["args"].__setitem__("tile", 512), id="args.tile"),
    pytest.param(lambda c: c["applications"][0]["args"]["tasks"]["jpeg"].__setitem__(
        "model", "models:/raygan-wcdgan-jpeg-q10-rgb@challenger"), id="args.tasks.model"),
    pytest.param(lambda c: c["applications"][0]["args"]["tasks"].pop("sr"), id="args.tasks-dropped"),
    pytest.param(lambda c: c["applications"][0].__setitem__("import_path", "raygan.deploy.app:app"),
                 id="import_path"),
    pytest.param(lambda c: c["applications"][0].__setitem__("route_prefix", "/v1"), id="route_prefix"),
    pytest.param(lambda c: c["applications"][0]["deployments"].pop(), id="deployment-dropped"),
    pytest.param(lambda c: c["applications"][0]["deployments"][1]["autoscaling_config"].__setitem__(
        "max_replicas", 8), id="autoscaling"),
    pytest.param(lambda c: c["applications"][0]["deployments"][0]["ray_actor_options"].__setitem__(
        "num_cpus", 1), id="ray_actor_options"),
    pytest.param(lambda c: c["applications"][0]["deployments"][1]["autoscaling_config"].__setitem__(
        "max_ongoing_requests", c["applications"][0]["deployments"][1].pop("max_ongoing_requests")),
        id="max_ongoing_requests-moved"),
    pytest.param(lambda c: c["http_options"].__setitem__("port", 8080), id="http_options.port"),
    pytest.param(lambda c: c["http_options"].__setitem__("host", "10.0.0.1"), id="http_options.host"),
    pytest.param(lambda c: c.__setitem__("proxy_location", "HeadOnly"), id="proxy_location"),
])
def test_comparison_detects_a_changed_rayservice(mutate):
    expected = serve_config()
    actual = embedded_serve_config(rayservice())
    assert serve_config_diffs(expected, actual) == []
    mutate(actual)
    assert serve_config_diffs(expected, actual), "a changed RayService went unnoticed"


def test_import_path_names_build_app_in_deploy_app():
    for cfg in (serve_config(), embedded_serve_config(rayservice())):
        for app in cfg["applications"]:
            assert app["import_path"] == "raygan.deploy.app:build_app"
    module, _, attr = "raygan.deploy.app:build_app".partition(":")
    # raygan.deploy is the deploy/ folder (pyproject's package-dir); the module file is app.py
    path = DEPLOY / (module.split(".", 2)[2].replace(".", "/") + ".py")
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not written yet (the Serve application)")
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    assert attr in names, f"{path.relative_to(ROOT)} defines no top-level {attr}"


@pytest.mark.parametrize("which", ["serve_config", "rayservice"])
def test_deployments_match_tasks(which):
    cfg = serve_config() if which == "serve_config" else embedded_serve_config(rayservice())
    for app in cfg["applications"]:
        tasks = set(app["args"]["tasks"])
        assert tasks, "no task is served"
        names = [d["name"] for d in app["deployments"]]
        assert len(names) == len(set(names)), f"a deployment is listed twice: {names}"
        expected = {"Ingress"} | {f"restore-{t}" for t in tasks}
        assert set(names) == expected, (f"deployments {sorted(names)} != Ingress + restore-<task> "
                                        f"for tasks {sorted(tasks)}")
        for task, spec in app["args"]["tasks"].items():
            assert spec.get("model"), f"task {task} names no model"


@pytest.mark.parametrize("which", ["serve_config", "rayservice"])
def test_max_ongoing_requests_at_deployment_level(which):
    cfg = serve_config() if which == "serve_config" else embedded_serve_config(rayservice())
    for app in cfg["applications"]:
        for dep in app["deployments"]:
            auto = dep.get("autoscaling_config") or {}
            # Serve ignores it inside autoscaling_config; it is a deployment option.
            assert "max_ongoing_requests" not in auto, dep["name"]
            assert isinstance(dep.get("max_ongoing_requests"), int), dep["name"]
            if auto:
                assert auto["target_ongoing_requests"] <= dep["max_ongoing_requests"], dep["name"]
                assert 1 <= auto["min_replicas"] <= auto["max_replicas"], dep["name"]


def test_rayservice_workers_fit_the_replicas():
    """The worker groups hold the minimum replicas and can grow to the maximum."""
    svc = rayservice()
    cluster = svc["spec"]["rayClusterConfig"]
    app_min = app_max = 0.0
    for app in embedded_serve_config(svc)["applications"]:
        for dep in app["deployments"]:
            cpus = float(dep["ray_actor_options"]["num_cpus"])
            app_min += cpus * dep["autoscaling_config"]["min_replicas"]
            app_max += cpus * dep["autoscaling_config"]["max_replicas"]
    groups = cluster["workerGroupSpecs"]
    head = group_cpus(cluster["headGroupSpec"])
    assert head + sum(group_cpus(g) * g["minReplicas"] for g in groups) >= app_min
    assert head + sum(group_cpus(g) * g["maxReplicas"] for g in groups) >= app_max
    assert cluster.get("enableInTreeAutoscaling") is True, "Serve autoscaling needs the Ray autoscaler"


def test_rayservice_exposes_serve_port_and_token_file():
    cluster = rayservice()["spec"]["rayClusterConfig"]
    port = embedded_serve_config(rayservice())["http_options"]["port"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "serve", "containerPort": port} in head["ports"]
    for group, pod, c in containers(cluster):
        env = env_of(c)
        for name in ("RAYGAN_SERVE_TOKEN_FILE", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY",
                     "RAY_USAGE_STATS_ENABLED", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert name in env, f"{group}: {name} not set"
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
        assert env["MLFLOW_DISABLE_TELEMETRY"]["value"] == "true"
        # the token file lies in a volume mounted from a Kubernetes Secret
        token_file = Path(env["RAYGAN_SERVE_TOKEN_FILE"]["value"])
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = [m for m in c["volumeMounts"] if Path(m["mountPath"]) in token_file.parents]
        assert mounts, f"{group}: nothing mounted at {token_file.parent}"
        volume = volumes[mounts[0]["name"]]
        assert "secret" in volume, f"{group}: {token_file} is not from a Secret"
        items = volume["secret"].get("items")
        if items:
            rel = token_file.relative_to(mounts[0]["mountPath"]).as_posix()
            assert rel in {i["path"] for i in items}, f"{group}: the Secret does not project {rel}"


# ----------------------------------------------------------------------------- RayJob


def test_rayjob_entrypoint_script_and_arguments():
    argv = entrypoint_argv()
    script, family = argv[1], entrypoint_family()
    assert (ROOT / script).is_file(), f"{script} does not exist"
    source = (ROOT / script).read_text()
    assert f'train_main(family="{family}")' in source, f"{script} does not train {family}"

    parser = build_parser(family)
    args, unknown = parser.parse_known_args(argv[2:])
    assert unknown == [], f"the job's parser does not know {unknown}"
    # full option names only (argparse would also take a prefix such as --worker)
    given = {a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")}
    assert given <= set(parser._option_string_actions), sorted(given - set(parser._option_string_actions))
    args = parser.parse_intermixed_args(argv[2:])  # what train_main does
    assert all("=" in o for o in args.overrides), args.overrides
    assert args.config, "the entrypoint names no --config"
    assert (ROOT / "models" / "configs" / args.config).is_file(), \
        f"--config {args.config} is not in models/configs/"
    assert args.data and args.data.startswith("s3://"), "a cluster job reads shards from S3"
    assert args.storage and args.storage.startswith("s3://"), \
        "a multi-node cluster refuses node-local checkpoint storage: use s3://"

    # the config resolves as the job would resolve it (no data or Ray touched)
    import raygan.models  # noqa: F401  (registers the families)

    cfg = load_config(args.config, collect_overrides(args))
    assert cfg.family == family, f"--config {args.config} is a {cfg.family} config, the job trains {family}"
    assert cfg.ray.workers == args.workers


def test_rayjob_cluster_holds_the_train_workers():
    import raygan.models  # noqa: F401

    job = rayjob()
    args = build_parser(entrypoint_family()).parse_intermixed_args(entrypoint_argv()[2:])
    cfg = load_config(args.config, collect_overrides(args))
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    per_pod = [g for g in groups if g["minReplicas"] > 0]
    assert per_pod, "no worker group starts with the job"
    need = cfg.ray.workers * (cfg.ray.cpus_per_worker or 1)
    have = sum(group_cpus(g) * g["minReplicas"] for g in per_pod)
    assert have >= need, f"{cfg.ray.workers} workers x {cfg.ray.cpus_per_worker} CPU > {have} CPUs"
    if cfg.ray.use_gpu:
        gpus = sum(int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get(
            "nvidia.com/gpu", 0)) * g["minReplicas"] for g in per_pod)
        assert gpus >= cfg.ray.workers, "ray.use_gpu=true but the workers have too few GPUs"
    for group, pod, c in containers(spec["rayClusterSpec"]):
        env = env_of(c)
        assert "MLFLOW_TRACKING_URI" in env, f"{group}: a multi-node job needs an MLflow server"
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"


# ----------------------------------------------------------------------------- image


def test_same_image_everywhere_and_versioned():
    version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    images = {(kind, group, c["image"]) for kind, spec in cluster_specs().items()
              for group, _, c in containers(spec)}
    # the GPU cluster runs the GPU build of the same Dockerfile (its header says how)
    assert {img for kind, _, img in images if kind != "raycluster-gpu"} == {f"raygan:{version}"}, sorted(images)
    assert {img for kind, _, img in images if kind == "raycluster-gpu"} == {f"raygan-gpu:{version}"}, sorted(images)
    assert f"-t raygan:{version}" in DOCKERFILE.read_text(), "the Dockerfile's build command names another tag"
    for spec in cluster_specs().values():
        assert spec["rayVersion"] == "2.60.0"


def test_dockerfile_inputs_install_and_user():
    steps = dockerfile_instructions(DOCKERFILE.read_text())
    ops = [op for op, _ in steps]
    assert ops[0] in ("FROM", "ARG")
    froms = [a for op, a in steps if op == "FROM"]
    assert len(froms) == 1
    pinned = re.search(r"==\s*([\d.]+)", re.search(r"^ray==.*$", (ROOT / "constraints.txt").read_text(),
                                                    re.M).group(0)).group(1)
    if froms[0].startswith("rayproject/ray:"):
        assert froms[0].split(":", 1)[1].startswith(pinned + "-"), \
            f"base image {froms[0]} is not Ray {pinned} (constraints.txt)"

    ignored = [p.strip().rstrip("/") for p in DOCKERIGNORE.read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for want in (".venv", ".raygan", ".git", "__pycache__", "*.egg-info"):
        assert want in ignored, f".dockerignore does not exclude {want}"
    for op, args in steps:
        if op not in ("COPY", "ADD"):
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        assert op == "COPY", "ADD fetches remote content; use COPY"
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} does not exist"
            assert src == "." or src.rstrip("/") not in ignored, f"COPY {src} is in .dockerignore"

    runs = " ; ".join(a for op, a in steps if op == "RUN")
    installs = re.findall(r"pip install[^;&]*", runs)
    assert any(re.search(r"-c constraints\.txt \.(\s|$)", i) for i in installs), installs
    assert all("-c constraints.txt" in i for i in installs), f"an install ignores the pins: {installs}"

    workdirs = [a for op, a in steps if op == "WORKDIR"]
    assert workdirs and workdirs[-1] == IMAGE_WORKDIR, "jobs/ must sit in the working directory of Ray"
    assert any(op == "COPY" and shlex.split(a)[-1].rstrip("/") in (".", IMAGE_WORKDIR)
               and shlex.split(a)[-2] == "." for op, a in steps), "the repository is not copied to /app"

    users = [a for op, a in steps if op == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), f"runs as {users[-1]}"

    env = " ".join(a for op, a in steps if op == "ENV")
    assert re.search(r"RAY_USAGE_STATS_ENABLED=0\b", env)
    assert re.search(r"MLFLOW_DISABLE_TELEMETRY=true\b", env)


# ----------------------------------------------------------------------------- secrets

SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|ACCESS_KEY|API_KEY|CREDENTIAL)", re.I)
SECRET_VALUE = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),                      # AWS access key id
    re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*\S{20,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}"),
    re.compile(r"\b[0-9a-f]{40,}\b"),                                # hex tokens (secrets.token_hex)
]


@pytest.mark.parametrize("path", [RAYSERVICE, RAYJOB, RAYCLUSTER_GPU, DOCKERFILE, SERVE_CONFIG],
                         ids=lambda p: p.name)
def test_no_literal_secret_in_files(path):
    text = path.read_text()
    for pattern in SECRET_VALUE:
        assert not pattern.search(text), f"{path.name}: looks like a literal secret ({pattern.pattern})"


def test_secret_env_comes_from_secrets_or_files():
    for kind, spec in cluster_specs().items():
        for group, _, c in containers(spec):
            for name, entry in env_of(c).items():
                if not SECRET_NAME.search(name):
                    continue
                if name.endswith(("_FILE", "_PATH")):
                    assert entry["value"].startswith("/"), f"{kind}/{group}: {name} is not a path"
                    continue
                assert "value" not in entry, f"{kind}/{group}: {name} has a literal value"
                assert "secretKeyRef" in entry.get("valueFrom", {}), \
                    f"{kind}/{group}: {name} does not come from a Secret"
    for op, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if op in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or args.split()[:1]:
                assert not SECRET_NAME.search(name), f"Dockerfile {op} {name}: secrets are run-time only"


@pytest.mark.parametrize("which", ["serve_config", "rayservice"])
def test_serve_schema_accepts_config_and_knows_every_field(which):
    """Serve's own schema (pydantic; no Ray started) parses the config, and every deployment
    and autoscaling key is a field it knows: it ignores unknown ones (a typo) silently."""
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    cfg = serve_config() if which == "serve_config" else embedded_serve_config(rayservice())
    ServeDeploySchema.model_validate(cfg)
    assert set(cfg) <= set(ServeDeploySchema.model_fields), sorted(set(cfg) - set(ServeDeploySchema.model_fields))
    for app in cfg["applications"]:
        unknown = set(app) - set(ServeApplicationSchema.model_fields)
        assert not unknown, f"application keys Serve does not know: {sorted(unknown)}"
        for dep in app["deployments"]:
            unknown = set(dep) - set(DeploymentSchema.model_fields)
            assert not unknown, f"{dep['name']}: keys Serve does not know: {sorted(unknown)}"
            unknown = set(dep.get("autoscaling_config") or {}) - set(AutoscalingConfig.model_fields)
            assert not unknown, f"{dep['name']}.autoscaling_config: keys Serve does not know: {sorted(unknown)}"


# ----------------------------------------------------------------------------- GPU RayCluster


def test_gpu_raycluster_runs_one_train_worker_per_gpu():
    """The README's GPU cluster: token auth, Ray 2.60, a driver-only head, GPU pods whose Ray
    GPUs equal their nvidia.com/gpu, the MLflow server and secrets from Secrets, and the
    submit command in its header parses with the real job parser into a GPU run."""
    import shlex

    import raygan.models  # noqa: F401

    doc = load(RAYCLUSTER_GPU)
    spec = doc["spec"]
    assert doc["kind"] == "RayCluster" and spec["authOptions"]["mode"] == "token"
    pinned = re.search(r"^ray==([\d.]+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert spec["rayVersion"] == pinned
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(gpu["rayStartParams"]["num-gpus"]) == int(limits["nvidia.com/gpu"]) >= 1
    mounts = {m["mountPath"] for m in gpu["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/dev/shm" in mounts and "/var/lib/raygan/torch" in mounts
    for group, _, c in containers(spec):
        env = env_of(c)
        assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http"), group
        assert "secretKeyRef" in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"], group
    header = " ".join(line.lstrip("# ").rstrip("\\").strip() for line in
                      RAYCLUSTER_GPU.read_text().split("ray job submit", 1)[1].splitlines()[:4])
    argv = shlex.split(header.split(" -- ", 1)[1])
    args = build_parser("wcdgan").parse_intermixed_args(argv[2:])
    cfg = load_config(args.config, collect_overrides(args))
    assert cfg.ray.use_gpu and cfg.train.amp == "bf16" and cfg.ray.placement == "pack"
    assert args.data.startswith("s3://") and args.storage.startswith("s3://")
    assert cfg.ray.workers <= int(gpu["rayStartParams"]["num-gpus"]) * gpu["maxReplicas"]


def test_build_app_is_an_application_builder_serve_accepts():
    """`serve run` / `serve deploy` call the config's import path with the config's `args` as
    the one parameter, and refuse a builder with any other signature ("Application builder
    functions should take exactly one parameter"): Ray's own check, on ours."""
    import inspect

    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from raygan.deploy.app import build_app

    assert list(inspect.signature(build_app).parameters) == ["args"]
    with pytest.raises(ValueError, match="serve args: `tasks` must map"):  # past Serve's check, into ours
        call_user_app_builder_with_args_if_necessary(build_app, {"tasks": {}})
