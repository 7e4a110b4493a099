"""The upload page (/app) as a person meets it: a real (headless) Debian Chromium against real
`bentoml serve` processes of the full-data model (one open, one with API keys and a rate
limit), with every request outside the service blocked and recorded: the page must make
none, and must run under its own Content-Security-Policy without a script error.

Photos are chosen by fixed rules: the first sample photos of each label, and the first
`scene-*.jpg` of data/nonpet as the photo with no cat or dog.
"""

import contextlib
import csv
import io
import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image

from helpers import CHROMIUM, CHROMIUM_ARGS, NONPET_DIR, ROOT, photos, run_bentoml_serve

AXE_JS = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
REPORTS = ROOT / "reports" / "app"
KEY = "app-page-test-key-5f1c9a"  # 16+ characters, as the service demands
RATE_LIMIT = "2/second"  # the keyed server: a batch of photos meets 429s with Retry-After
TIMEOUT_MS = 180_000  # a busy 2-core machine
FINISHED = "#results > li[data-state=done], #results > li[data-state=error]"
BUSY = "The service is busy, trying again…"
DAMAGED = "This image is damaged or incomplete and cannot be read"

pytestmark = [
    pytest.mark.slow,  # the full-data model
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} not found: install Debian's chromium package (.ci/run does)",
    ),
]


def _nonpet_photo() -> Path:
    return sorted(NONPET_DIR.glob("scene-*.jpg"))[0]


