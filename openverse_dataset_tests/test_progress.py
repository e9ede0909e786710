"""Hashing and uploading report files and bytes as they go (what the CLI's progress display shows)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.utils import _http

from openverse_dataset import progress
from openverse_dataset.parquet import sha256_file
from openverse_dataset.publish.hub import HubPublisher, make_api
from openverse_dataset.release.tree import TreeFile
from openverse_dataset_tests.fakehub import ENDPOINT, FakeHub

TOKEN = "hf_progress_token"
CARD = (
    b"---\nlicense: cc-by-4.0\nconfigs:\n- config_name: all\n  data_files:\n  - split: train\n"
    b"    path: data/*/*/*.parquet\n  default: true\n---\n# t\n"
)


def test_hashing_reports_each_file_and_its_bytes(tmp_path: Path):
    steps = []
    sizes = [10, 3_000_000, 0]
    for i, n in enumerate(sizes):
        (tmp_path / f"f{i}").write_bytes(b"x" * n)
    with progress.listening(steps.append):
        for i in range(len(sizes)):
            sha256_file(tmp_path / f"f{i}")
    sha256_file(tmp_path / "f0")  # nobody listening: nothing recorded, nothing fails
    assert [(s.stage, s.files, s.nbytes) for s in steps] == [(progress.HASHING, 1, n) for n in sizes]


def test_upload_announces_totals_then_reports_batches(tmp_path: Path, monkeypatch):
    fake = FakeHub(token=TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_ENDPOINT", ENDPOINT)
    monkeypatch.setattr("openverse_dataset.publish.hub.UPLOAD_BATCH_FILES", 2)
    contents = {f"data/by/p{i}/part-00000.parquet": f"p{i}".encode() * (100 + i) for i in range(5)}
    contents["README.md"] = CARD
    files = []
    for path, data in sorted(contents.items()):
        src = tmp_path / path.replace("/", "__")
        src.write_bytes(data)
        files.append(TreeFile(path, str(src), len(data), sha256_file(src)))
    steps = []
    _http.set_client_factory(fake.client)
    try:
        with progress.listening(steps.append):
            HubPublisher(make_api(TOKEN, ENDPOINT), "org/repo", sleep=lambda s: None).publish(files, tag="2026.11.27")
    finally:
        _http.set_client_factory(_http.default_client_factory)
    uploads = [s for s in steps if s.stage == progress.UPLOADING]
    total = sum(len(d) for d in contents.values())
    assert (uploads[0].total_files, uploads[0].total_bytes) == (6, total)
    assert [s.files for s in uploads[1:]] == [2, 2, 2]
    assert sum(s.nbytes for s in uploads[1:]) == total
