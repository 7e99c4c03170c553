"""One storage layer for shards, checkpoints and artifacts: local paths or S3.

URIs are plain local paths, ``file://`` paths or ``s3://bucket/prefix``; anything else
fails with a :class:`StorageError`. S3 goes through boto3 with the endpoint taken from
``StorageConfig.endpoint_url``, else ``AWS_ENDPOINT_URL``, else AWS itself; credentials
come only from the standard AWS chain (env vars, shared files, instance roles), so no
secret is ever stored in a config, a checkpoint or a pickled Ray object.

Every S3 failure is turned into a :class:`StorageError` naming the URI (or the endpoint
and the number of attempts when it cannot be reached); botocore's bounded "standard"
retries and small timeouts keep a dead endpoint from hanging a job.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from typing import IO, Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from pyarrow import fs as _pafs  # Ray Train's storage layer (a Ray dependency)

from raygan.platform.core.config import StorageConfig
from raygan.platform.core.counters import PROCESS, Counters
from raygan.platform.core.errors import StorageError, StorageUnavailable

__all__ = [
    "StorageError", "s3_client", "join", "is_s3", "is_local", "local_path", "list_files",
    "read_bytes", "write_bytes", "put_file", "exists", "open_stream", "ray_storage",
    "endpoint_url",
]




# ----------------------------------------------------------------------------- URIs


def _scheme(uri: str) -> str:
    if not isinstance(uri, str) or not uri:
        raise StorageError(f"invalid storage URI {uri!r}: expected a local path or s3://bucket/prefix")
    if "://" not in uri:
        return ""
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in ("file", "s3"):
        raise StorageError(
            f"unsupported URI scheme '{scheme}' in '{uri}': use a local path or s3://bucket/prefix"
        )
    return scheme


def is_s3(uri: str) -> bool:
    """True for ``s3://`` URIs; raises StorageError for unsupported schemes."""
    return _scheme(uri) == "s3"


def is_local(uri: str) -> bool:
    return _scheme(uri) in ("", "file")


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (``file://`` stripped); StorageError for S3."""
    scheme = _scheme(uri)
    if scheme == "s3":
        raise StorageError(f"{uri} is not a local path")
    if scheme == "file":
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file URI with a host is not supported: {uri}")
        return parsed.path or "/"
    return uri


def _split_s3(uri: str) -> Tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"S3 URI without a bucket: {uri!r} (expected s3://bucket/prefix)")
    return bucket, key


def join(uri: str, *parts: str, storage_cfg: Any = None) -> str:
    """Join path components with '/' (local paths stay in the form they were given)."""
    _scheme(uri)
    out = uri
    for part in parts:
        part = str(part).strip("/")
        if not part:
            continue
        out = out if out.endswith("/") else out + "/"
        out += part
    return out


# ----------------------------------------------------------------------------- S3 client