def _damaged(source: Path, name: str = "damaged.jpg") -> dict:
    """The first half of a real JPEG: its header is fine, its pixels stop half-way."""
    data = source.read_bytes()
    return {"name": name, "mimeType": "image/jpeg", "buffer": data[: len(data) // 2]}


def _payload(file: Path | dict) -> dict:
    """Playwright takes paths or buffers in one call, not both: buffers, then."""
    if isinstance(file, dict):
        return file
    kind = {".png": "image/png", ".jpg": "image/jpeg"}.get(file.suffix, "application/octet-stream")
    return {"name": file.name, "mimeType": kind, "buffer": file.read_bytes()}


def _named(source: Path, name: str) -> dict:
    return {"name": name, "mimeType": "image/jpeg", "buffer": source.read_bytes()}


@pytest.fixture(scope="module")
def app_server(full_model, tmp_path_factory):
    with run_bentoml_serve(
        "service:CatsDogs", tmp_path_factory.mktemp("app-server"), full_model.registered.bento_tag
    ) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_server(full_model, tmp_path_factory):
    with run_bentoml_serve(
        "service:CatsDogs",
        tmp_path_factory.mktemp("app-keyed-server"),
        full_model.registered.bento_tag,
        CATSDOGS_API_KEYS=KEY,
        CATSDOGS_RATE_LIMIT=RATE_LIMIT,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Screenshots and scan results of this module: under pytest's tmp dir, copied to
    reports/app/ in the repository."""
    return tmp_path_factory.mktemp("app-page")


def _publish(path: Path) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(path, REPORTS / path.name))


@dataclass
class Visit:
    """One browser context on the page, with what it asked for."""

    page: object
    context: object
    base: str
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    uploads: list[dict] = field(default_factory=list)  # POST /predict: file, headers, answers
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self) -> None:
        response = self.page.goto(f"{self.base}/app")
        assert response.status == 200
        self.page.wait_for_selector("body[data-ready=true]")

    def choose(self, files) -> None:
        """Pick files (paths or {name, mimeType, buffer}) with the page's picker."""
        self.page.set_input_files("#files", [_payload(file) for file in files])

    def rows(self):
        return self.page.locator("#results > li")

    def wait_finished(self, count: int) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator(FINISHED)).to_have_count(count, timeout=TIMEOUT_MS)

    def results(self) -> list[dict]:
        """What each row says: file name, answer, detail, state, thumbnail."""
        return self.page.eval_on_selector_all(
            "#results > li",
            """rows => rows.map(li => {
                const img = li.querySelector('img.thumb');
                return {
                    name: li.querySelector('.file-name').textContent,
                    answer: li.querySelector('.answer').textContent,
                    detail: li.querySelector('.detail').textContent,
                    state: li.dataset.state,
                    thumb: img && img.complete && img.naturalWidth
                        ? [img.naturalWidth, img.naturalHeight] : null,
                    preview: li.querySelector('.no-preview')?.textContent || null,
                };
            })""",
        )

    def watch_answers(self) -> None:
        """From now on, remember every text an answer shows, even one replaced later (a
        "trying again" before the answer)."""
        self.page.evaluate(
            """() => {
                window.answersSeen = new Set();
                new MutationObserver(() => document.querySelectorAll('#results .answer')
                    .forEach(el => window.answersSeen.add(el.textContent)))
                    .observe(document.getElementById('results'),
                             {childList: true, characterData: true, subtree: true});
            }"""
        )

    def answers_seen(self) -> list[str]:
        return self.page.evaluate("[...window.answersSeen]")

    def wait_thumbnails(self) -> None:
        self.page.wait_for_function(
            """() => [...document.querySelectorAll('#results > li')].every(li => {
                const img = li.querySelector('img.thumb');
                return !img || (img.complete && img.naturalWidth > 0);
            })"""
        )


@contextlib.contextmanager
def visit(browser, server, *, width=1280, height=900, **options):
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = Visit(page, context, server.url)

    def only_the_service(route):
        url = route.request.url
        if url == server.url or url.startswith(f"{server.url}/"):
            route.continue_()
        else:
            seen.outside.append(url)
            route.abort()

    def on_request(request):
        if request.method == "POST" and request.url.endswith("/predict"):
            body = request.post_data_buffer or b""
            found = re.search(rb'filename="([^"]*)"', body)
            with seen.lock:
                seen.in_flight += 1
                seen.most_in_flight = max(seen.most_in_flight, seen.in_flight)
                seen.uploads.append(
                    {
                        "request": request,
                        "file": found.group(1).decode() if found else None,
                        "authorization": request.headers.get("authorization"),
                        "sent": time.monotonic(),
                    }
                )

    def on_done(request):
        if request.method == "POST" and request.url.endswith("/predict"):
            with seen.lock:
                seen.in_flight -= 1

    def on_console(message):
        # Chromium logs every failed fetch() (4xx/5xx answers, refused connections): expected
        # here; requests outside the service are recorded by the route above.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            seen.errors.append(message.text)

    context.route("**/*", only_the_service)
    page.on("request", on_request)
    page.on("requestfinished", on_done)
    page.on("requestfailed", on_done)
    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.errors.append(f"page error: {error}"))
    try:
        yield seen
        assert seen.outside == [], f"the page asked for outside resources: {seen.outside}"
        assert seen.errors == [], f"script errors or policy violations: {seen.errors}"
    finally:
        context.close()


def _upload_statuses(seen: Visit) -> list[tuple[str, int, str | None, float]]:
    """(file, status, Retry-After, seconds since the request was sent) per /predict."""
    rows = []
    for upload in seen.uploads:
        response = upload["request"].response()
        if response is not None:
            rows.append((upload["file"], response.status, response.headers.get("retry-after"),
                         upload["sent"]))  # fmt: skip
    return rows


def test_home_redirects_to_the_page_which_names_its_limits(app_server):
    home = httpx.get(f"{app_server.url}/", timeout=30)
    assert home.status_code in (302, 307) and home.headers["location"] == "/app"
    page = httpx.get(f"{app_server.url}/app", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert 'href="./docs"' in page.text  # Swagger stays at /docs, linked from the page
    assert httpx.get(f"{app_server.url}/docs", timeout=30).status_code == 200
    slash = httpx.get(f"{app_server.url}/app/", timeout=30)
    assert slash.status_code in (302, 307) and slash.headers["location"] == "/app"
    config = httpx.get(f"{app_server.url}/app/config", timeout=30).json()
    assert config == {"max_bytes": 20 * 1024 * 1024, "max_files": 16, "min_side": 32,
                      "api_keys": False}  # fmt: skip
    for asset in ("app.js", "app.css"):
        assert httpx.get(f"{app_server.url}/web/{asset}", timeout=30).status_code == 200


def test_cat_dog_no_pet_and_damaged_file_each_beside_its_thumbnail(browser, app_server):
    cat, dog, scene = photos("cat")[0], photos("dog")[0], _nonpet_photo()
    damaged_source = photos("cat")[1]
    sizes = [Image.open(path).size for path in (cat, dog, scene, damaged_source)]
    assert len(set(sizes)) == 4, f"the thumbnails must be told apart by size: {sizes}"
    with visit(browser, app_server) as seen:
        seen.open()
        seen.choose([cat, dog, scene, _damaged(damaged_source)])
        seen.wait_finished(4)
        seen.wait_thumbnails()
        rows = seen.results()
        print("\nresults:", json.dumps(rows, indent=1))
        assert [row["name"] for row in rows] == [cat.name, dog.name, scene.name, "damaged.jpg"]
        assert [row["state"] for row in rows] == ["done", "done", "done", "error"]
        assert re.fullmatch(r"Cat( — please check: not sure)?", rows[0]["answer"])
        assert re.fullmatch(r"Dog( — please check: not sure)?", rows[1]["answer"])
        assert rows[2]["answer"] == "No cat or dog found"
        assert rows[3]["answer"] == DAMAGED
        for row in rows[:2]:
            assert re.fullmatch(r"Confidence \d{1,3}\.\d%", row["detail"]), row
        # Each answer sits beside its own photo's thumbnail (a damaged JPEG still has a
        # header, so the browser shows what it can of it, or says there is no preview).
        for row, size in zip(rows[:3], sizes[:3], strict=True):
            assert row["thumb"] == list(size), row
        assert rows[3]["thumb"] in (list(sizes[3]), None)
        assert rows[3]["thumb"] or rows[3]["preview"] == "No preview"
        assert seen.page.locator("#progress-text").inner_text() == "4 of 4 done"
        assert seen.page.locator("#announcer").inner_text().startswith("All 4 done.")
        assert len(seen.uploads) == 4  # one request per photo


def test_every_refusal_in_plain_words_and_the_good_photo_still_answered(
    browser, app_server, tmp_path
):
    too_large = tmp_path / "huge.jpg"  # 25 MiB, over the 20 MiB limit: refused before sending
    with too_large.open("wb") as out:
        out.write(photos("dog")[0].read_bytes())
        out.truncate(25 * 1024 * 1024)
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8), "orange").save(tiny, "PNG")
    files = [
        {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo\n" * 100},
        {"name": "tiny.png", "mimeType": "image/png", "buffer": tiny.getvalue()},
        {"name": "empty.jpg", "mimeType": "image/jpeg", "buffer": b""},
        too_large,
    ]
    dog = photos("dog")[2]
    with visit(browser, app_server) as seen:
        seen.open()
        seen.choose(files)
        # And one more photo dropped on the page (drag and drop) while those run.
        drop = seen.page.evaluate_handle(
            """([name, bytes]) => {
                const data = new DataTransfer();
                data.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/jpeg'}));
                return data;
            }""",
            [dog.name, list(dog.read_bytes())],
        )
        for event in ("dragenter", "dragover", "drop"):
            seen.page.dispatch_event("#drop-zone", event, {"dataTransfer": drop})
        seen.wait_finished(5)
        rows = seen.results()
        print("\nresults:", json.dumps(rows, indent=1))
        answers = {row["name"]: row["answer"] for row in rows}
        assert answers == {
            "notes.jpg": "This file is not an image",
            "tiny.png": "The photo is too small: it needs at least 32 pixels each way",
            "empty.jpg": "This file is empty",
            "huge.jpg": "Too large: 25 MB, the limit is 20 MB",
            dog.name: answers[dog.name],
        }
        assert re.fullmatch(r"Dog( — please check: not sure)?", answers[dog.name])
        assert next(row for row in rows if row["name"] == "notes.jpg")["preview"] == "No preview"
        # The file over the limit was never sent; each of the others was, on its own.
        assert sorted(upload["file"] for upload in seen.uploads) == sorted(
            ["notes.jpg", "tiny.png", "empty.jpg", dog.name]
        )
        # All done (the drop may have come after the others had finished: a run of its own).
        assert re.fullmatch(r"(\d) of \1 done", seen.page.locator("#progress-text").inner_text())


def _answer(label: str, confidence: float, needs_review: bool) -> dict:
    cat = confidence if label == "cat" else 1 - confidence
    return {"label": label, "confidence": confidence,
            "probabilities": {"cat": cat, "dog": 1 - cat}, "needs_review": needs_review,
            "novelty_score": 0.2, "novelty_threshold": 0.47, "model": "catsdogs:test"}  # fmt: skip


def test_unsure_answers_and_failing_service_in_words(browser, app_server):
    """What the full model seldom says on demand: here the test answers /predict itself (a
    real photo is sent each time), by the file's name, and counts the attempts."""
    attempts: dict[str, int] = {}
    refusal = {"error": "the model is loading", "reason": "loading"}

    def answer(route):
        body = route.request.post_data_buffer or b""
        name = re.search(rb'filename="([^"]*)"', body).group(1).decode()
        attempts[name] = attempts.get(name, 0) + 1
        first = attempts[name] == 1
        if name == "unsure-dog.jpg":
            route.fulfill(json=_answer("dog", 0.712, True))
        elif name == "unsure-cat.jpg":
            route.fulfill(json=_answer("cat", 0.64, True))
        elif name == "loading.jpg" and first:  # 503 with Retry-After, then an answer
            route.fulfill(status=503, json=refusal, headers={"Retry-After": "1"})
        elif name == "failing.jpg" and first:  # a 500, then (after "Try again") an answer
            route.fulfill(status=500, json={"error": "the service failed", "reason": "x"})
        elif name == "unreachable.jpg":
            route.abort("connectionrefused")
        else:
            route.fulfill(json=_answer("cat", 0.998, False))

    names = ["unsure-dog.jpg", "unsure-cat.jpg", "loading.jpg", "failing.jpg", "unreachable.jpg"]
    with visit(browser, app_server) as seen:
        seen.page.route("**/predict", answer)
        seen.open()
        seen.watch_answers()
        seen.choose([_named(photos("cat")[0], name) for name in names])
        seen.wait_finished(len(names))
        rows = {row["name"]: row for row in seen.results()}
        assert rows["unsure-dog.jpg"]["answer"] == "Dog — please check: not sure"
        assert rows["unsure-dog.jpg"]["detail"] == "Confidence 71.2%"
        assert rows["unsure-cat.jpg"]["answer"] == "Cat — please check: not sure"
        assert rows["loading.jpg"]["answer"] == "Cat" and attempts["loading.jpg"] == 2
        assert BUSY in seen.answers_seen()
        assert rows["failing.jpg"]["answer"] == "The service could not check this photo"
        assert rows["unreachable.jpg"]["answer"] == "Could not reach the service"
        assert attempts["unreachable.jpg"] == 4  # the first try and 3 more
        # Every photo failed by the service offers "Try again"; it works once the service does.
        card = seen.rows().filter(has_text="failing.jpg")
        card.get_by_role("button", name="Try failing.jpg again").click()
        seen.page.wait_for_function(
            """() => [...document.querySelectorAll('#results > li')].some(li =>
                li.textContent.includes('failing.jpg') && li.dataset.state === 'done')"""
        )
        assert card.locator(".answer").inner_text() == "Cat"
        assert seen.page.locator("#progress-text").inner_text() == "1 of 1 done"
        assert seen.page.get_by_role("button", name="Try unreachable.jpg again").is_visible()


def test_twenty_photos_in_order_with_progress(browser, app_server):
    chosen = [photo for pair in zip(photos("cat")[2:12], photos("dog")[2:12], strict=True)
              for photo in pair]  # fmt: skip
    # What the service itself answers for each photo (a ~99 % model may get one wrong): the
    # page must show exactly that, in words.
    words = {"cat": "Cat", "dog": "Dog", "other": "No cat or dog found"}
    expected = []
    for path in chosen:
        answer = httpx.post(f"{app_server.url}/predict", timeout=60,
                            files={"file": (path.name, path.read_bytes())})  # fmt: skip
        assert answer.status_code == 200, answer.text
        expected.append(words[answer.json()["label"]])
    truth = [path.name.split(".")[0].capitalize() for path in chosen]
    assert sum(map(str.__eq__, expected, truth)) >= 18  # a real model, at most 2 of 20 wrong
    with visit(browser, app_server) as seen:
        seen.open()
        seen.page.evaluate(
            """() => {
                window.progressSeen = [];
                const bar = document.getElementById('progress');
                const text = document.getElementById('progress-text');
                new MutationObserver(() => window.progressSeen.push(
                    {value: bar.value, max: bar.max, text: text.textContent}
                )).observe(text, {childList: true, characterData: true, subtree: true});
                window.longTasks = [];
                new PerformanceObserver(list => list.getEntries().forEach(
                    entry => window.longTasks.push(entry.duration))).observe({type: 'longtask'});
            }"""
        )
        started = time.monotonic()
        seen.choose(chosen)
        seen.page.wait_for_function(
            "() => document.getElementById('progress-text').textContent === '20 of 20 done'",
            timeout=TIMEOUT_MS,
        )
        elapsed = time.monotonic() - started
        progress = seen.page.evaluate("window.progressSeen")
        long_tasks = seen.page.evaluate("window.longTasks")
        rows = seen.results()
        print(f"\n20 photos in {elapsed:.1f} s; progress seen: {[p['text'] for p in progress]}")
        print(f"most requests in flight: {seen.most_in_flight}; long tasks (ms): {long_tasks}")
        assert [row["name"] for row in rows] == [path.name for path in chosen]  # in order
        got = [row["answer"].split(" — ")[0] for row in rows]
        assert got == expected, list(zip([path.name for path in chosen], got, strict=True))
        values = [entry["value"] for entry in progress]
        assert values == sorted(values) and values[-1] == 20
        between = [entry for entry in progress if 0 < entry["value"] < 20]
        assert between, f"no progress seen before the end: {progress}"
        assert all(entry["text"] == f"{entry['value']} of 20 done" for entry in progress)
        assert all(entry["max"] == 20 for entry in progress)
        assert len(seen.uploads) == 20 and 1 < seen.most_in_flight <= 4
        assert max(long_tasks, default=0) < 1000, f"the page froze: {long_tasks}"
        assert seen.page.locator("#announcer").inner_text().startswith("All 20 done.")


def test_csv_download_and_copy_hold_the_answers_on_the_page(browser, app_server):
    tricky = 'Tom, the "big" cat.jpg'  # a comma and quotes: the CSV must quote it
    formula = "=1+1.jpg"  # kept as text: a spreadsheet would run it
    files = [
        photos("cat")[0],
        photos("dog")[0],
        _nonpet_photo(),
        _damaged(photos("cat")[1]),
        _named(photos("cat")[3], tricky),
        _named(photos("dog")[3], formula),
    ]
    with visit(browser, app_server) as seen:
        seen.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                       origin=app_server.url)  # fmt: skip
        seen.open()
        seen.choose(files)
        seen.wait_finished(len(files))
        rows = seen.results()
        with seen.page.expect_download() as download_info:
            seen.page.click("#download-csv")
        download = download_info.value
        assert re.fullmatch(r"catsdogs-results-\d{8}-\d{6}\.csv", download.suggested_filename)
        raw = Path(download.path()).read_bytes()
        assert raw.startswith("\ufeff".encode())  # so that spreadsheets read it as UTF-8
        text = raw.decode("utf-8-sig")
        print("\n" + text)
        records = list(csv.DictReader(io.StringIO(text, newline="")))
        assert list(records[0]) == ["file", "answer", "confidence", "needs_review", "label",
                                    "error"]  # fmt: skip
        assert [record["file"] for record in records] == [
            *(row["name"] for row in rows[:5]),
            f"'{formula}",
        ]
        assert '"Tom, the ""big"" cat.jpg"' in text
        for record, row in zip(records, rows, strict=True):
            assert record["answer"] == row["answer"]
            if row["state"] == "error":
                assert (record["confidence"], record["needs_review"]) == ("", "")
                assert record["error"] == "corrupt"
            elif record["label"] == "other":
                assert record["needs_review"] == "yes" and record["confidence"] == ""
            else:
                assert record["label"] == row["answer"][:3].lower()
                shown = float(re.fullmatch(r"Confidence (\S+)%", row["detail"]).group(1))
                assert abs(float(record["confidence"]) * 100 - shown) < 0.11
                assert record["needs_review"] == ("yes" if "please check" in row["answer"]
                                                  else "no")  # fmt: skip
        seen.page.click("#copy-csv")
        seen.page.wait_for_function(
            "() => document.getElementById('copy-status').textContent.startsWith('Copied')"
        )
        assert seen.page.evaluate("navigator.clipboard.readText()") == text


