"""Download the real cats-vs-dogs dataset (for users with internet access).

Two sources are supported:

* Microsoft's copy of the Kaggle "PetImages" archive (``download_petimages``), fetched with the
  standard library only. It unpacks to ``PetImages/Cat/*.jpg`` and ``PetImages/Dog/*.jpg`` plus a
  few junk files (``Thumbs.db``, corrupt JPEGs) that the data layer skips later.
* Any Kaggle dataset through the ``kaggle`` command-line tool (``download_kaggle``), which the
  user installs and configures themselves; it is not a dependency of this project.

Every failure (HTTP error, refused connection, timeout, unsafe archive, missing kaggle setup) is
raised as ``DownloadError`` with a message that says what went wrong and what to do instead.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import stat
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = [
    "MICROSOFT_PETIMAGES_URL",
    "DownloadError",
    "download_file",
    "download_kaggle",
    "download_petimages",
    "extract_zip",
]

MICROSOFT_PETIMAGES_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
    "kagglecatsanddogs_5340.zip"
)

_CHUNK_SIZE = 1 << 16
# Some CDNs reject urllib's default "Python-urllib/x.y" agent.
_USER_AGENT = "catsdogs-downloader/0.1 (+python urllib)"
# Network-level failures: HTTPError/URLError, timeouts and resets (OSError), protocol errors.
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)


class DownloadError(RuntimeError):
    """A dataset could not be downloaded or unpacked; the message says why and what to do."""


def download_file(
    url: str, dest: Path, *, show_progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    The body is streamed to ``dest.part`` and renamed over ``dest`` only once it is complete, so
    ``dest`` is never half-written. If ``dest`` already exists and its size equals the server's
    Content-Length, nothing is downloaded. ``timeout`` (seconds) applies to connecting and to each
    read. Raises ``DownloadError`` on HTTP errors, connection errors, timeouts and truncated
    bodies.
    """
    dest = Path(dest)
    if dest.is_file() and _fetch_remote_size(url, timeout) == dest.stat().st_size:
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with _open_url(url, timeout=timeout) as response:
            total = _parse_content_length(response.headers.get("Content-Length"))
            # Servers that ignore HEAD still tell us the size here, before any body is read.
            if total is not None and dest.is_file() and dest.stat().st_size == total:
                return dest
            with part.open("wb") as out, _create_progress(show_progress) as progress:
                task = progress.add_task(dest.name, total=total)
                received = 0
                for chunk in _read_chunks(response, url):
                    out.write(chunk)
                    received += len(chunk)
                    progress.update(task, advance=len(chunk))
        if total is not None and received != total:
            raise _make_download_error(url, f"connection closed after {received} of {total} bytes")
        os.replace(part, dest)
    finally:
        # Reached with a leftover .part only on failure; a partial file must not linger.
        part.unlink(missing_ok=True)
    return dest


