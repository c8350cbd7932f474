"""The deployment files, checked without Docker: the Dockerfile lints clean (hadolint), the
Kubernetes manifests validate against the API schemas (kubernetes-validate, offline), compose.yaml
against the Compose specification (check-jsonschema's bundled copy), and every setting and command
they pass is one that soundsift accepts."""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import soundsift
from soundsift.cli.main import build_parser
from soundsift.core.settings import DEFAULT_MODEL, ModelSettings
from soundsift.serving.settings import ServerSettings
from tests.docker.containers import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(path for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
# read by soundsift outside the settings objects (the ONNX export cache), so not a settings field
EXTRA_SOUNDSIFT_VARIABLES = {"SOUNDSIFT_CACHE"}


def tool(name: str) -> str:
    """A console script of the test environment (installed with the dev extra)."""
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else shutil.which(name) or name


def documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_has_the_three_targets_cpu_last() -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert {"cpu", "gpu", "onnx"} <= set(stages)
    assert stages[-1] == "cpu"  # `docker build .` without --target builds the last stage


def test_dockerfile_defaults_match_the_package() -> None:
    # The Dockerfile's default label follows the one version (soundsift/_version.py).
    assert f"ARG VERSION={soundsift.__version__}\n" in DOCKERFILE
    assert 'version = { attr = "soundsift._version.__version__" }' in (ROOT / "pyproject.toml").read_text()
    # images without a baked-in model fall back to the package's own default
    fallbacks = re.findall(r"SOUNDSIFT_MODEL=\$\{BAKED:-([^}]+)\}", DOCKERFILE)
    assert fallbacks and set(fallbacks) == {DEFAULT_MODEL}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_kubernetes_manifest_is_valid(path: Path) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_validation_catches_a_misspelled_field() -> None:
    deployment = documents(KUBERNETES / "deployment.yaml")[0]
    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_existing_files() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert kustomization["resources"]
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource


@pytest.mark.parametrize("name", ["deployment.yaml", "deployment-gpu.yaml"])
def test_deployment_probes_security_and_volumes(name: str) -> None:
    (deployment,) = documents(KUBERNETES / name)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert mounts["/data"] in volumes
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # uvicorn's graceful shutdown (30 s) plus the preStop pause fits in the grace period
    assert pod["terminationGracePeriodSeconds"] >= 30 + 5
    if name == "deployment-gpu.yaml":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_autoscalers_target_the_deployment() -> None:
    deployment_name = documents(KUBERNETES / "deployment.yaml")[0]["metadata"]["name"]
    for name in ("hpa.yaml", "hpa-queue-depth.yaml"):
        (hpa,) = documents(KUBERNETES / name)
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment_name
    (queue,) = documents(KUBERNETES / "hpa-queue-depth.yaml")
    pods_metrics = [metric["pods"]["metric"]["name"] for metric in queue["spec"]["metrics"] if metric["type"] == "Pods"]
    assert pods_metrics == ["soundsift_queue_depth"]


def test_service_selects_the_deployments_pods() -> None:
    (service,) = documents(KUBERNETES / "service.yaml")
    for name in ("deployment.yaml", "deployment-gpu.yaml"):
        labels = documents(KUBERNETES / name)[0]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name


def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services() -> None:
    services = COMPOSE["services"]
    assert services["soundsift"]["build"]["target"] == "cpu"
    assert "soundsift-data:/data" in services["soundsift"]["volumes"]
    assert services["soundsift"]["healthcheck"]["test"][-1] == "/opt/soundsift/healthcheck.py"
    gpu = services["soundsift-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["monitor"]["healthcheck"] == {"disable": True}


def test_compose_monitor_command_is_accepted_by_the_cli() -> None:
    command = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", part) for part in COMPOSE["services"]["monitor"]["command"]]
    args = build_parser().parse_args(command)
    assert args.command == "monitor"
    assert args.source.startswith("rtsp://")
    assert args.webhook.startswith("http")
    assert str(args.db).startswith("/data/")


def soundsift_variables() -> dict[str, set[str]]:
    """Every SOUNDSIFT_* variable each deployment file sets or passes on."""
    found: dict[str, set[str]] = {"Dockerfile": set(re.findall(r"\b(SOUNDSIFT_[A-Z_]+)=", DOCKERFILE))}
    for name, service in COMPOSE["services"].items():
        found[f"compose.yaml:{name}"] = {key for key in service.get("environment", {}) if key.startswith("SOUNDSIFT_")}
    for path in MANIFESTS:
        for document in documents(path):
            if document["kind"] == "Deployment":
                for container in document["spec"]["template"]["spec"]["containers"]:
                    names = {item["name"] for item in container["env"]}
                    found[path.name] = {name for name in names if name.startswith("SOUNDSIFT_")}
    return found


def test_every_soundsift_variable_is_a_setting() -> None:
    fields = [*ModelSettings.model_fields, *ServerSettings.model_fields]
    known = {f"SOUNDSIFT_{field.upper()}" for field in fields} | EXTRA_SOUNDSIFT_VARIABLES
    for where, variables in soundsift_variables().items():
        assert variables, where
        assert variables <= known, f"{where}: {sorted(variables - known)} are not soundsift settings"


def docker_helper(name: str):
    """A script of deploy/docker (run by the Dockerfile with the image's Python) as a module."""
    spec = importlib.util.spec_from_file_location(f"docker_{name}", ROOT / "deploy" / "docker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_requirements_come_from_pyproject() -> None:
    requirements = docker_helper("requirements").requirements
    pyproject = ROOT / "pyproject.toml"
    onnx = requirements(pyproject, ["onnx", "server"])
    assert any(line.startswith("onnxruntime") for line in onnx)
    assert any(line.startswith("gradio") for line in onnx)
    assert not any(line.startswith(("torch", "transformers")) for line in onnx)
    torch = requirements(pyproject, ["torch", "server"])
    assert any(line.startswith("torch") for line in torch)
    assert any(line.startswith("numpy") for line in torch)  # the base dependencies come too
    dev = requirements(pyproject, ["dev"])  # dev names soundsift[torch,onnx,...]: expanded, not listed
    assert not any(line.startswith("soundsift") for line in dev)
    assert set(torch) | set(onnx) <= set(dev)
    with pytest.raises(SystemExit, match="unknown extra"):
        requirements(pyproject, ["no-such-extra"])


def test_bake_model_uses_a_context_folder_as_is(tmp_path: Path) -> None:
    context_copy = tmp_path / "context-model"
    context_copy.mkdir()
    (context_copy / "config.json").write_text("{}")
    out = tmp_path / "model"
    assert "from the build context" in docker_helper("bake_model").bake("models/mine", context_copy, out)
    assert (out / "config.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("repository", "weights"),
    [(["config.json", "model.safetensors", "pytorch_model.bin"], "*.safetensors"), (["pytorch_model.bin"], "*.bin")],
)
def test_bake_model_downloads_one_copy_of_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repository: list[str], weights: str
) -> None:
    import huggingface_hub

    downloads = []
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda model: repository)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda model, **kwargs: downloads.append((model, kwargs)))
    empty = tmp_path / "context-model"
    empty.mkdir()
    docker_helper("bake_model").bake("laion/clap-htsat-fused", empty, tmp_path / "model")
    ((model, kwargs),) = downloads
    assert model == "laion/clap-htsat-fused"
    assert kwargs["local_dir"] == tmp_path / "model"
    (other,) = {"*.safetensors", "*.bin"} - {weights}
    assert weights in kwargs["allow_patterns"]
    assert other not in kwargs["allow_patterns"]
    assert "*.json" in kwargs["allow_patterns"]  # config, processor and tokenizer files


def test_bake_model_names_the_problem_when_the_hub_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(model: str) -> list[str]:
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", offline)
    empty = tmp_path / "context-model"
    empty.mkdir()
    with pytest.raises(SystemExit, match="not a folder of the build context.*Name or service not known"):
        docker_helper("bake_model").bake("models/typo", empty, tmp_path / "model")
