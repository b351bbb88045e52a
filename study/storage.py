"""Where a study's Ray results live: a local folder, or a URI of one of pyarrow's filesystems (file://, s3://, gs://,
hdfs://), as Tune's own `storage_path` takes them. The study's record (study.json) and driver.state are read and
written through the same filesystem, so a bucket holds the whole study and `--resume` finds it there.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from urllib.parse import urlparse

from core.paths import unwritable


class StorageError(ValueError):
    """--storage names no filesystem pyarrow knows, or a folder that cannot be written."""


def _is_uri(storage: str) -> bool:
    return len(urlparse(storage).scheme) > 1  # not a bare path, nor a Windows drive letter


def normalized(storage: str) -> str:
    """A local folder as an absolute path (Ray runs each trial in its own working directory; file:// URIs are
    local folders too), any other URI as given."""
    if _is_uri(storage):
        parsed = urlparse(storage)
        if parsed.scheme == "file":
            return str(Path(parsed.path).resolve())
        return storage.rstrip("/")
    return str(Path(storage).resolve())


@functools.cache
def filesystem(storage: str):
    """(pyarrow filesystem, path in it) of a normalized --storage; one per storage and process (an S3 client is
    not free to make)."""
    import pyarrow.fs

    if not _is_uri(storage):
        return pyarrow.fs.LocalFileSystem(), storage
    try:
        return pyarrow.fs.FileSystem.from_uri(storage)
    except Exception as err:  # pyarrow's ArrowInvalid, or a filesystem this pyarrow build lacks
        raise StorageError(f"--storage {storage}: {err}") from None


@dataclasses.dataclass(frozen=True)
class StudyFolder:
    """The study's folder `name` under `storage` (normalized). Plain strings, so it pickles into Tune's state."""

    storage: str
    name: str

    @classmethod
    def of(cls, storage: str | Path, name: str) -> StudyFolder:
        folder = cls(normalized(str(storage)), name)
        folder._filesystem()  # an unknown scheme fails here, before anything runs
        return folder

    @property
    def uri(self) -> str:
        """What Tune is given (Tuner.restore, ExperimentAnalysis) and what the messages show."""
        return f"{self.storage}/{self.name}"

    @property
    def local(self) -> Path | None:
        """The folder on this machine's disk, or None for a remote filesystem."""
        return None if _is_uri(self.storage) else Path(self.uri)

    def __str__(self) -> str:
        return self.uri

    def _filesystem(self):
        fs, storage_path = filesystem(self.storage)
        return fs, f"{storage_path.rstrip('/')}/{self.name}"

    def exists(self) -> bool:
        import pyarrow.fs

        fs, path = self._filesystem()
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def has(self, file: str) -> bool:
        import pyarrow.fs

        fs, path = self._filesystem()
        return fs.get_file_info(f"{path}/{file}").type == pyarrow.fs.FileType.File

    def read_text(self, file: str) -> str:
        fs, path = self._filesystem()
        with fs.open_input_stream(f"{path}/{file}") as stream:
            return stream.read().decode()

    def write_text(self, file: str, text: str) -> None:
        """Whole or not at all: locally a temporary file renamed over the old one (a kill mid-write leaves the last
        whole file); an object store's put is atomic itself."""
        fs, path = self._filesystem()
        target = f"{path}/{file}"
        if self.local is None:
            with fs.open_output_stream(target) as stream:
                stream.write(text.encode())
            return
        part = Path(target + ".part")
        part.write_text(text)
        part.replace(target)

    def create(self) -> None:
        fs, path = self._filesystem()
        fs.create_dir(path, recursive=True)

    def unwritable(self) -> str | None:
        """Why the study's folder could not be created here, or None (remote filesystems: checked on first write)."""
        return unwritable(Path(self.storage)) if self.local is not None else None