_CLIENTS: Dict[Tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def endpoint_url(storage_cfg: Any = None) -> Optional[str]:
    """The S3 endpoint in effect: the config's, else ``AWS_ENDPOINT_URL``, else None (AWS)."""
    ep = getattr(storage_cfg, "endpoint_url", None) if storage_cfg is not None else None
    return ep or os.environ.get("AWS_ENDPOINT_URL") or None


def _cfg_values(storage_cfg: Any) -> Tuple[int, float, float]:
    cfg = storage_cfg if storage_cfg is not None else StorageConfig()
    return int(cfg.max_attempts), float(cfg.connect_timeout_s), float(cfg.read_timeout_s)


def s3_client(storage_cfg: Any = None):
    """A cached boto3 S3 client (one per endpoint, settings and process)."""
    import boto3
    from botocore.config import Config

    ep = endpoint_url(storage_cfg)
    attempts, connect_t, read_t = _cfg_values(storage_cfg)
    # Clients are not fork-safe, hence the pid in the key (DataLoader workers fork).
    cache_key = (ep, os.getpid(), attempts, connect_t, read_t)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(cache_key)
        if client is None:
            config = Config(
                # total_max_attempts counts the first try; botocore's "max_attempts" key
                # would mean retries (N+1 requests), making "after N attempts" a lie.
                retries={"total_max_attempts": attempts, "mode": "standard"},
                connect_timeout=connect_t,
                read_timeout=read_t,
            )
            session = boto3.session.Session()
            client = session.client("s3", endpoint_url=ep, config=config)
            _CLIENTS[cache_key] = client
        return client


def _describe_endpoint(storage_cfg: Any) -> str:
    return endpoint_url(storage_cfg) or "the default AWS S3 endpoint"


def _s3_error(exc: BaseException, uri: str, storage_cfg: Any, bucket: str = "") -> StorageError:
    """Translate a boto3/botocore exception into a StorageError naming URI/endpoint."""
    from botocore import exceptions as bce

    attempts = _cfg_values(storage_cfg)[0]
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError,
                        bce.ConnectionClosedError, bce.ProxyConnectionError)):
        return StorageError(
            f"cannot reach S3 endpoint {_describe_endpoint(storage_cfg)} for {uri} "
            f"after {attempts} attempts: {exc}", transient=True
        )
    if isinstance(exc, bce.ReadTimeoutError):
        return StorageError(
            f"S3 endpoint {_describe_endpoint(storage_cfg)} timed out reading {uri} "
            f"after {attempts} attempts: {exc}", transient=True
        )
    if isinstance(exc, bce.NoCredentialsError):
        return StorageError(
            f"no AWS credentials for {uri}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "or configure the AWS credential chain"
        )
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        if code == "NoSuchBucket":
            return StorageError(f"S3 bucket '{bucket or err.get('BucketName', '?')}' does not exist ({uri})")
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError(f"S3 object not found: {uri}", missing=True)
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(f"access denied to {uri} ({code}): check the AWS credentials")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return StorageError(f"S3 error {code or status or '?'} on {uri} (endpoint "
                            f"{_describe_endpoint(storage_cfg)}): {err.get('Message', exc)}",
                            transient=status >= 500 or code in THROTTLING_CODES)
    if isinstance(exc, bce.BotoCoreError):
        return StorageError(f"S3 failure on {uri} (endpoint {_describe_endpoint(storage_cfg)}): {exc}",
                            transient=is_transient(exc))
    return StorageError(f"storage failure on {uri}: {exc}", transient=is_transient(exc))


#: S3 error codes that mean "slow down and retry", whatever the HTTP status
THROTTLING_CODES = ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestLimitExceeded", "ServiceUnavailable", "InternalError")


def is_transient(exc: Optional[BaseException]) -> bool:
    """True for a storage failure worth retrying: unreachable, reset, timed out, throttled or
    5xx (a StorageError says so itself), including errors raised while a body streams."""
    from botocore import exceptions as bce

    if exc is None:
        return False
    if isinstance(exc, StorageError):
        return exc.transient
    streaming = tuple(getattr(bce, n) for n in ("ResponseStreamingError", "IncompleteReadError")
                      if hasattr(bce, n))
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError,
                        bce.ConnectionClosedError, bce.ProxyConnectionError) + streaming):
        return True
    try:
        import urllib3.exceptions as u3

        if isinstance(exc, (u3.ProtocolError, u3.TimeoutError, u3.NewConnectionError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, bce.ClientError):
        return _s3_error(exc, "", None).transient
    # sockets (reset, refused, timed out) and local file systems that failed mid-read
    return isinstance(exc, (ConnectionError, TimeoutError)) or (
        isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError,
                                                          IsADirectoryError, NotADirectoryError)))


def _s3_call(uri: str, storage_cfg: Any, fn, bucket: str = ""):
    from botocore import exceptions as bce

    try:
        return fn(s3_client(storage_cfg))
    except (bce.BotoCoreError, bce.ClientError) as exc:
        raise _s3_error(exc, uri, storage_cfg, bucket) from None


def _check_bucket(bucket: str, uri: str, storage_cfg: Any) -> None:
    from botocore import exceptions as bce

    try:
        s3_client(storage_cfg).head_bucket(Bucket=bucket)
    except bce.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"S3 bucket '{bucket}' does not exist ({uri})") from None
        raise _s3_error(exc, uri, storage_cfg, bucket) from None
    except bce.BotoCoreError as exc:
        raise _s3_error(exc, uri, storage_cfg, bucket) from None