def test_keyboard_alone_picks_photos_reads_and_downloads_the_results(browser, app_server):
    cat, dog = photos("cat")[4], photos("dog")[4]
    with visit(browser, app_server) as seen:
        page = seen.page
        # Playwright turns file chooser interception on without waiting for it: turn it on
        # now, well before the key press, or a busy machine can open the dialog before it.
        page.on("filechooser", lambda _: None)
        seen.open()
        visited = []
        focused = "document.activeElement.id || document.activeElement.tagName"
        for _ in range(10):
            page.keyboard.press("Tab")
            visited.append(page.evaluate(focused))
            if visited[-1] == "files":
                break
        assert visited[-1] == "files", f"Tab never reached the picker: {visited}"
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", "the focused picker shows no focus ring"
        with page.expect_file_chooser() as chooser_info:
            page.keyboard.press("Enter")
        chooser = chooser_info.value
        assert chooser.is_multiple()
        chooser.set_files([cat, dog])
        seen.wait_finished(2)
        # The results are words in a list (what a screen reader reads), not only colours.
        items = page.get_by_role("list").filter(has=page.locator(".result")).get_by_role("listitem")
        texts = [[line for line in text.split("\n") if line.strip()]
                 for text in items.all_inner_texts()]  # fmt: skip
        print("\nread by keyboard:", texts)
        assert [lines[0] for lines in texts] == [cat.name, dog.name]
        assert texts[0][1].startswith("Cat") and texts[1][1].startswith("Dog")
        # On with Tab to "Download CSV", and Enter.
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "download-csv":
                break
        assert page.evaluate("document.activeElement.id") == "download-csv"
        with page.expect_download() as download_info:
            page.keyboard.press("Enter")
        text = Path(download_info.value.path()).read_text(encoding="utf-8-sig")
        assert cat.name in text and dog.name in text


