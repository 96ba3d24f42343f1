"""Shared machinery of the project's single-file, versionable Kedro datasets.

Follows the conventions of ``kedro_datasets`` (e.g. ``pickle.PickleDataset``): an fsspec
filesystem built from ``credentials`` + ``fs_args`` (``open_args_load`` / ``open_args_save``
nested keys go to ``fs.open``), ``get_filepath_str`` for paths, ``_describe`` / ``_exists`` /
``_release`` / ``_invalidate_cache``, and Kedro's versioning (``<filepath>/<timestamp>/<name>``).

Subclasses only say how to turn data into bytes and back (``_serialise`` / ``_deserialise``).
The base implements ``_load`` / ``_save`` (not ``load`` / ``save``): Kedro aliases and wraps
them once per subclass; a ``save`` inherited from a parent would be wrapped twice and the two
versioning wrappers would disagree on the save version.
Data are serialised in memory *before* the target file is opened, so a value that cannot be
stored raises without leaving an empty or half-written file (or an empty version folder).
Load errors name the file and the format, e.g. ``NpzDataset: cannot read '.../x.npz' as
npz: File is not a zip file``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from pathlib import PurePosixPath
from typing import IO, Any, ClassVar, TypeVar

import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


class BinaryFileDataset(AbstractVersionedDataset[_DI, _DO]):
    """Base of a dataset stored as one binary file on any fsspec filesystem, versioned or not.

    Args (all keyword-only):
        filepath: path of the file, optionally prefixed with a protocol (``s3://``, ``memory://``);
            local when none.
        load_args: options of the format's reader (see the subclass).
        save_args: options of the format's writer (see the subclass).
        version: ``kedro.io.core.Version``; the catalog passes it when ``versioned: true``.
        credentials: passed to the fsspec filesystem constructor.
        fs_args: passed to the fsspec filesystem constructor, except the nested keys
            ``open_args_load`` / ``open_args_save`` that go to ``fs.open``.
        metadata: free-form, ignored by Kedro (kedro-viz reads ``metadata.kedro-viz``).
    """

    #: short name of the format, used in error messages ("npz", "torch", "faiss").
    FORMAT: ClassVar[str] = "binary"
    DEFAULT_LOAD_ARGS: ClassVar[dict[str, Any]] = {}
    DEFAULT_SAVE_ARGS: ClassVar[dict[str, Any]] = {}
    DEFAULT_FS_ARGS: ClassVar[dict[str, Any]] = {
        "open_args_load": {"mode": "rb"},
        "open_args_save": {"mode": "wb"},
    }

    def __init__(
        self,
        *,
        filepath: str | os.PathLike,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        _fs_args = deepcopy(fs_args) or {}
        _fs_open_args_load = _fs_args.pop("open_args_load", {})
        _fs_open_args_save = _fs_args.pop("open_args_save", {})
        _credentials = deepcopy(credentials) or {}

        protocol, path = get_protocol_and_path(str(filepath), version)
        if protocol == "file":
            _fs_args.setdefault("auto_mkdir", True)

        self._protocol = protocol
        self._fs = fsspec.filesystem(self._protocol, **_credentials, **_fs_args)
        self.metadata = metadata

        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        self._fs_open_args_load = {
            **self.DEFAULT_FS_ARGS.get("open_args_load", {}),
            **(_fs_open_args_load or {}),
        }
        self._fs_open_args_save = {
            **self.DEFAULT_FS_ARGS.get("open_args_save", {}),
            **(_fs_open_args_save or {}),
        }

    # ---- hooks for subclasses -------------------------------------------------------------
    def _serialise(self, data: _DI) -> bytes:  # pragma: no cover - abstract
        """Turn ``data`` into the file's bytes; raise ``DatasetError`` for unstorable data."""
        raise NotImplementedError

    def _deserialise(self, raw: bytes) -> _DO:  # pragma: no cover - abstract
        """Turn the file's bytes back into data (any exception is reported with the path)."""
        raise NotImplementedError

    # ---- kedro API ------------------------------------------------------------------------
    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "load_args": self._load_args,
            "save_args": self._save_args,
            "version": self._version,
        }

    def _load(self) -> _DO:
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, **self._fs_open_args_load) as fs_file:
            raw = fs_file.read()
        try:
            return self._deserialise(raw)
        except Exception as exc:
            raise DatasetError(
                f"{type(self).__name__}: cannot read '{load_path}' as {self.FORMAT}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _save(self, data: _DI) -> None:
        try:
            payload = self._serialise(data)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, DatasetError) else f"{type(exc).__name__}: {exc}"
            raise DatasetError(
                f"{type(self).__name__}: cannot save {type(data).__name__} as {self.FORMAT} "
                f"to '{self._filepath}': {reason}"
            ) from exc
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        with self._fs.open(save_path, **self._fs_open_args_save) as fs_file:
            fs_file.write(payload)
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return bool(self._fs.exists(load_path))

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        """Invalidate underlying filesystem caches."""
        filepath = get_filepath_str(self._filepath, self._protocol)
        self._fs.invalidate_cache(filepath)

    # ---- helpers for previews -------------------------------------------------------------
    def _load_path_str(self) -> str:
        return get_filepath_str(self._get_load_path(), self._protocol)

    def _file_bytes(self) -> int | None:
        """Size of the file that ``load`` would read, or ``None`` when the fs cannot say."""
        try:
            return int(self._fs.size(self._load_path_str()))
        except Exception:
            return None

    @contextmanager
    def _open_for_read(self) -> Iterator[IO[bytes]]:
        with self._fs.open(self._load_path_str(), **self._fs_open_args_load) as fs_file:
            yield fs_file

    def _preview_header(self) -> dict[str, Any]:
        """Common preview fields: the file read and its size."""
        return {
            "file": self._load_path_str(),
            "version": self.resolve_load_version(),
            "file_bytes": self._file_bytes(),
        }