# ----------------------------------------------------------------------------- operations

# mkstemp creates 0600 files; published files get the usual umask-based mode instead.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK



def list_files(uri_prefix: str, suffix: Optional[str] = None, storage_cfg: Any = None) -> List[str]:
    """All files under a folder/prefix (recursively), as sorted full URIs.

    A missing local folder or an empty S3 prefix gives ``[]``; a missing bucket raises.
    """
    if is_s3(uri_prefix):
        bucket, prefix = _split_s3(uri_prefix)
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # folder semantics, like the local case

        def _list(client):
            keys = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
            return keys

        keys = _s3_call(uri_prefix, storage_cfg, _list, bucket)
        out = [f"s3://{bucket}/{k}" for k in keys if not k.endswith("/")]
    else:
        root = local_path(uri_prefix)
        if not os.path.isdir(root):
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                out.append(join(uri_prefix, rel.replace(os.sep, "/")))
    if suffix:
        out = [u for u in out if u.endswith(suffix)]
    return sorted(out)


def read_bytes(uri: str, storage_cfg: Any = None) -> bytes:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        return _s3_call(uri, storage_cfg,
                        lambda c: c.get_object(Bucket=bucket, Key=key)["Body"].read(), bucket)
    path = local_path(uri)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise StorageError(f"file not found: {uri}", missing=True) from None
    except OSError as exc:
        raise StorageError(f"cannot read {uri}: {exc}", transient=is_transient(exc)) from None


def write_bytes(uri: str, data: bytes, storage_cfg: Any = None) -> None:
    """Write ``data`` to ``uri``; local writes create parents and are atomic (temp+rename)."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        if not key:
            raise StorageError(f"S3 URI without an object key: {uri}")
        _s3_call(uri, storage_cfg, lambda c: c.put_object(Bucket=bucket, Key=key, Body=data), bucket)
        return
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    _write_local_atomic(uri, write)


def _write_local_atomic(uri: str, write: Any) -> None:
    """Create ``uri``'s parents, ``write(temp path)`` beside it, then rename over ``uri``: a
    reader sees the old file or the whole new one, never a half-written one."""
    path = local_path(uri)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=parent)
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc}") from None


def put_file(local_file: str, uri: str, storage_cfg: Any = None) -> None:
    """Copy a local file to ``uri`` (S3: managed multipart upload; local: atomic copy)."""
    if is_s3(uri):
        from boto3.exceptions import S3UploadFailedError

        bucket, key = _split_s3(uri)
        try:
            _s3_call(uri, storage_cfg, lambda c: c.upload_file(local_file, bucket, key), bucket)
        except S3UploadFailedError as exc:
            # boto3 wraps the ClientError (implicitly chained); translate the original
            raise _s3_error(exc.__context__ or exc, uri, storage_cfg, bucket) from None
        return
    _write_local_atomic(uri, lambda tmp: shutil.copyfile(local_file, tmp))


def exists(uri: str, storage_cfg: Any = None) -> bool:
    """True if the file/object exists. A missing S3 bucket raises (it is a setup error)."""
    from botocore import exceptions as bce

    if is_s3(uri):
        bucket, key = _split_s3(uri)
        if not key:
            _check_bucket(bucket, uri, storage_cfg)
            return True
        try:
            s3_client(storage_cfg).head_object(Bucket=bucket, Key=key)
            return True
        except bce.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                _check_bucket(bucket, uri, storage_cfg)  # HEAD cannot tell key from bucket
                return False
            raise _s3_error(exc, uri, storage_cfg, bucket) from None
        except bce.BotoCoreError as exc:
            raise _s3_error(exc, uri, storage_cfg, bucket) from None
    return os.path.exists(local_path(uri))


def open_stream(uri: str, storage_cfg: Any = None, start: int = 0) -> IO[bytes]:
    """A readable binary file object from byte ``start`` on (S3: the streaming body of a
    ranged get_object). Close it."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        extra = {"Range": f"bytes={int(start)}-"} if start else {}
        return _s3_call(uri, storage_cfg,
                        lambda c: c.get_object(Bucket=bucket, Key=key, **extra)["Body"], bucket)
    try:
        f = open(local_path(uri), "rb")
        if start:
            f.seek(int(start))
        return f
    except FileNotFoundError:
        raise StorageError(f"file not found: {uri}", missing=True) from None
    except OSError as exc:
        raise StorageError(f"cannot open {uri}: {exc}", transient=is_transient(exc)) from None


