"""--storage as a folder or a URI of one of pyarrow's filesystems: the study's record goes through the same one."""

from __future__ import annotations

import pytest

from study.run import main
from study.storage import StorageError, StudyFolder


def test_a_remote_folder_is_read_and_written_through_its_filesystem():
    """pyarrow's in-memory mock filesystem stands in for a bucket: nothing touches the local disk."""
    folder = StudyFolder.of("mock:///bucket/ray_results/", "s")
    assert folder.uri == "mock:///bucket/ray_results/s" and folder.local is None and folder.unwritable() is None
    assert not folder.exists() and not folder.has("study.json")
    folder.create()
    folder.write_text("study.json", '{"a": 1}')
    folder.write_text("study.json", '{"a": 2}')
    assert folder.exists() and folder.has("study.json") and folder.read_text("study.json") == '{"a": 2}'
    assert not folder.has("driver.state")


def test_file_uris_and_relative_folders_are_local_absolute_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert StudyFolder.of(f"file://{tmp_path}/rr", "s").local == tmp_path / "rr" / "s"
    assert StudyFolder.of("rr", "s").uri == f"{tmp_path}/rr/s"
    folder = StudyFolder.of("rr", "s")
    folder.create()
    folder.write_text("study.json", "{}")
    assert (tmp_path / "rr" / "s" / "study.json").read_text() == "{}"
    assert not list((tmp_path / "rr" / "s").glob("*.part"))


def test_an_unknown_storage_scheme_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(StorageError, match="--storage nosuch://b: Unrecognized filesystem type"):
        StudyFolder.of("nosuch://b", "s")
    code = main(
        [
            "--space",
            "learnable_prior",
            "--budget",
            "smoke",
            "--storage",
            "nosuch://b",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlruns.db",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --storage nosuch://b: Unrecognized filesystem type"), err
    assert not (tmp_path / "mlruns.db").exists()
