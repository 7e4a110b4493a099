"""The service as a person meets it: the API docs page (Swagger UI) in a real (headless)
Chromium, uploading a cat photo through "Try it out" and reading the answer off the page,
with every request outside the service blocked and recorded: the page must make none."""

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, photos

TIMEOUT_MS = 180_000  # a busy 2-core machine: the first prediction may wait for a batch

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's chromium package (.ci/run does)",
)


def test_swagger_ui_classifies_an_uploaded_cat_photo(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    photo = photos("cat")[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(TIMEOUT_MS)
            outside: list[str] = []

            def only_the_service(route):
                if route.request.url.startswith(server.url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_the_service)
            page.goto(f"{server.url}/docs", wait_until="networkidle")  # "/" is the upload page

            # The /predict operation (not /predict_batch): expand it, then "Try it out".
            summary = page.locator(".opblock-summary-path[data-path='/predict']")
            operation = page.locator(".opblock").filter(has=summary)
            summary.click()  # waits for Swagger UI to render the operations
            operation.get_by_role("button", name="Try it out").click()
            operation.locator("input[type=file]").set_input_files(photo)
            operation.get_by_role("button", name="Execute").click()

            body = operation.locator(".live-responses-table .response-col_description pre")
            expect(body.first).to_contain_text('"label"', timeout=TIMEOUT_MS)
            expect(body.first).to_contain_text('"cat"', timeout=TIMEOUT_MS)
            operation.locator(".live-responses-table").scroll_into_view_if_needed()
            page.screenshot(path=tmp_path / "swagger_predict.png", full_page=True)

            assert '"label": "cat"' in body.first.inner_text()
            status = operation.locator(".live-responses-table tr.response .response-col_status")
            assert status.first.inner_text().strip() == "200"
            assert outside == [], f"the docs page asked for outside resources: {outside}"
        finally:
            browser.close()