def ray_storage(uri: str, storage_cfg: Any = None) -> Tuple[str, Any]:
    """``(storage_path, filesystem)`` for Ray Train's RunConfig.

    Local: ``(absolute path, None)``. S3: ``("bucket/prefix", pyarrow S3FileSystem)`` for
    the configured endpoint. Credentials are deliberately not passed: pyarrow reads the
    AWS chain itself on every worker, so nothing secret is pickled with the RunConfig.
    """
    if not is_s3(uri):
        return os.path.abspath(local_path(uri)), None
    from pyarrow import fs as pafs

    bucket, key = _split_s3(uri)
    path = f"{bucket}/{key.strip('/')}" if key.strip("/") else bucket
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    ep = endpoint_url(storage_cfg)
    kwargs: Dict[str, Any] = {"region": region}
    if ep:
        parsed = urlparse(ep if "://" in ep else f"http://{ep}")
        if not parsed.hostname:
            raise StorageError(f"invalid S3 endpoint URL {ep!r}")
        host = parsed.hostname if parsed.port is None else f"{parsed.hostname}:{parsed.port}"
        kwargs["endpoint_override"] = host
        kwargs["scheme"] = parsed.scheme or "https"
    _, connect_t, read_t = _cfg_values(storage_cfg)
    kwargs["connect_timeout"] = connect_t
    kwargs["request_timeout"] = read_t
    # Synchronous writes: our handler runs inside Arrow's I/O threads (copy_files uploads
    # many files at once), and background writes would queue on that same pool, which then
    # waits on itself: Tune's experiment-state sync hung that way on a two-node sweep.
    kwargs["background_writes"] = False
    return path, pafs.PyFileSystem(RetryingFileSystem(pafs.S3FileSystem(**kwargs), storage_cfg, uri))


# ------------------------------------------------------------------------------ outages


class OutageClock:
    """Retries through one storage outage: exponential backoff with jitter, bounded in time.

    ``failed(exc)`` waits before the next try (logging the retry once, with its cause) or,
    when the outage has lasted ``storage.outage_budget_s``, raises StorageUnavailable
    naming the endpoint and the cause; ``ok()`` ends the outage (progress was made).
    ``counters`` (:class:`~raygan.platform.core.counters.Counters`, default the process's)
    counts each retry and the seconds it waited, for the run's metrics.
    """

    BASE_S = 0.5

    def __init__(self, storage_cfg: Any, what: str, counters: Optional[Counters] = None,
                 uri: str = "s3://", endpoint: Optional[str] = None):
        cfg = storage_cfg if storage_cfg is not None else StorageConfig()
        self.budget = float(getattr(cfg, "outage_budget_s", 300.0))
        self.max_wait = float(getattr(cfg, "retry_max_s", 30.0))
        self.endpoint = endpoint or (_describe_endpoint(storage_cfg) if is_s3(uri) else "local storage")
        self.what = what
        self.counters = counters if counters is not None else PROCESS
        self.start: Optional[float] = None
        self.attempt = 0

    def ok(self) -> None:
        self.start, self.attempt = None, 0

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.start = now if self.start is None else self.start
        elapsed = now - self.start
        cause = f"{type(exc).__name__}: {exc}"
        if elapsed >= self.budget:
            raise StorageUnavailable(
                f"storage unreachable for {elapsed:.0f} s: {self.endpoint} ({self.what}): {cause} "
                f"(storage.outage_budget_s={self.budget:g})", transient=True) from None
        self.attempt += 1
        delay = min(self.max_wait, self.BASE_S * 2 ** (self.attempt - 1)) * random.uniform(0.5, 1.0)
        delay = max(0.0, min(delay, self.budget - elapsed))
        print(f"raygan: storage retry {self.attempt} for {self.what} at {self.endpoint} in "
              f"{delay:.1f} s ({elapsed:.0f} s into the outage, budget {self.budget:g} s): {cause}",
              file=sys.stderr, flush=True)
        self.counters.storage_wait(delay)
        time.sleep(delay)


