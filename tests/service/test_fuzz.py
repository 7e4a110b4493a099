"""Schemathesis against a real `bentoml serve`, bounded in time: thousands of generated
requests (from the service's own OpenAPI document) to every operation, failing on any 5xx or
any answer that its documentation does not describe (status, content type, headers, body).

Left out: `positive_data_acceptance`, which expects every schema-valid body to be accepted,
and a schema-valid binary is rarely a decodable photo (a 1x1 PNG is refused as too small)."""

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

FUZZ_SECONDS = 60
SEED = 20261201


def test_generated_requests_never_break_the_service(server, tmp_path):
    schemathesis = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [str(schemathesis), "run", f"{server.url}/docs.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-time", str(FUZZ_SECONDS),
         "--seed", str(SEED), "--workers", "1", "--request-timeout", "30",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 240, cwd=tmp_path,
    )  # fmt: skip
    summary = result.stdout[-4000:]
    print(summary)
    assert result.returncode == 0, summary
    [report] = tmp_path.glob("junit-*.xml")
    suite = ElementTree.parse(report).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) >= 6, "every operation tested"  # upload routes, health, metrics
    assert not suite.findall(".//failure") and not suite.findall(".//error")
    assert " generated, " in summary and " passed" in summary