def extract_zip(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` safely and return ``dest``.

    Every member is checked before anything is written: a member whose path would land outside
    ``dest`` (zip-slip, e.g. ``../evil.txt`` or an absolute path) raises ``DownloadError``.
    Directory entries are created, symlink entries are skipped. A marker file in ``dest``
    records the archive's name and size, so extracting the same archive again is a no-op.
    """
    archive = Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / f".{archive.name}.extracted"
    stamp = {"archive": archive.name, "size": archive.stat().st_size}
    if _read_marker(marker) == stamp:
        return dest

    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            plan = [(info, _resolve_member(info, root, archive)) for info in zf.infolist()]
            for info, target in plan:
                if _is_symlink(info) or target == root:
                    continue  # A link could point anywhere; the dataset has none.
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK_SIZE)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DownloadError(
            f"{archive} is not a valid zip archive ({exc}); delete it and download it again."
        ) from exc

    marker.write_text(json.dumps(stamp), encoding="utf-8")
    return dest


def download_petimages(
    dest: Path, url: str = MICROSOFT_PETIMAGES_URL, *, show_progress: bool = True
) -> Path:
    """Download and unpack the Kaggle "PetImages" archive; return the folder holding it.

    The zip is saved as ``dest/<zip name>`` and extracted into ``dest``, so the images end up in
    ``dest/PetImages/Cat`` and ``dest/PetImages/Dog``. The return value is ``dest`` itself (the
    folder *containing* ``PetImages``). Calling it again reuses the zip and the extracted files.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    url_name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    archive = dest / (url_name or "kagglecatsanddogs.zip")
    download_file(url, archive, show_progress=show_progress)
    extract_zip(archive, dest)
    if not (dest / "PetImages").is_dir():
        raise DownloadError(
            f"{archive} (from {url}) has no top-level PetImages folder; "
            "is this the Kaggle cats-vs-dogs archive?"
        )
    return dest


def download_kaggle(dataset: str, dest: Path) -> Path:
    """Download Kaggle ``dataset`` ("owner/name") into ``dest`` with the ``kaggle`` CLI; return it.

    Runs ``kaggle datasets download -d DATASET -p DEST --unzip``. The CLI must be on PATH and
    configured: ``kaggle.json`` in ``$KAGGLE_CONFIG_DIR`` (default ``~/.kaggle``), or both
    KAGGLE_USERNAME and KAGGLE_KEY set (newer CLIs also accept KAGGLE_API_TOKEN or an
    ``access_token`` file). Otherwise ``DownloadError`` says what to install or configure.
    """
    dest = Path(dest)
    executable = shutil.which("kaggle")
    problems = []
    if executable is None:
        problems.append("the `kaggle` command is not on PATH: install it with `pip install kaggle`")
    if not _has_kaggle_credentials():
        config_dir = _locate_kaggle_config_dir()
        problems.append(
            "no Kaggle credentials were found: create an API token on "
            "https://www.kaggle.com/settings (Account > API > Create New Token) and save the "
            f"downloaded kaggle.json as {config_dir / 'kaggle.json'} (chmod 600), or set "
            "KAGGLE_CONFIG_DIR to the folder holding kaggle.json, or set both KAGGLE_USERNAME "
            "and KAGGLE_KEY"
        )
    if problems:
        raise DownloadError(
            f"Cannot download Kaggle dataset {dataset!r}: " + "; and ".join(problems) + "."
        )

    dest.mkdir(parents=True, exist_ok=True)
    command = [str(executable), "datasets", "download", "-d", dataset, "-p", str(dest), "--unzip"]
    try:
        # stdout is left on the terminal so the CLI's own progress bar stays visible.
        result = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
    except OSError as exc:
        raise DownloadError(f"Could not run {' '.join(command)}: {exc}") from exc
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] or "see the output above"
        raise DownloadError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}: {detail}"
        )
    return dest


def _open_url(url: str, *, timeout: float, method: str = "GET") -> http.client.HTTPResponse:
    request = urllib.request.Request(url, method=method, headers={"User-Agent": _USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _make_download_error(url, f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _make_download_error(url, _describe_reason(exc.reason)) from exc
    except (http.client.HTTPException, OSError) as exc:
        raise _make_download_error(url, _describe_reason(exc)) from exc


def _fetch_remote_size(url: str, timeout: float) -> int | None:
    """Return the server's Content-Length for ``url`` from a HEAD request, or None if unknown."""
    try:
        with _open_url(url, timeout=timeout, method="HEAD") as response:
            return _parse_content_length(response.headers.get("Content-Length"))
    except DownloadError as exc:
        # Some servers refuse HEAD; the GET that follows reports real HTTP errors itself.
        if isinstance(exc.__cause__, urllib.error.HTTPError):
            return None
        raise


def _read_chunks(response: BinaryIO, url: str) -> Iterator[bytes]:
    while True:
        try:
            chunk = response.read(_CHUNK_SIZE)
        except _NETWORK_ERRORS as exc:
            raise _make_download_error(url, _describe_reason(exc)) from exc
        if not chunk:
            return
        yield chunk


def _parse_content_length(value: str | None) -> int | None:
    try:
        size = int(value) if value is not None else None
    except ValueError:
        return None
    return size if size is not None and size >= 0 else None


def _describe_reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out waiting for the server"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


def _make_download_error(url: str, cause: str) -> DownloadError:
    return DownloadError(
        f"Could not download {url}: {cause}. If you can reach it from a browser or another "
        "machine, download the file manually and pass its path instead."
    )


def _create_progress(show_progress: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show_progress,
        transient=False,
    )


def _read_marker(marker: Path) -> object:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(marker.read_text(encoding="utf-8"))
    return None


def _resolve_member(info: zipfile.ZipInfo, root: Path, archive: Path) -> Path:
    """Return where ``info`` would be written under ``root``; refuse paths that escape it."""
    target = (root / info.filename).resolve()
    if not target.is_relative_to(root):
        raise DownloadError(
            f"Refusing to extract {archive}: member {info.filename!r} would be written outside "
            f"{root}. The archive is corrupt or malicious; download it again from a trusted source."
        )
    return target


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _locate_kaggle_config_dir() -> Path:
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".kaggle"


def _has_kaggle_credentials() -> bool:
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    config_dir = _locate_kaggle_config_dir()
    return (config_dir / "kaggle.json").is_file() or (config_dir / "access_token").is_file()
