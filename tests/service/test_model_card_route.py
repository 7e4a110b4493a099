"""GET /model-card (the HTML page) and /model-card.md (its markdown): through a real `bentoml
serve` of the session's model, and, for a model trained before model cards, a JSON 404."""

import httpx
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from catsdogs import pages
from catsdogs.settings import ServiceSettings


def test_model_card_page_and_markdown_are_served(server):
    page = httpx.get(f"{server.url}/model-card", timeout=30)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert server.model_tag in page.text
    assert "<h2>Evaluation</h2>" in page.text
    # Self-contained: inline CSS, the reliability diagram as a data: URL, no other address.
    assert 'src="data:image/png;base64,' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    text = httpx.get(f"{server.url}/model-card.md", timeout=30)
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/markdown")
    assert text.text.startswith(f"# Model card: {server.model_tag}\n")


def test_model_card_of_a_model_without_one_is_a_json_404(tmp_path):
    app = pages.pages_app(
        lambda _: JSONResponse({}), ServiceSettings(), lambda name: tmp_path / name
    )
    with TestClient(app) as client:
        for path in pages.MODEL_CARD_ROUTES:
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.json()["reason"] == "no_model_card"
    (tmp_path / "model_card.md").write_text("# Model card: catsdogs:old\n")
    with TestClient(app) as client:
        assert client.get("/model-card.md").text == "# Model card: catsdogs:old\n"
        assert client.get("/model-card").status_code == 404
