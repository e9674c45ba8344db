"""deploy/kubernetes/ cannot run here (no cluster): it is rendered as kustomize renders it, validated against the
Kubernetes schemas (kubernetes-validate, strict: unknown fields fail) and KEDA's CRDs (deploy/kubernetes/schemas/),
and checked against what it deploys: the Celery queues KEDA watches, the settings the code reads, the CLI's
commands, the worker's probes, Redis' command, and the values of the systemd units and the nginx config."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import redis
import requests
import yaml

from .conftest import ROOT, free_port, wait_until

K8S = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests are meant for, and the newest the installed schemas know.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
KEDA_CRDS = {"ScaledObject": "keda.sh_scaledobjects.yaml",
             "TriggerAuthentication": "keda.sh_triggerauthentications.yaml"}
APP_COMPONENTS = ("web", "worker", "flower")  # the chatterbox-jobs processes, all from the one image
SUPPORTED_KUSTOMIZE = {"apiVersion", "kind", "namespace", "resources", "secretGenerator", "generatorOptions", "images"}


# -- rendering -------------------------------------------------------------------------------------------------------

def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not NAME=value"
            values[name.strip()] = value
    return values


def render(directory: Path) -> list[dict]:
    """What `kubectl kustomize directory` makes of the fields this kustomization uses (any other field fails)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_KUSTOMIZE
    assert not unsupported, f"kustomization.yaml uses {unsupported}, which this test does not render"
    docs = []
    for name in kustomization["resources"]:
        docs += [doc for doc in yaml.safe_load_all((directory / name).read_text()) if doc]
    assert kustomization.get("generatorOptions", {}) == {"disableNameSuffixHash": True}
    for generator in kustomization.get("secretGenerator", []):
        assert set(generator) <= {"name", "envs", "type"}, generator
        values = {}
        for env_file in generator["envs"]:
            values.update(read_env_file(directory / env_file))
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]},
                     "type": generator.get("type", "Opaque"),
                     "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})
    images = {image["name"]: image for image in kustomization.get("images", [])}
    for doc in docs:
        if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for container in containers(doc):
            name, _, tag = container["image"].partition(":")
            if name in images:
                tag = images[name].get("newTag", tag)
                container["image"] = images[name].get("newName", name) + (f":{tag}" if tag else "")
    return docs


def containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("initContainers", []) + spec.get("containers", [])


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory) -> Path:
    """A copy of deploy/kubernetes/ with secret.env made from the example, as a user makes it (with a password)."""
    directory = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(K8S, directory, ignore=shutil.ignore_patterns("secret.env", "__pycache__"))
    example = (directory / "secret.env.example").read_text()
    assert "\nREDIS_PASSWORD=\n" in example  # the example holds no password of its own
    (directory / "secret.env").write_text(example.replace("\nREDIS_PASSWORD=\n", "\nREDIS_PASSWORD=0123abcd\n"))
    return directory


@pytest.fixture(scope="module")
def docs(rendered_dir) -> list[dict]:
    return render(rendered_dir)


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def component(docs: list[dict], name: str) -> dict:
    """The workload (Deployment or StatefulSet) of one component."""
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
             and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == name]
    assert len(found) == 1, name
    return found[0]