def _axe(page) -> dict:
    page.add_script_tag(path=str(AXE_JS))
    return page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")


def _axe_summary(results: dict) -> dict:
    impacts = {"critical": 0, "serious": 0, "moderate": 0, "minor": 0}
    for violation in results["violations"]:
        impacts[violation["impact"]] = impacts.get(violation["impact"], 0) + 1
    return {
        "violations_by_impact": impacts,
        "violations": [
            {"id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"]), "help": v["help"]}
            for v in results["violations"]
        ],
        "passed_rules": len(results["passes"]),
        "incomplete_rules": len(results["incomplete"]),
    }


def test_accessibility_scan_finds_no_serious_problem(browser, app_server, keyed_server,
                                                     artifacts):  # fmt: skip
    if not AXE_JS.exists():
        pytest.skip(f"{AXE_JS} missing: run `npm ci` in tests/browser (.ci/run does)")
    scans = {}
    # axe is injected as an inline script, which the page's own policy forbids: bypass it.
    with visit(browser, app_server, bypass_csp=True) as seen:
        seen.open()
        scans["empty page, 1280 px"] = _axe(seen.page)
        notes = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"x" * 100}
        seen.choose([photos("cat")[0], photos("dog")[0], _nonpet_photo(),
                     _damaged(photos("cat")[1]), notes])  # fmt: skip
        seen.wait_finished(5)
        scans["results, 1280 px"] = _axe(seen.page)
        seen.page.set_viewport_size({"width": 375, "height": 812})
        scans["results, 375 px"] = _axe(seen.page)
    with visit(browser, keyed_server, bypass_csp=True) as seen:
        seen.open()
        seen.page.wait_for_selector("#key-form:not([hidden])")
        scans["API key form, 1280 px"] = _axe(seen.page)
    summaries = {name: _axe_summary(results) for name, results in scans.items()}
    report = artifacts / "axe.json"
    report.write_text(json.dumps(summaries, indent=2))
    _publish(report)
    print("\naxe-core", scans["empty page, 1280 px"].get("testEngine", {}).get("version"))
    for name, summary in summaries.items():
        print(f"{name}: {summary['violations_by_impact']}, {summary['passed_rules']} rules "
              f"passed, {summary['incomplete_rules']} to check by hand")  # fmt: skip
        for violation in summary["violations"]:
            print(f"  {violation['impact']}: {violation['id']} ({violation['nodes']}) "
                  f"{violation['help']}")  # fmt: skip
    for name, summary in summaries.items():
        bad = [v for v in summary["violations"] if v["impact"] in ("serious", "critical")]
        assert bad == [], (name, bad)


