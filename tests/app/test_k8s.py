"""deploy/k8s/detect.yaml: valid against Kubernetes' own schemas (offline, strict), and in step
with the code that reads it: the hostfile its init container writes is the one
`novacron-ml run` reads in a pod, its command and settings are accepted as written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "k8s" / "detect.yaml"
KUBERNETES = "1.32.0"


def documents() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def test_every_resource_validates_strictly_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    docs = documents()
    assert set(docs) == {"Service", "ConfigMap", "StatefulSet"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    broken = {**docs["StatefulSet"], "spec": {**docs["StatefulSet"]["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_statefulset_is_the_bytewax_layout_the_run_command_reads(tmp_path: Path) -> None:
    from novacron_ml.cli import build_parser
    from novacron_ml.cli.run import statefulset_member

    docs = documents()
    sts = docs["StatefulSet"]
    spec = sts["spec"]["template"]["spec"]
    assert docs["Service"]["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == docs["Service"]["metadata"]["name"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert "USER 10001" in (ROOT / "Dockerfile").read_text()
    assert spec["securityContext"]["runAsUser"] == 10001
    (init,) = spec["initContainers"]
    (detect,) = spec["containers"]
    replicas = {e["name"]: e.get("value") for e in init["env"]}["BYTEWAX_REPLICAS"]
    assert int(replicas) == sts["spec"]["replicas"]
    env = {e["name"]: e.get("value") for e in detect["env"]}
    assert env["BYTEWAX_STATEFULSET_NAME"] == sts["metadata"]["name"]
    args = build_parser().parse_args(detect["command"][1:])
    assert args.command == "run" and args.metrics_port == 9464
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in detect["volumeMounts"]}
    config = docs["ConfigMap"]["data"]
    assert "recovery" in claims and config["NOVACRON_RECOVERY_DIR"].startswith(mounts["recovery"])
    # The init container's script, run here with its hostfile path moved into tmp_path
    script = init["command"][2].replace("/etc/bytewax", str(tmp_path))
    subprocess.run(
        ["sh", "-c", script],
        env={"PATH": os.environ["PATH"], "BYTEWAX_REPLICAS": replicas, "POD_NAMESPACE": "ns"},
        check=True,
    )
    hostfile = tmp_path / "hostfile.txt"
    hosts = hostfile.read_text().split()
    assert hosts == [
        f"novacron-detect-{i}.novacron-detect.ns.svc.cluster.local:9999" for i in range(2)
    ]
    pod_env = {
        "BYTEWAX_POD_NAME": "novacron-detect-1",
        "BYTEWAX_STATEFULSET_NAME": env["BYTEWAX_STATEFULSET_NAME"],
        "BYTEWAX_HOSTFILE_PATH": str(hostfile),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in pod_env.items():
            mp.setenv(k, v)
        assert statefulset_member() == (1, ";".join(hosts))
        mp.setenv("BYTEWAX_POD_NAME", "novacron-detect-7")
        with pytest.raises(ValueError, match="lists 2 hosts; pod novacron-detect-7 is number"):
            statefulset_member()
    # The ConfigMap's variables are settings the flow accepts (unknown NOVACRON_ ones fail).
    from novacron_ml.core.settings import load_settings

    with pytest.MonkeyPatch.context() as mp:
        for k, v in config.items():
            mp.setenv(k, v)
        settings = load_settings()
    assert settings.recovery.dir == config["NOVACRON_RECOVERY_DIR"]


def test_a_pods_volume_holds_only_its_own_recovery_partition(tmp_path: Path) -> None:
    from novacron_ml.cli.run import prepare_member_recovery

    assert prepare_member_recovery(tmp_path / "pod1", 1, 3) is True
    assert sorted(p.name for p in (tmp_path / "pod1").iterdir()) == ["part-1.sqlite3"]
    assert prepare_member_recovery(tmp_path / "pod1", 1, 3) is False  # resumes
    with pytest.raises(ValueError, match=r"not this pod's part-2\.sqlite3"):
        prepare_member_recovery(tmp_path / "pod1", 2, 3)


def test_the_retraining_cronjobs_validate_and_run_commands_the_cli_accepts() -> None:
    import kubernetes_validate

    from novacron_ml.cli import build_parser

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "retrain.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CronJob"}
    # the seed's schedule: daily forecaster, weekly anomaly detectors, monthly everything
    assert {n: j["spec"]["schedule"] for n, j in jobs.items()} == {
        "novacron-retrain-forecaster": "30 2 * * *",
        "novacron-retrain-detectors": "0 3 * * 0",
        "novacron-retrain-all": "0 4 1 * *",
    }
    for job in jobs.values():
        pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        args = build_parser().parse_args(container["command"][1:])
        assert args.command == "train" and args.out == "/registry" and args.promote
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["registry"] == "/registry"
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
                  for v in pod["volumes"]}  # fmt: skip
        assert claims["registry"] == claim["metadata"]["name"]
        assert pod["securityContext"]["runAsUser"] == 10001
    # the daily capacity update: the planner as a one-replica service with its metrics port
    (planner,) = [d for d in docs if d["kind"] == "Deployment"]
    (service,) = [d for d in docs if d["kind"] == "Service"]
    (container,) = planner["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["command"][1:])
    assert (args.capacity_command, args.every, planner["spec"]["replicas"]) == ("plan", 24, 1)
    assert [p["containerPort"] for p in container["ports"]] == [args.metrics_port]
    assert service["spec"]["ports"][0]["targetPort"] == args.metrics_port
    assert service["spec"]["selector"] == planner["spec"]["selector"]["matchLabels"]