def container_env(container: dict, docs: list[dict]) -> dict[str, str]:
    """The environment the kubelet gives a container: envFrom first, then env with $(NAME) expanded."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
            for ref in re.findall(r"\$\((\w+)\)", value):
                assert ref in env, f"{var['name']} uses $({ref}) before it is set"
                value = value.replace(f"$({ref})", env[ref])
            env[var["name"]] = value
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            data = one(docs, "Secret", ref["name"])["data"]
            env[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
    return env


# -- the render and the schemas --------------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    assert (K8S / ".gitignore").read_text().splitlines()[-1] == "secret.env"


def test_render_is_what_kubectl_kustomize_makes(rendered_dir, docs):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its kustomize renders the same files)")
    out = subprocess.run([kubectl, "kustomize", str(rendered_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    ours = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert theirs == ours


def test_kustomize_refuses_to_render_without_secret_env(tmp_path):
    shutil.copytree(K8S, tmp_path / "k", ignore=shutil.ignore_patterns("secret.env", "__pycache__"))
    with pytest.raises(FileNotFoundError):
        render(tmp_path / "k")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_kinds_validate_strictly(docs, version):
    builtin = [d for d in docs if d["kind"] not in KEDA_CRDS]
    assert {d["kind"] for d in builtin} >= {"Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "Service",
                                            "Deployment", "StatefulSet", "Ingress"}
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {'.'.join(map(str, exc.path))}: {exc.message}")


def strict(schema):
    """A CRD schema as the API server applies it with strict field validation: unknown fields are errors."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def crd_validator(kind: str) -> tuple[str, jsonschema.protocols.Validator]:
    crd = yaml.safe_load((K8S / "schemas" / KEDA_CRDS[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v["storage"])
    api_version = f"{crd['spec']['group']}/{version['name']}"
    return api_version, jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def test_keda_resources_validate_against_their_crds(docs):
    keda = [d for d in docs if d["kind"] in KEDA_CRDS]
    assert sorted(d["kind"] for d in keda) == ["ScaledObject", "TriggerAuthentication"]
    for doc in keda:
        api_version, validator = crd_validator(doc["kind"])
        assert doc["apiVersion"] == api_version
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
                                     K8S_VERSIONS[0], strict=True)  # its metadata, as ObjectMeta


# -- references the schemas cannot see -------------------------------------------------------------------------------

def test_references_resolve(docs):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert one(docs, "Namespace")["metadata"]["name"] == kustomization["namespace"]
    workloads = find(docs, "Deployment") + find(docs, "StatefulSet")
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                  if "persistentVolumeClaim" in v}
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for claim in claims.values():
            one(docs, "PersistentVolumeClaim", claim)
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in set(claims) | templates, (workload["metadata"]["name"], mount)
            for source in container.get("envFrom", []):
                one(docs, "ConfigMap", source["configMapRef"]["name"])
            for var in container.get("env", []):
                if "valueFrom" in var:
                    ref = var["valueFrom"]["secretKeyRef"]
                    assert ref["key"] in one(docs, "Secret", ref["name"])["data"], ref
        if workload["kind"] == "StatefulSet":
            one(docs, "Service", workload["spec"]["serviceName"])
    for service in find(docs, "Service"):
        matching = [w for w in workloads
                    if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {len(matching)} workloads"
        ports = {p["name"]: p["containerPort"] for c in containers(matching[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in set(ports) | set(ports.values()), port
    for ingress in find(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = one(docs, "Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    for auth in find(docs, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in one(docs, "Secret", ref["name"])["data"], ref


def test_data_volume_is_shared_read_write_many_at_the_data_dir(docs):
    from chatterbox import settings

    claim = one(docs, "PersistentVolumeClaim", "chatterbox-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod, on any node, mounts it
    for name in APP_COMPONENTS:
        workload = component(docs, name)
        data_dir = settings.load(environ=container_env(containers(workload)[0], docs)).data_dir
        volume = next(v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]
                      if v.get("persistentVolumeClaim", {}).get("claimName") == "chatterbox-data")
        mounts = [m["mountPath"] for m in containers(workload)[0]["volumeMounts"] if m["name"] == volume]
        assert mounts == [str(data_dir)] == ["/data"], name


# -- KEDA and the queues ---------------------------------------------------------------------------------------------

def redis_address(docs: list[dict]) -> tuple[str, int]:
    service = one(docs, "Service", "chatterbox-redis")
    return service["metadata"]["name"], service["spec"]["ports"][0]["port"]


def test_keda_scales_the_worker_deployment_on_the_celery_queues(docs):
    import celeryconfig

    scaled = one(docs, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment" and target.get("apiVersion", "apps/v1") == "apps/v1"
    worker = one(docs, "Deployment", target["name"])
    assert worker is component(docs, "worker")
    assert "replicas" not in worker["spec"]  # KEDA's to set: a re-apply would undo it
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]  # 1 here; 0 scales to zero

    queues = {q.name for q in celeryconfig.task_queues}
    assert queues == {celeryconfig.INTERACTIVE_QUEUE, celeryconfig.BULK_QUEUE}
    triggers = scaled["spec"]["triggers"]
    assert [t["type"] for t in triggers] == ["redis"] * len(triggers)
    assert sorted(t["metadata"]["listName"] for t in triggers) == sorted(queues)

    known = json.loads((K8S / "schemas" / "keda-redis-scaler.json").read_text())
    host, port = redis_address(docs)
    namespace = scaled["metadata"]["namespace"]
    url = redis.connection.parse_url(container_env(containers(worker)[0], docs)["REDIS_URL"])
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert set(metadata) <= set(known["triggerMetadata"]) | {f"{n}FromEnv" for n in known["resolvedEnv"]}
        # KEDA's operator resolves the name from its own namespace: the Service's, qualified.
        assert metadata["address"] == f"{host}.{namespace}.svc:{port}"
        assert int(metadata["databaseIndex"]) == url["db"]
        assert int(metadata["listLength"]) >= 1
        auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert set(params) <= set(known["authParams"])
        password = params["password"]
        secret = one(docs, "Secret", password["name"])
        assert base64.b64decode(secret["data"][password["key"]]).decode() == url["password"]


def test_celery_messages_wait_in_the_lists_keda_reads(docs, redis_url, fresh_redis, tmp_path):
    """What the web app and the workers queue, published by the project's own code into a real Redis: each queue's
    waiting messages are one list named exactly as the listName (no priority-suffixed keys beside it)."""
    code = ("import tasks\n"
            "tasks.synthesize.apply_async(kwargs={'job_id': 'k8s-job', 'attempt': 1}, task_id='k8s-job')\n"
            "tasks.clone_voice.apply_async(kwargs={'job_id': 'k8s-voice', 'attempt': 1}, task_id='k8s-voice')\n"
            "tasks.send_book_tokens('k8s-book', 3)\n")
    env = {**os.environ, "REDIS_URL": redis_url, "CHATTERBOX_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lists = {key: fresh_redis.llen(key) for key in fresh_redis.scan_iter() if fresh_redis.type(key) == "list"}
    assert lists == {"interactive": 2, "bulk": 3}
    watched = {t["metadata"]["listName"] for t in one(docs, "ScaledObject")["spec"]["triggers"]}
    assert watched == set(lists)


# -- the processes: commands, settings, probes -----------------------------------------------------------------------

def test_settings_are_ones_the_code_reads(docs):
    from chatterbox import settings

    read = {f"CHATTERBOX_{f.name.upper()}" for f in fields(settings.Settings)} | set(settings._PLAIN_NAMES.values())
    config = one(docs, "ConfigMap", "chatterbox-config")["data"]
    assert set(config) <= read, set(config) - read
    secret = set(one(docs, "Secret", "chatterbox-secrets")["data"])
    assert secret - read == {"REDIS_PASSWORD"}  # Redis' own, and REDIS_URL's part
    urls = set()
    for name in APP_COMPONENTS:
        container = containers(component(docs, name))[0]
        env = container_env(container, docs)
        expanded = {ref for var in container["env"] for ref in re.findall(r"\$\((\w+)\)", var.get("value", ""))}
        assert set(env) - read <= expanded, (name, set(env) - read)
        loaded = settings.load(environ=env)  # every value is one the settings accept
        urls.add(loaded.broker_url)
    assert len(urls) == 1
    url = redis.connection.parse_url(urls.pop())
    assert (url["host"], url["port"]) == redis_address(docs) and url["password"] == "0123abcd"


def test_commands_are_the_clis_and_compose_files(docs):
    import click

    from chatterbox.cli import main

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and "COPY . /app" in dockerfile
    images = set()
    for name in APP_COMPONENTS:
        container = containers(component(docs, name))[0]
        command = container["command"]
        images.add(container["image"])
        assert command[0] == "chatterbox", name
        sub = main.get_command(click.Context(main), command[1])
        sub.make_context(command[1], command[2:])  # a misspelt option raises here
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            exec_command = container.get(probe, {}).get("exec", {}).get("command", [])
            for arg in exec_command:  # files of this repository, where the image has them (COPY . /app)
                if arg.startswith("/app/"):
                    assert (ROOT / arg.removeprefix("/app/")).is_file(), arg
    assert len(images) == 1  # one image for all, docker-compose.yml's (under a registry's name, with a tag)
    assert images.pop().rpartition("/")[2].partition(":")[0] == compose["web"]["image"]
    web = containers(component(docs, "web"))[0]
    assert web["command"] == compose["web"]["command"]
    assert web["ports"][0]["containerPort"] == int(web["command"][web["command"].index("--port") + 1])
    assert compose["flower"]["command"] == containers(component(docs, "flower"))[0]["command"]


def test_web_and_flower_listen_where_their_services_point(docs):
    from chatterbox import settings

    flower = containers(component(docs, "flower"))[0]
    loaded = settings.load(environ=container_env(flower, docs))
    assert loaded.flower_host == "0.0.0.0" and flower["ports"][0]["containerPort"] == loaded.flower_port


def test_worker_has_one_gpu_and_the_systemd_units_limits(docs):
    from chatterbox import deploy

    units = deploy.systemd_units(deploy.EXAMPLE)

    def unit_value(unit: str, key: str) -> str:
        return re.search(rf"^{key}=(.+)$", units[unit], re.M).group(1)

    worker = component(docs, "worker")
    container = containers(worker)[0]
    assert container["command"][2:] == ["--gpu", "0"]  # the pod's one GPU is its GPU 0
    # Named gpu0@<pod name>: one CHATTERBOX_HOST_NAME for every pod would give them all one name.
    assert "CHATTERBOX_HOST_NAME" not in container_env(container, docs)
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert int(limits["nvidia.com/gpu"]) == 1 and len(containers(worker)) == 1
    assert container_env(container, docs)["CHATTERBOX_THREADS"] == requests["cpu"]
    pairs = {"worker": "chatterbox-worker@.service", "web": "chatterbox-web.service",
             "flower": "chatterbox-flower.service", "redis": "chatterbox-redis.service"}
    for name, unit in pairs.items():
        workload = component(docs, name)
        memory = containers(workload)[0]["resources"]["limits"]["memory"]
        assert memory == unit_value(unit, "MemoryMax").replace("G", "Gi"), name  # systemd's G is 1024^3
        stop = re.search(r"^TimeoutStopSec=(\d+)$", units[unit], re.M)
        if stop:  # the time the unit gives the process to stop
            assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == int(stop.group(1)), name


def probe_command(container: dict, probe: str) -> list[str]:
    command = container[probe]["exec"]["command"]
    return [sys.executable if arg == "python" else str(ROOT / arg.removeprefix("/app/")) if arg.startswith("/app/")
            else arg for arg in command]


def run_probe(command: list[str], url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CHATTERBOX_HOST_NAME"} | {"REDIS_URL": url}
    return subprocess.run(command, cwd="/", env=env, capture_output=True, text=True, timeout=60)


def test_worker_probes_read_its_heartbeat(docs, redis_url, fresh_redis):
    from chatterbox import jobs, settings

    container = containers(component(docs, "worker"))[0]
    ready, alive = probe_command(container, "readinessProbe"), probe_command(container, "livenessProbe")
    assert probe_command(container, "startupProbe") == ready
    name = container["command"][container["command"].index("--gpu") + 1]
    assert ready[-1] == alive[-1] == f"gpu{name}"  # the worker's name: `--gpu 0` runs as gpu0@<pod name>
    store = jobs.JobStore(fresh_redis, settings.load({"redis_url": redis_url}))
    hostname = f"gpu{name}@{socket.gethostname()}"

    assert [run_probe(c, redis_url).returncode for c in (ready, alive)] == [1, 1]  # loading its model: no beat yet
    store.heartbeat("k8s:1", {"hostname": hostname, "consuming": False})
    assert [run_probe(c, redis_url).returncode for c in (ready, alive)] == [1, 0]  # loaded, not consuming yet
    store.heartbeat("k8s:1", {"hostname": hostname, "consuming": True})
    assert [run_probe(c, redis_url).returncode for c in (ready, alive)] == [0, 0]
    store.heartbeat("k8s:2", {"hostname": f"gpu{name}@another-pod", "consuming": True})
    fresh_redis.delete(jobs.worker_key("k8s:1"))
    assert [run_probe(c, redis_url).returncode for c in (ready, alive)] == [1, 1]  # only another pod beats
    gone = f"redis://127.0.0.1:{free_port()}/0"
    assert [run_probe(c, gone).returncode for c in (ready, alive)] == [1, 0]  # Redis away: not the worker's fault


def test_worker_pod_command_gets_ready_by_its_probe_and_stops_on_sigterm(docs, redis_url, fresh_redis, tmp_path):
    """The worker container's command and environment, on this machine's Redis and disk: its startup probe passes
    once it takes tasks, and SIGTERM (what Kubernetes sends) stops it well within its grace period."""
    worker = component(docs, "worker")
    container = containers(worker)[0]
    env = {**os.environ, **container_env(container, docs), "REDIS_URL": redis_url,
           "CHATTERBOX_DATA_DIR": str(tmp_path)}
    env.pop("CHATTERBOX_HOST_NAME", None)
    executable = Path(sys.executable).with_name(container["command"][0])
    proc = subprocess.Popen([str(executable), *container["command"][1:]], env=env, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        startup, alive = probe_command(container, "startupProbe"), probe_command(container, "livenessProbe")
        budget = container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]

        def started() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}")
            return run_probe(startup, redis_url).returncode == 0

        wait_until(started, min(budget, 120), interval=0.5, what="the worker's startup probe")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]) == 0
        assert run_probe(alive, redis_url).returncode == 1  # a stopped worker forgets its heartbeat
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_web_probes_answer_without_redis(docs, tmp_path):
    from chatterbox import settings

    from web import create_app

    web = containers(component(docs, "web"))[0]
    assert web["livenessProbe"]["tcpSocket"] == {"port": "http"}
    path = web["readinessProbe"]["httpGet"]["path"]
    env = container_env(web, docs)
    overrides = {f.name: getattr(settings.load(environ=env), f.name) for f in fields(settings.Settings)}
    overrides.update(redis_url=f"redis://127.0.0.1:{free_port()}/0", data_dir=tmp_path, tts_engine="piper")
    client = create_app(overrides).test_client()
    assert client.get(path).status_code == 200  # Redis away: the app stays in its Service and says so itself
    assert client.get("/health").status_code == 503


def test_flower_probe_needs_no_password(docs, redis_url, tmp_path):
    flower = containers(component(docs, "flower"))[0]
    path = flower["readinessProbe"]["httpGet"]["path"]
    assert flower["livenessProbe"]["httpGet"]["path"] == path
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "CHATTERBOX_DATA_DIR": str(tmp_path),
           "CHATTERBOX_FLOWER_PORT": str(port), "CHATTERBOX_FLOWER_PASSWORD": "secret"}
    proc = subprocess.Popen([sys.executable, "-m", "chatterbox", *flower["command"][1:]], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(answers, 60, what="Flower")
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401  # the rest needs it
    finally:
        proc.terminate()
        proc.wait(10)


# -- Redis -----------------------------------------------------------------------------------------------------------

def test_redis_command_requires_a_password_and_keeps_an_aof(docs, tmp_path):
    """The container's own command, run with the embedded Redis binary (its paths and port moved into tmp_path)."""
    from chatterbox import redis_server

    container = containers(component(docs, "redis"))[0]
    assert container["command"][:2] == ["sh", "-c"]
    script = container["command"][2]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["command"][2]
    for flag in re.findall(r"--[\w-]+ \S+", compose.split("redis.conf", 2)[-1]):
        assert flag in script, flag  # docker-compose.yml's Redis settings
    port = free_port()
    for old, new, count in (("/tmp/redis.conf", str(tmp_path / "redis.conf"), 2),  # written, then read
                            ("--dir /data", f"--dir {tmp_path}", 1),
                            ("--port 6379", f"--port {port} --bind 127.0.0.1", 1),
                            ("exec redis-server ", f"exec {redis_server.server_binary()} ", 1)):
        assert script.count(old) == count, old
        script = script.replace(old, new)
    refused = subprocess.run(["sh", "-c", script], env={"PATH": os.environ["PATH"], "REDIS_PASSWORD": ""},
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "REDIS_PASSWORD" in refused.stderr
    proc = subprocess.Popen(["sh", "-c", script], env={"PATH": os.environ["PATH"], "REDIS_PASSWORD": "0123abcd"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password="0123abcd", socket_connect_timeout=1, decode_responses=True)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 30, what="Redis")
        assert client.ping()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH")  # no password, no service
        config = client.config_get("*")
        assert config["appendonly"] == "yes" and config["maxmemory-policy"] == "noeviction"
        assert Path(config["dir"]).resolve() == tmp_path.resolve()
        client.lpush("k8s-kept", "a queued message")
    finally:
        proc.terminate()  # exec: Redis itself gets the signal, and flushes its AOF
        assert proc.wait(10) == 0
    assert any(b"k8s-kept" in aof.read_bytes() for aof in tmp_path.rglob("*.aof"))  # kept across a restart
    assert "REDISCLI_AUTH" in " ".join(container["readinessProbe"]["exec"]["command"])


# -- the ingress, as the nginx config on one server ------------------------------------------------------------------

def test_ingress_carries_what_the_nginx_config_does(docs):
    from chatterbox import settings

    nginx = (ROOT / "deploy" / "nginx" / "chatterbox.conf").read_text()

    def directive(name: str) -> str:
        return re.search(rf"^\s*{name}\s+([^;]+);", nginx, re.M).group(1)

    notes = one(docs, "Ingress")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "proxy-body-size"] == directive("client_max_body_size")
    assert int(notes[prefix + "proxy-body-size"].removesuffix("m")) > settings.Settings.book_max_mb
    assert notes[prefix + "proxy-read-timeout"] + "s" == directive("proxy_read_timeout")
    assert notes[prefix + "proxy-send-timeout"] + "s" == directive("proxy_send_timeout")
    assert notes[prefix + "proxy-buffering"] == directive("proxy_buffering") == "off"
    assert notes[prefix + "proxy-request-buffering"] == directive("proxy_request_buffering") == "off"
    config = one(docs, "ConfigMap", "chatterbox-config")["data"]
    assert config["CHATTERBOX_PROXY_HOPS"] == "1"  # the ingress controller, whose forwarded headers are believed
    assert one(docs, "Ingress")["spec"]["tls"] and config["CHATTERBOX_COOKIE_SECURE"] == "1"
