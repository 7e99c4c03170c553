import os
import pickle
import stat
import time

import pytest

from conftest import free_port
from raygan.platform.core.counters import Counters
from raygan.platform.core import storage as st
from raygan.platform.core.config import StorageConfig


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


# ------------------------------------------------------------------ the retry clock, by hand


class _FakeTime:
    """time.monotonic / time.sleep of the storage module on a clock the test moves."""

    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def fake_time(monkeypatch):
    from raygan.platform.core import storage as S

    clock = _FakeTime()
    monkeypatch.setattr(S.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(S.time, "sleep", clock.sleep)
    monkeypatch.setattr(S.random, "uniform", lambda a, b: b)  # the jitter's upper end: 1.0
    return clock


def test_outage_clock_backs_off_exponentially_within_the_budget_then_names_the_endpoint(fake_time, capsys):
    from raygan.platform.core.config import StorageConfig
    from raygan.platform.core.errors import StorageUnavailable
    from raygan.platform.core.storage import OutageClock

    stats = Counters()
    clock = OutageClock(StorageConfig(outage_budget_s=20.0, retry_max_s=4.0), "reading x", stats,
                        uri="s3://b/k", endpoint="http://127.0.0.1:9")
    for _ in range(6):
        clock.failed(ConnectionResetError("reset"))
    # 0.5 * 2^(k-1), capped at retry_max_s; the last wait is cut to what is left of the budget
    assert fake_time.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert (stats["storage_retries"], stats["storage_wait_s"]) == (6, 15.5) and clock.attempt == 6
    clock.failed(ConnectionResetError("reset"))
    assert fake_time.sleeps[-1] == pytest.approx(4.0)
    clock.failed(ConnectionResetError("reset"))  # 19.5 s into the outage: 0.5 s are left
    assert fake_time.sleeps[-1] == pytest.approx(0.5) and stats["storage_retries"] == 8
    with pytest.raises(StorageUnavailable, match=r"unreachable for 20 s: http://127.0.0.1:9 \(reading x\): "
                                                 r"ConnectionResetError: reset \(storage.outage_budget_s=20\)"):
        clock.failed(ConnectionResetError("reset"))
    assert "storage retry 1 for reading x at http://127.0.0.1:9 in 0.5 s" in capsys.readouterr().err
    # progress ends the outage: the next failure starts a new one from the first wait
    clock.ok()
    clock.failed(ConnectionResetError("reset"))
    assert fake_time.sleeps[-1] == 0.5 and clock.attempt == 1


def test_the_jitter_scales_each_wait_between_half_and_all_of_it(fake_time, monkeypatch):
    from raygan.platform.core import storage as S

    monkeypatch.setattr(S.random, "uniform", lambda a, b: (a, b) == (0.5, 1.0) and a)
    clock = S.OutageClock(None, "x", endpoint="e")
    assert clock.budget == 300.0 and clock.max_wait == 30.0  # the defaults without a config
    clock.failed(OSError("x"))
    clock.failed(OSError("x"))
    assert fake_time.sleeps == [0.25, 0.5]


def test_retry_transient_retries_what_is_transient_only(fake_time):
    from raygan.platform.core.storage import retry_transient

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("refused")
        return "done"

    stats = Counters()
    assert retry_transient(flaky, None, "x", stats, endpoint="e") == "done"
    assert len(calls) == 3 and stats["storage_retries"] == 2 and fake_time.sleeps == [0.5, 1.0]
    with pytest.raises(ValueError):  # not a storage failure: raised at once
        retry_transient(lambda: (_ for _ in ()).throw(ValueError("bad")), None, "x", endpoint="e")
    assert len(fake_time.sleeps) == 2
    # the caller's own predicate decides
    calls.clear()
    with pytest.raises(ConnectionRefusedError):
        retry_transient(flaky, None, "x", transient=lambda exc: False, endpoint="e")
    assert len(calls) == 1


def test_what_is_transient():
    from botocore import exceptions as bce
    from urllib3 import exceptions as u3

    from raygan.platform.core.errors import StorageError
    from raygan.platform.core.storage import is_transient

    def client_error(code, status):
        return bce.ClientError({"Error": {"Code": code, "Message": code},
                                "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    transient = [StorageError("x", transient=True), bce.EndpointConnectionError(endpoint_url="http://e"),
                 bce.ConnectTimeoutError(endpoint_url="http://e"), bce.ReadTimeoutError(endpoint_url="http://e"),
                 u3.ProtocolError("cut"), ConnectionResetError(), TimeoutError(), OSError("EIO"),
                 client_error("SlowDown", 503), client_error("InternalError", 500)]
    permanent = [None, StorageError("x"), ValueError("x"), FileNotFoundError("x"), PermissionError("x"),
                 IsADirectoryError("x"), NotADirectoryError("x"), client_error("NoSuchKey", 404),
                 client_error("AccessDenied", 403)]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)


def test_the_clock_reads_its_budget_and_longest_wait_from_the_storage_config(fake_time, monkeypatch):
    import functools
    import types

    from raygan.platform.core import storage as S

    # no config: StorageConfig's own defaults, whatever they are
    monkeypatch.setattr(S, "StorageConfig", functools.partial(StorageConfig, outage_budget_s=12.0,
                                                              retry_max_s=2.0))
    clock = S.OutageClock(None, "x", endpoint="e")
    assert (clock.budget, clock.max_wait) == (12.0, 2.0)
    # a config object without the two keys (an older run's): the documented 300 s and 30 s
    clock = S.OutageClock(types.SimpleNamespace(endpoint_url=None), "x", endpoint="e")
    assert (clock.budget, clock.max_wait) == (300.0, 30.0)
    for _ in range(8):
        clock.failed(OSError("EIO"))
    assert fake_time.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_clock_names_the_endpoint_of_the_storage_it_waits_for(monkeypatch):
    from raygan.platform.core.storage import OutageClock

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    minio = StorageConfig(endpoint_url="http://minio:9000")
    assert OutageClock(minio, "x", uri="s3://b/k").endpoint == "http://minio:9000"
    assert OutageClock(minio, "x").endpoint == "http://minio:9000"  # the default URI is S3
    assert OutageClock(minio, "x", uri="/data/shards").endpoint == "local storage"
    assert OutageClock(None, "x", uri="s3://b/k").endpoint == "the default AWS S3 endpoint"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-env:9000")
    assert OutageClock(None, "x", uri="s3://b/k").endpoint == "http://from-env:9000"
    assert OutageClock(minio, "x", uri="s3://b/k", endpoint="http://given:1").endpoint == "http://given:1"


def test_retry_transient_gives_up_after_the_configured_budget_naming_what_and_why(fake_time, monkeypatch):
    from raygan.platform.core.errors import StorageUnavailable
    from raygan.platform.core.storage import is_transient, retry_transient

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    cfg = StorageConfig(endpoint_url="http://minio:9000", outage_budget_s=1.0, retry_max_s=0.25)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionResetError("peer reset")

    stats = Counters()
    with pytest.raises(StorageUnavailable) as info:
        retry_transient(down, cfg, "reading shard-3", stats)  # the default URI is S3
    assert str(info.value) == ("storage unreachable for 1 s: http://minio:9000 (reading shard-3): "
                               "ConnectionResetError: peer reset (storage.outage_budget_s=1)")
    assert fake_time.sleeps == [0.25] * 4 and len(calls) == 5
    assert (stats["storage_retries"], stats["storage_wait_s"]) == (4, 1.0)
    # the outage is itself a transient failure (a restarted worker may find the storage back)
    assert info.value.transient is True and is_transient(info.value)
    # an endpoint given by the caller is the one named
    with pytest.raises(StorageUnavailable, match=r"s: http://given:1 \(reading shard-3\)"):
        retry_transient(down, cfg, "reading shard-3", uri="s3://b/k", endpoint="http://given:1")


def test_errors_while_a_body_streams_are_transient():
    from botocore import exceptions as bce

    from raygan.platform.core.storage import is_transient

    assert is_transient(bce.ResponseStreamingError(error=ConnectionResetError("reset")))
    assert is_transient(bce.IncompleteReadError(actual_bytes=10, expected_bytes=100))
