"""Tests for training.download against a real HTTP server on 127.0.0.1 (no outside network)."""

from __future__ import annotations

import functools
import http.server
import os
import re
import socket
import stat
import sys
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import SAMPLE_DIR, free_port, photos, serve_in_thread
from training.download import (
    DownloadError,
    download_file,
    download_kaggle,
    download_petimages,
    extract_zip,
)

ZIP_NAME = "kagglecatsanddogs_5340.zip"
PHOTOS_PER_CLASS = 3


@dataclass
class Server:
    """A running local HTTP server and what it has seen."""

    base_url: str
    root: Path
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)

    def count(self, method: str, name: str) -> int:
        return self.requests[(method, "/" + name)]


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a directory, counting requests; ``/truncated.zip`` cuts its body short."""

    def __init__(self, *args, requests: Counter[tuple[str, str]], **kwargs) -> None:
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self._requests[("GET", self.path)] += 1
        if self.path == "/truncated.zip":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK" + b"\0" * 98)
            self.close_connection = True
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        self._requests[("HEAD", self.path)] += 1
        super().do_HEAD()

    def log_message(self, format: str, *args: object) -> None:
        pass  # Keep pytest output clean.


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    requests: Counter[tuple[str, str]] = Counter()
    handler = functools.partial(_CountingHandler, directory=str(root), requests=requests)
    with serve_in_thread(handler) as url:
        yield Server(base_url=url, root=root, requests=requests)


@pytest.fixture
def petimages_zip(server: Server) -> dict[str, bytes]:
    """Write a Kaggle-layout zip into the served folder; return its members' expected bytes."""
    members: dict[str, bytes] = {}
    for folder, label in (("cat", "Cat"), ("dog", "Dog")):
        chosen = photos(folder)[:PHOTOS_PER_CLASS]
        assert len(chosen) == PHOTOS_PER_CLASS, f"missing sample photos in {SAMPLE_DIR / folder}"
        for index, photo in enumerate(chosen):
            members[f"PetImages/{label}/{index}.jpg"] = photo.read_bytes()
    # The junk the real archive ships: an empty "JPEG" and a Windows thumbnail cache.
    members["PetImages/Cat/666.jpg"] = b""
    members["PetImages/Dog/Thumbs.db"] = b"\xd0\xcf\x11\xe0 not an image"
    with zipfile.ZipFile(server.root / ZIP_NAME, "w", zipfile.ZIP_DEFLATED) as zf:
        for directory in ("PetImages/", "PetImages/Cat/", "PetImages/Dog/"):
            zf.writestr(directory, b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return members


def _list_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_download_petimages_extracts_identical_files_once(
    server: Server, petimages_zip: dict[str, bytes], tmp_path: Path
) -> None:
    dest = tmp_path / "datasets"
    url = f"{server.base_url}/{ZIP_NAME}"

    result = download_petimages(dest, url, show_progress=False)

    assert result == dest
    assert (dest / ZIP_NAME).read_bytes() == (server.root / ZIP_NAME).read_bytes()
    for name, data in petimages_zip.items():
        assert (dest / name).read_bytes() == data, name
    assert (dest / "PetImages" / "Cat").is_dir()
    assert (dest / "PetImages" / "Dog").is_dir()
    assert not list(dest.glob("*.part"))
    assert server.count("GET", ZIP_NAME) == 1
    first_mtimes = {p: p.stat().st_mtime_ns for p in _list_files(dest / "PetImages")}

    again = download_petimages(dest, url, show_progress=False)

    assert again == dest
    assert server.count("GET", ZIP_NAME) == 1, "the zip was downloaded a second time"
    assert {p: p.stat().st_mtime_ns for p in _list_files(dest / "PetImages")} == first_mtimes


def test_download_file_replaces_a_file_of_the_wrong_size(
    server: Server, petimages_zip: dict[str, bytes], tmp_path: Path
) -> None:
    dest = tmp_path / ZIP_NAME
    dest.write_bytes(b"stale partial copy")

    download_file(f"{server.base_url}/{ZIP_NAME}", dest, show_progress=True)

    assert dest.read_bytes() == (server.root / ZIP_NAME).read_bytes()
    assert server.count("GET", ZIP_NAME) == 1


def test_http_404_raises_with_url_and_leaves_no_file(server: Server, tmp_path: Path) -> None:
    url = f"{server.base_url}/missing.zip"
    dest = tmp_path / "out" / "missing.zip"

    with pytest.raises(DownloadError) as excinfo:
        download_file(url, dest, show_progress=False)

    message = str(excinfo.value)
    assert url in message
    assert "404" in message
    assert "manually" in message
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_download_petimages_404_leaves_dest_empty(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "datasets"
    url = f"{server.base_url}/{ZIP_NAME}"  # Nothing served under this name.

    with pytest.raises(DownloadError, match=re.escape(ZIP_NAME)):
        download_petimages(dest, url, show_progress=False)

    assert _list_files(dest) == []


def test_connection_refused_raises_download_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/{ZIP_NAME}"
    dest = tmp_path / ZIP_NAME

    with pytest.raises(DownloadError) as excinfo:
        download_file(url, dest, show_progress=False, timeout=5)

    assert url in str(excinfo.value)
    assert _list_files(tmp_path) == []


def test_unresponsive_server_times_out(tmp_path: Path) -> None:
    # A listening socket that never accepts: the connect succeeds, the response never comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/{ZIP_NAME}"

        with pytest.raises(DownloadError, match="timed out"):
            download_file(url, tmp_path / ZIP_NAME, show_progress=False, timeout=0.5)

    assert _list_files(tmp_path) == []


def test_truncated_body_raises_and_leaves_no_file(server: Server, tmp_path: Path) -> None:
    url = f"{server.base_url}/truncated.zip"
    dest = tmp_path / "truncated.zip"

    with pytest.raises(DownloadError, match=r"truncated\.zip"):
        download_file(url, dest, show_progress=False, timeout=5)

    assert _list_files(tmp_path) == []


@pytest.mark.parametrize("evil_name", ["../evil.txt", "PetImages/../../evil.txt"])
def test_extract_zip_rejects_members_escaping_dest(tmp_path: Path, evil_name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("PetImages/Cat/0.jpg", b"fine")
        zf.writestr(evil_name, b"pwned")
    dest = tmp_path / "unpacked" / "dest"

    with pytest.raises(DownloadError, match=r"evil\.txt"):
        extract_zip(archive, dest)

    assert not (dest.parent / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert _list_files(tmp_path / "unpacked") == []


def test_extract_zip_rejects_absolute_member(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    archive = tmp_path / "absolute.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(zipfile.ZipInfo(str(outside)), b"pwned")

    with pytest.raises(DownloadError):
        extract_zip(archive, tmp_path / "dest")

    assert not outside.exists()


def test_extract_zip_skips_symlink_members(tmp_path: Path) -> None:
    archive = tmp_path / "links.zip"
    link = zipfile.ZipInfo("PetImages/Cat/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("PetImages/Cat/0.jpg", b"real")
        zf.writestr(link, "/etc/passwd")
    dest = tmp_path / "dest"

    assert extract_zip(archive, dest) == dest

    assert (dest / "PetImages" / "Cat" / "0.jpg").read_bytes() == b"real"
    assert not os.path.lexists(dest / "PetImages" / "Cat" / "link.jpg")


def test_extract_zip_rejects_a_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"this is not a zip")

    with pytest.raises(DownloadError, match="download it again"):
        extract_zip(archive, tmp_path / "dest")


@pytest.fixture
def kaggle_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment with no kaggle CLI and no Kaggle credentials; returns an empty PATH dir."""
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("PATH", str(bin_dir))
    for name in list(os.environ):
        if name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    return bin_dir


def test_download_kaggle_without_setup_explains_what_to_do(
    kaggle_env: Path, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError) as excinfo:
        download_kaggle("owner/cats-and-dogs", tmp_path / "out")

    message = str(excinfo.value)
    assert "kaggle.json" in message
    assert "pip install kaggle" in message
    assert "KAGGLE_USERNAME" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="fake CLI is a POSIX shell script")
def test_download_kaggle_runs_the_cli_when_configured(
    kaggle_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for the external `kaggle` tool (not the code under test) that records its args.
    args_file = tmp_path / "args.txt"
    fake = kaggle_env / "kaggle"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{args_file}"\n', encoding="utf-8")
    fake.chmod(0o755)
    config_dir = tmp_path / "kaggle-config"
    config_dir.mkdir()
    (config_dir / "kaggle.json").write_text('{"username": "u", "key": "k"}', encoding="utf-8")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    dest = tmp_path / "out"

    assert download_kaggle("owner/cats-and-dogs", dest) == dest

    assert args_file.read_text().split("\n")[:-1] == [
        "datasets",
        "download",
        "-d",
        "owner/cats-and-dogs",
        "-p",
        str(dest),
        "--unzip",
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="fake CLI is a POSIX shell script")
def test_download_kaggle_reports_cli_failure(
    kaggle_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = kaggle_env / "kaggle"
    fake.write_text("#!/bin/sh\necho '403 - Forbidden' >&2\nexit 1\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")

    with pytest.raises(DownloadError, match="403 - Forbidden"):
        download_kaggle("owner/cats-and-dogs", tmp_path / "out")


def test_download_command_then_data_command_on_the_petimages_layout(
    server: Server, petimages_zip: dict[str, bytes], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    runner = CliRunner()
    dest = tmp_path / "raw"
    result = runner.invoke(
        app, ["download", "--dest", str(dest), "--url", f"{server.base_url}/{ZIP_NAME}"]
    )
    assert result.exit_code == 0, result.output
    assert f"catsdogs data {dest / 'PetImages'}" in result.stdout

    result = runner.invoke(app, ["data", str(dest / "PetImages"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"valid images:  {2 * PHOTOS_PER_CLASS}" in result.stdout
    # The archive's junk is reported, not trained on.
    assert "rejected:      2 {'empty': 1, 'not_an_image': 1}" in result.stdout
    rejected = (tmp_path / "out" / "rejected.csv").read_text()
    assert "Cat/666.jpg,empty" in rejected and "Dog/Thumbs.db,not_an_image" in rejected
