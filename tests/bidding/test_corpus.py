"""Every request and response in the external OpenRTB corpus decodes and normalizes.

The corpus (real requests and responses from exchanges, Prebid Server fixtures and the IAB
spec) is not part of the repository: OPENRTB_CORPUS names its folder, and these tests are
skipped with the reason when it is unset. A file that is neither a request nor a response
(a Native payload, say) is skipped by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bidding.openrtb import decode_request, decode_response, normalize

CORPUS = os.environ.get("OPENRTB_CORPUS", "")


def _corpus_files() -> list[object]:
    if not CORPUS:
        return [pytest.param(None, id="corpus", marks=pytest.mark.skip(
            reason="OPENRTB_CORPUS is not set (scripts/test.sh sets it when the corpus exists)"))]
    return [pytest.param(path, id=path.name) for path in sorted(Path(CORPUS).glob("*.json"))]


def _kind(document: object) -> str:
    if isinstance(document, dict) and "imp" in document:
        return "request"
    if isinstance(document, dict) and ("seatbid" in document or "nbr" in document):
        return "response"
    return "other"


@pytest.mark.skipif(not CORPUS, reason="OPENRTB_CORPUS is not set")
def test_the_corpus_folder_holds_requests_and_responses():
    kinds = [_kind(json.loads(path.read_bytes())) for path in Path(CORPUS).glob("*.json")]
    assert kinds.count("request") > 0
    assert kinds.count("response") > 0


@pytest.mark.parametrize("path", _corpus_files())
def test_a_corpus_file_decodes(path: Path):
    body = path.read_bytes()
    document = json.loads(body)
    kind = _kind(document)
    if kind == "request":
        view = normalize(decode_request(body))
        assert view.request_id == str(document["id"])
        assert [imp.imp_id for imp in view.imps] == [str(imp["id"]) for imp in document["imp"]]
    elif kind == "response":
        response = decode_response(body)
        assert len(response.seatbid) == len(document.get("seatbid") or [])
        assert response.nbr == document.get("nbr")
    else:
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        pytest.skip(f"{path.name} is neither a bid request nor a bid response ({keys})")
