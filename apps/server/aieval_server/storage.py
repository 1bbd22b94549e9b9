"""Artifact storage that every machine reaches: local files (embedded default) or S3/MinIO (production).

Keys are '/'-separated and always built by the server (content hashes, numeric ids), never from user input.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from .config import Settings


class StorageError(RuntimeError):
    pass


class Storage(Protocol):
    def put_file(self, key: str, source: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def open(self, key: str) -> BinaryIO: ...
    def size(self, key: str) -> int: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def local_copy(self, key: str, cache_dir: Path) -> Path: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name then rename: readers never see a half-written file.
        fd, staging = tempfile.mkstemp(dir=target.parent, prefix=".put-")
        os.close(fd)
        try:
            shutil.copyfile(source, staging)
            os.replace(staging, target)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise StorageError(f"{key} is not in storage") from None

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix.rstrip("/")), ignore_errors=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        return self.path(key)  # already on this machine


class S3Storage:
    def __init__(self, settings: Settings):
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=(
                settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
            ),
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )
        self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            self.client.create_bucket(Bucket=self.bucket)

    def _full(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _strip(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def put_file(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._full(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except ClientError:
            return False

    def open(self, key: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except ClientError:
            raise StorageError(f"{key} is not in storage") from None

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._full(key))["ContentLength"])

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full(prefix.rstrip("/")) + "/"):
            for item in page.get("Contents", []):
                yield item["Key"]

    def list(self, prefix: str) -> list[str]:
        return sorted(self._strip(k) for k in self._iter_keys(prefix))

    def delete_prefix(self, prefix: str) -> None:
        keys = list(self._iter_keys(prefix))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        """Download once into cache_dir (keys are immutable: content hashes or finished runs)."""
        target = cache_dir / _check_key(key)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, staging = tempfile.mkstemp(dir=target.parent, prefix=".get-")
            os.close(fd)
            try:
                self.client.download_file(self.bucket, self._full(key), staging)
                os.replace(staging, target)
            finally:
                if os.path.exists(staging):
                    os.unlink(staging)
        return target




_instances: dict[int, Storage] = {}


def get_storage(settings: Settings) -> Storage:
    """One client per settings object (creating an S3 client and checking the bucket is not free)."""
    storage = _instances.get(id(settings))
    if storage is None:
        storage = LocalStorage(settings.local_storage_dir) if settings.storage == "local" else S3Storage(settings)
        _instances[id(settings)] = storage
    return storage