def retry_transient(fn: Any, storage_cfg: Any, what: str, counters: Optional[Counters] = None,
                    uri: str = "s3://", transient: Any = None, endpoint: Optional[str] = None) -> Any:
    """``fn()``, retried through transient storage failures (see :class:`OutageClock`);
    ``transient(exc)`` decides what is worth retrying (default :func:`is_transient`)."""
    clock = OutageClock(storage_cfg, what, counters, uri, endpoint)
    while True:
        try:
            return fn()
        except Exception as exc:
            if not (transient or is_transient)(exc):
                raise
            clock.failed(exc)


class RetryingFileSystem(_pafs.FileSystemHandler):
    """A pyarrow ``FileSystemHandler`` (wrapped in ``PyFileSystem``) around Ray Train's S3
    file system: every operation is retried through transient failures for up to
    ``storage.outage_budget_s`` (:class:`OutageClock`), then fails naming the outage.

    Writes are buffered and uploaded whole on close, so a retry re-sends the complete file
    (a cut connection never leaves a half-written object behind as if it were done); reads
    fetch whole files (checkpoints and Ray's run snapshots are small), so a connection that
    breaks mid-read is retried too. Ray uses it for checkpoint uploads and restores and for
    its own run state (``checkpoint_manager_snapshot.json``), whose failed write would
    otherwise end the run with a ControllerError.
    """

    def __init__(self, fs: Any, storage_cfg: Any = None, uri: str = "s3://"):
        self.fs, self.storage_cfg, self.uri = fs, storage_cfg, uri

    def _retry(self, what: str, fn: Any) -> Any:
        # counted in counters.PROCESS: checkpoint uploads and restores in a worker, run
        # snapshots in the controller
        return retry_transient(fn, self.storage_cfg, what, uri=self.uri)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetryingFileSystem) and self.fs.equals(other.fs)

    def equals(self, other: Any) -> bool:
        return self == other

    def get_type_name(self) -> str:
        return f"retrying-{self.fs.type_name}"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: List[str]) -> Any:
        return self._retry(f"listing {paths[0] if paths else ''}", lambda: self.fs.get_file_info(paths))

    def get_file_info_selector(self, selector: Any) -> Any:
        return self._retry(f"listing {selector.base_dir}", lambda: self.fs.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._retry(f"creating {path}", lambda: self.fs.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        self._retry(f"deleting {path}", lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._retry(f"deleting {path}/*", lambda: self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        self._retry("deleting the root", lambda: self.fs.delete_dir_contents("/", accept_root_dir=True))

    def delete_file(self, path: str) -> None:
        self._retry(f"deleting {path}", lambda: self.fs.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self._retry(f"moving {src}", lambda: self.fs.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self._retry(f"copying {src}", lambda: self.fs.copy_file(src, dest))

    def _read_all(self, path: str) -> Any:
        import pyarrow as pa

        def read() -> bytes:
            with self.fs.open_input_stream(path) as f:
                return f.read()

        return pa.BufferReader(self._retry(f"reading {path}", read))

    def open_input_stream(self, path: str) -> Any:
        return self._read_all(path)

    def open_input_file(self, path: str) -> Any:
        return self._read_all(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        import pyarrow as pa

        return pa.PythonFile(_UploadOnClose(self, path, metadata), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        raise OSError(f"append is not supported on {self.uri}: {path}")

    def _upload(self, path: str, data: bytes, metadata: Any) -> None:
        def write() -> None:
            with self.fs.open_output_stream(path, metadata=metadata) as f:
                f.write(data)

        self._retry(f"uploading {path.rsplit('/', 2)[-2] + '/' if path.count('/') > 1 else ''}"
                    f"{path.rsplit('/', 1)[-1]}", write)


class _UploadOnClose(io.BytesIO):
    """An output stream buffered in memory; ``close()`` uploads it with retries."""

    def __init__(self, fs: RetryingFileSystem, path: str, metadata: Any):
        super().__init__()
        self._fs, self._path, self._metadata = fs, path, metadata

    def close(self) -> None:
        if not self.closed:
            data = self.getvalue()
            super().close()
            self._fs._upload(self._path, data, self._metadata)
