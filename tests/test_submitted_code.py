"""The code that runs is the code that was submitted, without a cluster: the fingerprint,
the zip a Serve config ships (its layout is what Ray's py_modules unpacks), where it is
published, and the check each replica makes when it starts. The cluster paths are in
tests/test_multinode.py."""
import zipfile

import pytest
import yaml

from raygan.platform.core import submitted_code
from raygan.platform.core.submitted_code import CodeMismatchError


def test_the_zip_holds_the_package_under_one_top_folder_and_is_reproducible(tmp_path):
    root = submitted_code.package_root()
    fp = submitted_code.fingerprint()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = submitted_code.package_zip(tmp_path / "a")
    second = submitted_code.package_zip(tmp_path / "b")
    assert first.name == f"raygan-{fp}.zip" and first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    # Ray drops the top folder of a remote py_modules zip and puts the rest on sys.path
    assert {n.split("/")[0] for n in names} == {f"raygan-{fp}"}
    assert f"raygan-{fp}/raygan/__init__.py" in names and f"raygan-{fp}/raygan/deploy/app.py" in names
    assert not any("/tests/" in n or "/jobs/" in n or n.endswith(".pyc") for n in names)
    # the unpacked copy has the running raygan's fingerprint: a replica's check passes on it
    zipfile.ZipFile(first).extractall(tmp_path / "unpacked")
    assert submitted_code.fingerprint(tmp_path / "unpacked" / f"raygan-{fp}" / "raygan") == fp
    assert len(names) == len(list(submitted_code.package_files(root)))


def test_published_to_a_folder_or_s3_as_the_uri_py_modules_takes(tmp_path, s3_bucket, s3_storage_cfg):
    from raygan.platform.core import storage

    fp = submitted_code.fingerprint()
    uri = submitted_code.publish(str(tmp_path / "code"))
    assert uri == (tmp_path / "code" / f"raygan-{fp}.zip").as_uri()
    assert zipfile.is_zipfile(tmp_path / "code" / f"raygan-{fp}.zip")
    uri = submitted_code.publish(f"s3://{s3_bucket}/code/", s3_storage_cfg)
    assert uri == f"s3://{s3_bucket}/code/raygan-{fp}.zip"
    assert storage.read_bytes(uri, s3_storage_cfg) == (tmp_path / "code" / f"raygan-{fp}.zip").read_bytes()


def test_a_replica_refuses_other_code_in_one_line():
    submitted_code.check_running(None)  # nothing pinned: a config written by hand
    submitted_code.check_running("")
    submitted_code.check_running(submitted_code.fingerprint())
    with pytest.raises(CodeMismatchError, match=r"imports raygan \w{12} from .*, not the 0123456789ab its "
                                                r"Serve config was written for \(RAYGAN_CODE\)") as err:
        submitted_code.check_running("0123456789ab")
    assert "\n" not in str(err.value) and "raygan serve --write-config" in str(err.value)


def test_the_written_config_pins_the_code_and_keeps_the_application(tmp_path, capsys):
    from raygan import cli
    from raygan.deploy.serving import load_serve_config, write_deploy_config

    out = tmp_path / "deploy.yaml"
    status = cli.main(["serve", "--task", "jpeg=models:/m@champion", "--port", "8123",
                       "--code-uri", str(tmp_path / "code"), "--write-config", str(out)])
    fp = submitted_code.fingerprint()
    assert status == 0 and f"serve deploy {out}" in capsys.readouterr().out
    doc = yaml.safe_load(out.read_text())
    app = doc["applications"][0]
    assert app["import_path"] == "raygan.deploy.app:build_app" and doc["http_options"]["port"] == 8123
    assert app["args"]["tasks"] == {"jpeg": {"model": "models:/m@champion"}}
    assert sorted(d["name"] for d in app["deployments"]) == ["Ingress", "restore-jpeg"]
    assert app["runtime_env"] == {"py_modules": [(tmp_path / "code" / f"raygan-{fp}.zip").as_uri()],
                                  "env_vars": {"RAYGAN_CODE": fp}}
    assert "token" not in out.read_text().lower()  # the cluster's environment holds it
    config = load_serve_config(None, {"jpeg": "models:/m@champion"})
    config["app"]["runtime_env"] = {"py_modules": ["s3://elsewhere/x.zip"]}
    with pytest.raises(ValueError, match="already sets runtime_env py_modules"):
        write_deploy_config(config, str(tmp_path / "code"), str(tmp_path / "again.yaml"))
    # the two options go together
    with pytest.raises(SystemExit):
        cli.main(["serve", "--write-config", str(out)])
