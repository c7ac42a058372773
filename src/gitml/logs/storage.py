"""Where shipped prediction logs live: a folder or a URL, opened as a pyarrow filesystem.

  /var/log/x, logs/shipped       a local folder (relative to the repository root, or to the
                                 current directory when there is no root)
  file:///var/log/x              the same, as a URL
  s3://bucket/prefix             pyarrow's own S3FileSystem. Credentials as every AWS client takes
                                 them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
                                 ~/.aws, an instance or pod role); AWS_REGION or AWS_DEFAULT_REGION;
                                 an S3-compatible store (MinIO, Ceph, moto) through AWS_ENDPOINT_URL_S3
                                 or AWS_ENDPOINT_URL, which gitml reads itself because pyarrow's S3
                                 client does not. (Not s3fs: its aiobotocore pins a botocore that
                                 conflicts with the one checkov forces in requirements/lock.txt, so
                                 s3fs cannot be installed beside the dev tools.) A query string
                                 (s3://bucket/prefix?region=eu-west-1) goes to pyarrow's from_uri.
  gs://bucket/prefix             pyarrow's own GcsFileSystem (Application Default Credentials)
  dvc-remote, dvc://[remote]     the DVC remote's URL (.dvc/config and .dvc/config.local; the
                                 default remote unless one is named) + /gitml-logs
  any other scheme               fsspec's implementation of it (memory://, az://, sftp://, ...),
                                 through pyarrow's FSSpecHandler; one that is not installed is
                                 named, with the package to install

pyarrow and fsspec are the `logs` extra; this module imports them when a location is opened.
"""

from __future__ import annotations

import configparser
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gitml.errors import GitmlError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

DVC_REMOTE = "dvc-remote"  # the value that means "the DVC default remote"
DVC_FOLDER = "gitml-logs"  # the logs' folder under a DVC remote
OBJECT_STORES = {"s3", "gcs"}  # pyarrow type names of stores where an object appears whole, when its upload completes
EXTRA = "pip install -c requirements/lock.txt -e '.[logs]'"


@dataclass(frozen=True)
class Storage:
    """A location opened: its filesystem, its path in that filesystem, and the URL it was opened from."""

    fs: pafs.FileSystem
    base: str  # no trailing slash; a bucket and prefix for an object store
    url: str

    def path(self, *parts: str) -> str:
        """The path in `fs` of `parts` joined under the location."""
        return "/".join([self.base.rstrip("/"), *parts]) if self.base else "/".join(parts)

    @property
    def atomic_writes(self) -> bool:
        """Whether a written file appears whole or not at all (an object store's upload), so that
        it can be written in place, without a temporary name and a move (a copy, in an object store)."""
        return bool(self.fs.type_name in OBJECT_STORES)

    @property
    def local(self) -> bool:
        return bool(self.fs.type_name == "local")


def _pyarrow() -> None:
    try:
        import pyarrow.fs  # noqa: F401
    except ImportError as exc:
        raise GitmlError(f"prediction log storage needs pyarrow, the `logs` extra: {EXTRA}") from exc


def open_storage(location: str | Path, root: Path | None = None) -> Storage:
    """The filesystem and base path of a folder or URL (see the module's list); GitmlError when it cannot be opened."""
    _pyarrow()
    import pyarrow as pa
    import pyarrow.fs as pafs

    url = str(location)
    if isinstance(location, Path) or "://" not in url:
        if url == DVC_REMOTE:
            return open_storage(dvc_remote(root or Path()), root)
        path = Path(url).expanduser()
        if not path.is_absolute():
            path = (root or Path.cwd()) / path
        return Storage(pafs.LocalFileSystem(), str(path.resolve()), url)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "dvc":
        remote = urlsplit(url).netloc or None
        return open_storage(dvc_remote(root or Path(), remote), root)
    try:
        if scheme == "s3" and "?" not in url:
            return Storage(_s3(url), _bucket_path(url), url)
        if scheme in ("file", "s3", "gs", "gcs"):
            fs, base = pafs.FileSystem.from_uri(url)
            return Storage(fs, base.rstrip("/"), url)
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise GitmlError(f"{url}: cannot be opened as storage ({exc}).") from exc
    return _fsspec(url, scheme)


def _bucket_path(url: str) -> str:
    parts = urlsplit(url)
    if not parts.netloc:
        raise GitmlError(f"{url}: name the bucket, as in s3://bucket/prefix.")
    return f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")


def _s3(url: str) -> pafs.FileSystem:
    """pyarrow's S3 client, with the endpoint and region of the AWS environment variables."""
    import pyarrow.fs as pafs

    options: dict[str, str] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        options["scheme"] = parts.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    elif not endpoint:
        # AWS itself: the bucket's region (one request); else the SDK's default
        with contextlib.suppress(OSError, ValueError):
            options["region"] = pafs.resolve_s3_region(urlsplit(url).netloc)
    return pafs.S3FileSystem(**options)


def _fsspec(url: str, scheme: str) -> Storage:
    """Any scheme fsspec has an implementation of, through pyarrow's FSSpecHandler."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise GitmlError(f"{url}: the '{scheme}' scheme goes through fsspec, the `logs` extra: {EXTRA}") from exc
    try:
        fs, base = url_to_fs(url)
    except ValueError as exc:
        raise GitmlError(
            f"{url}: no storage handles the scheme '{scheme}' ({exc}). Use a folder, s3://, gs://, file://, "
            f"{DVC_REMOTE}, or a scheme fsspec knows (its package installed)."
        ) from exc
    except ImportError as exc:
        raise GitmlError(
            f"{url}: the '{scheme}' scheme needs a package that is not installed: {exc}. Install it into this "
            "environment (pip install <package>), or use s3://, gs:// or a folder, which the `logs` extra handles."
        ) from exc
    except Exception as exc:  # an implementation that connects when it is created (hdfs, sftp) and cannot
        raise GitmlError(f"{url}: cannot be opened as storage ({type(exc).__name__}: {exc}).") from exc
    return Storage(PyFileSystem(FSSpecHandler(fs)), str(base).rstrip("/"), url)


def dvc_remote(root: Path, name: str | None = None) -> str:
    """The URL of a DVC remote (the default one unless named) + /gitml-logs, from .dvc/config and config.local."""
    folder = root / ".dvc"
    config = configparser.ConfigParser(interpolation=None)
    try:
        read = config.read([folder / "config", folder / "config.local"], encoding="utf-8")
    except configparser.Error as exc:
        raise GitmlError(f"{folder / 'config'}: cannot be read ({exc}).") from exc
    if not read:
        raise GitmlError(f"{DVC_REMOTE}: {folder / 'config'} not found; is {root} a DVC repository?")
    if name is None:
        name = config.get("core", "remote", fallback=None)
        if not name:
            raise GitmlError(f"{DVC_REMOTE}: DVC has no default remote; set one with `dvc remote default NAME`.")
    section = f"'remote \"{name}\"'"
    url = config.get(section, "url", fallback=None)
    if not url:
        raise GitmlError(f"{DVC_REMOTE}: DVC has no remote named {name!r} with a url in {folder / 'config'}.")
    if "://" not in url and not Path(url).is_absolute():
        url = str((folder / url).resolve())  # DVC resolves a relative remote against the config's folder
    return f"{url.rstrip('/')}/{DVC_FOLDER}"
