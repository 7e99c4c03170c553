import os
import pickle
import stat
import time

import pytest

from conftest import free_port
from raygan.platform import storage as st
from raygan.platform.config import StorageConfig


def test_local_roundtrip_and_listing(tmp_path):
    root = str(tmp_path / "root")
    st.write_bytes(st.join(root, "b", "x.tar"), b"two")
    st.write_bytes(st.join(root, "a.tar"), b"one")
    st.write_bytes(st.join(root, "c.json"), b"{}")
    assert st.read_bytes(os.path.join(root, "a.tar")) == b"one"
    assert st.exists(os.path.join(root, "b", "x.tar"))
    assert not st.exists(os.path.join(root, "nope"))
    assert st.list_files(root) == [f"{root}/a.tar", f"{root}/b/x.tar", f"{root}/c.json"]
    assert st.list_files(root, suffix=".tar") == [f"{root}/a.tar", f"{root}/b/x.tar"]
    assert st.list_files(str(tmp_path / "missing")) == []
    with st.open_stream(f"{root}/b/x.tar") as f:
        assert f.read() == b"two"
    # file:// URIs work and keep their form
    uri = "file://" + root
    assert st.read_bytes(uri + "/a.tar") == b"one"
    assert st.list_files(uri, ".json") == [uri + "/c.json"]
    # atomic writes leave no temporary files behind, and overwrite in place
    st.write_bytes(f"{root}/a.tar", b"new")
    assert st.read_bytes(f"{root}/a.tar") == b"new"
    assert sorted(os.listdir(root)) == ["a.tar", "b", "c.json"]
    # the usual umask-based mode of a new file (not mkstemp's 0600, nothing executable)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("a.tar", "c.json", "b/x.tar"):
        mode = stat.S_IMODE(os.stat(f"{root}/{name}").st_mode)
        assert mode == 0o666 & ~umask, f"{name}: {oct(mode)}, expected {oct(0o666 & ~umask)}"


def test_local_errors_name_the_path(tmp_path):
    with pytest.raises(st.StorageError, match="missing.bin"):
        st.read_bytes(str(tmp_path / "missing.bin"))
    with pytest.raises(st.StorageError, match="missing.bin"):
        st.open_stream(str(tmp_path / "missing.bin"))


@pytest.mark.parametrize("fn", [
    lambda u: st.read_bytes(u), lambda u: st.write_bytes(u, b""), lambda u: st.exists(u),
    lambda u: st.list_files(u), lambda u: st.open_stream(u), lambda u: st.join(u, "a"),
    lambda u: st.ray_storage(u), lambda u: st.is_s3(u),
])
def test_unsupported_scheme(fn):
    with pytest.raises(st.StorageError) as info:
        fn("gs://x")
    assert str(info.value) == (
        "unsupported URI scheme 'gs' in 'gs://x': use a local path or s3://bucket/prefix"
    )


def test_join_and_is_s3():
    assert st.join("s3://b/p/", "/train/", "x.tar") == "s3://b/p/train/x.tar"
    assert st.join("/a/b", "c") == "/a/b/c"
    assert st.is_s3("s3://b/k") and not st.is_s3("/tmp/x") and not st.is_s3("file:///tmp")