def test_with_api_keys_the_page_asks_for_a_key_and_keeps_it_for_the_session(browser, keyed_server):
    from playwright.sync_api import expect

    files = [photos("cat")[5], photos("dog")[5], photos("cat")[6]]
    with visit(browser, keyed_server) as seen:
        seen.open()
        page = seen.page
        key_input = page.get_by_label("API key")
        expect(key_input).to_be_visible()
        assert key_input.get_attribute("type") == "password"
        seen.choose(files)
        expect(page.locator("#results .answer").first).to_have_text("Waiting for the API key")
        assert page.evaluate("document.activeElement.id") == "api-key"
        assert seen.uploads == []  # nothing is sent without a key

        # A wrong key: the service says 401, and the page asks again.
        key_input.fill("not-the-right-key-at-all")
        key_input.press("Enter")
        expect(page.locator("#key-message")).to_have_text(
            "That key was not accepted. Check it and enter it again."
        )
        expect(page.locator("#key-form")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('catsdogs.apiKey')") is None
        assert {s for _, s, _, _ in _upload_statuses(seen)} == {401}

        key_input.fill(KEY)
        page.get_by_role("button", name="Use key").click()
        seen.wait_finished(3)
        rows = seen.results()
        assert [row["answer"].split(" — ")[0] for row in rows] == ["Cat", "Dog", "Cat"], rows
        expect(page.locator("#key-form")).to_be_hidden()
        assert {u["authorization"] for u in seen.uploads[-3:]} == {f"Bearer {KEY}"}
        # Kept for this browser session only: sessionStorage, not localStorage nor a cookie.
        assert page.evaluate("sessionStorage.getItem('catsdogs.apiKey')") == KEY
        assert page.evaluate("localStorage.length") == 0
        assert page.evaluate("document.cookie") == "" and seen.context.cookies() == []

        # A reload in the same tab keeps it: no question, the upload just works.
        seen.open()
        expect(page.locator("#key-form")).to_be_hidden()
        expect(page.locator("#key-status")).to_be_visible()
        seen.choose([photos("dog")[6]])
        seen.wait_finished(1)
        assert seen.results()[0]["answer"].startswith("Dog")
    # A new browser session has no key: the page asks again.
    with visit(browser, keyed_server) as seen:
        seen.open()
        expect(seen.page.get_by_label("API key")).to_be_visible()


def test_a_busy_service_is_retried_after_its_retry_after(browser, keyed_server):
    chosen = [*photos("cat")[7:11], *photos("dog")[7:11]]
    with visit(browser, keyed_server) as seen:
        seen.context.add_init_script(f"sessionStorage.setItem('catsdogs.apiKey', '{KEY}')")
        seen.open()
        seen.watch_answers()
        seen.choose(chosen)
        seen.wait_finished(len(chosen))
        rows = seen.results()
        seen_texts = seen.answers_seen()
        statuses = _upload_statuses(seen)
        print("\n" + "\n".join(f"{f}: {s} Retry-After={r}" for f, s, r, _ in statuses))
        assert [row["state"] for row in rows] == ["done"] * len(chosen), rows
        assert BUSY in seen_texts
        refused = [row for row in statuses if row[1] == 429]
        assert refused and all(row[2] for row in refused)
        # Each photo refused with 429 went again, no sooner than Retry-After said.
        for name, _, retry_after, sent in refused:
            later = [row[3] for row in statuses if row[0] == name and row[3] > sent]
            assert later, f"{name} was not sent again"
            assert min(later) - sent >= float(retry_after) - 0.05, (name, retry_after)


def test_screenshots_at_phone_and_desktop_widths(browser, app_server, artifacts):
    files = [photos("cat")[0], photos("dog")[0], _nonpet_photo(), photos("cat")[8],
             _damaged(photos("cat")[1]), photos("dog")[8]]  # fmt: skip
    written = []
    for width, height in ((375, 812), (1280, 900)):
        with visit(browser, app_server, width=width, height=height) as seen:
            seen.open()
            seen.choose(files)
            seen.wait_finished(len(files))
            seen.wait_thumbnails()
            overflow = seen.page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= width, f"the page is {overflow} px wide at {width} px"
            path = artifacts / f"app-{width}.png"
            seen.page.screenshot(path=path, full_page=True)
            written += [path, _publish(path)]
    print("\nscreenshots:", *written, sep="\n  ")
