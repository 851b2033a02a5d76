"""The container tests' kubelet refuses what it cannot play, instead of running a pod otherwise.

No Docker needed: these are the parts of ``tests/kubelet.py`` that read a pod spec.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.kubelet import Kubelet, NotPlayed, _field

POD = {"metadata": {"name": "panel-echo-0", "namespace": "medbench", "uid": "u-1",
                    "labels": {"app": "medbench"}, "annotations": {"medbench.io/model": "echo"}}}


def kubelet() -> Kubelet:
    api = SimpleNamespace(url="http://127.0.0.1:6443", objects={})
    return Kubelet(api, {})  # type: ignore[arg-type]


def test_the_field_paths_a_rendered_job_uses_are_read_from_the_pod():
    assert _field(POD, "metadata.name") == "panel-echo-0"
    assert _field(POD, "metadata.namespace") == "medbench"
    assert _field(POD, "metadata.labels['app']") == "medbench"
    assert _field(POD, "metadata.annotations['medbench.io/model']") == "echo"
    assert _field(POD, "metadata.labels['missing']") == ""


def test_a_field_path_not_played_stops_the_test():
    with pytest.raises(NotPlayed, match=r"fieldRef status\.podIP is not played"):
        _field(POD, "status.podIP")


def test_an_env_source_not_played_stops_the_test():
    c = {"env": [{"name": "A", "value": "1"},
                 {"name": "LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}]}
    with pytest.raises(NotPlayed, match=r"env LIMIT: \['resourceFieldRef'\] is not played"):
        kubelet()._env(POD, c)


def test_a_volume_not_played_stops_the_test():
    spec = {"volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "c"}}]}
    c = {"volumeMounts": [{"name": "scratch", "mountPath": "/tmp"},
                          {"name": "conf", "mountPath": "/etc/conf"}]}
    with pytest.raises(NotPlayed, match="volume conf: only emptyDir and persistentVolumeClaim are played"):
        kubelet()._mounts(spec, c)
    spec["volumes"].pop()
    c["volumeMounts"].pop()
    assert kubelet()._mounts(spec, c) == ["--mount", "type=volume,destination=/tmp"]