def test_s3_roundtrip(s3_bucket, s3_storage_cfg):
    cfg = s3_storage_cfg
    base = f"s3://{s3_bucket}/data"
    st.write_bytes(f"{base}/train/b.tar", b"bb", storage_cfg=cfg)
    st.write_bytes(f"{base}/train/a.tar", b"aa", storage_cfg=cfg)
    st.write_bytes(f"{base}/manifest.json", b"{}", storage_cfg=cfg)
    st.write_bytes(f"s3://{s3_bucket}/database/x.tar", b"not under data/", storage_cfg=cfg)
    assert st.read_bytes(f"{base}/train/a.tar", storage_cfg=cfg) == b"aa"
    assert st.list_files(base, storage_cfg=cfg) == [
        f"{base}/manifest.json", f"{base}/train/a.tar", f"{base}/train/b.tar"]
    assert st.list_files(base + "/", ".tar", storage_cfg=cfg) == [f"{base}/train/a.tar", f"{base}/train/b.tar"]
    assert st.list_files(f"{base}/nothing", storage_cfg=cfg) == []
    assert st.exists(f"{base}/manifest.json", storage_cfg=cfg)
    assert not st.exists(f"{base}/nope.json", storage_cfg=cfg)
    body = st.open_stream(f"{base}/train/b.tar", storage_cfg=cfg)
    assert body.read() == b"bb"
    body.close()
    src = os.path.join(os.path.dirname(__file__), "conftest.py")
    st.put_file(src, f"{base}/conftest.py", storage_cfg=cfg)
    assert st.read_bytes(f"{base}/conftest.py", storage_cfg=cfg) == open(src, "rb").read()


def test_s3_endpoint_from_env(s3_bucket, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    st.write_bytes(f"s3://{s3_bucket}/env.txt", b"via env")  # no storage_cfg at all
    assert st.read_bytes(f"s3://{s3_bucket}/env.txt") == b"via env"


def test_s3_missing_key_and_bucket(s3_bucket, s3_storage_cfg):
    cfg = s3_storage_cfg
    uri = f"s3://{s3_bucket}/no/such/key.bin"
    for fn in (st.read_bytes, st.open_stream):
        with pytest.raises(st.StorageError, match="not found: " + uri):
            fn(uri, storage_cfg=cfg)
    missing = "s3://raygan-no-such-bucket/x/y.bin"
    for fn in (st.read_bytes, st.exists, st.open_stream, lambda u, **k: st.list_files("s3://raygan-no-such-bucket/x", **k),
               lambda u, **k: st.write_bytes(u, b"x", **k)):
        with pytest.raises(st.StorageError, match="'raygan-no-such-bucket' does not exist"):
            fn(missing, storage_cfg=cfg)


def test_unreachable_endpoint_is_bounded_and_clear(monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = StorageConfig(endpoint_url=endpoint, max_attempts=2, connect_timeout_s=0.5, read_timeout_s=1.0)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # signing needs some credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for fn in (lambda: st.read_bytes("s3://bkt/k", storage_cfg=cfg),
               lambda: st.list_files("s3://bkt/p", storage_cfg=cfg),
               lambda: st.exists("s3://bkt/k", storage_cfg=cfg)):
        t0 = time.monotonic()
        with pytest.raises(st.StorageError) as info:
            fn()
        assert time.monotonic() - t0 < 10
        assert endpoint in str(info.value) and "2 attempts" in str(info.value)


def test_client_cache(s3_server):
    a = StorageConfig(endpoint_url=s3_server)
    b = StorageConfig(endpoint_url="http://127.0.0.1:9")
    assert st.s3_client(a) is st.s3_client(StorageConfig(endpoint_url=s3_server))
    assert st.s3_client(a) is not st.s3_client(b)
    assert st.s3_client(a).meta.endpoint_url == s3_server


def test_ray_storage_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert st.ray_storage("runs") == (str(tmp_path / "runs"), None)
    assert st.ray_storage("file://" + str(tmp_path)) == (str(tmp_path), None)


def test_ray_storage_s3(s3_bucket, s3_storage_cfg):
    path, fs = st.ray_storage(f"s3://{s3_bucket}/ray/runs/", s3_storage_cfg)
    assert path == f"{s3_bucket}/ray/runs"
    # the filesystem really talks to the endpoint ...
    with fs.open_output_stream(f"{path}/probe.txt") as f:
        f.write(b"from pyarrow")
    assert st.read_bytes(f"s3://{s3_bucket}/ray/runs/probe.txt", storage_cfg=s3_storage_cfg) == b"from pyarrow"
    # ... and pickles without the secret (credentials come from the env chain on workers)
    assert b"testing" not in pickle.dumps(fs)
