"""The BentoML service through its ASGI app (no server process): endpoints, 4xx reasons."""

from __future__ import annotations

import pytest

from tests.serve.helpers import INFO, item_id, make_bundle, service_client, user_id

pytest.importorskip("bentoml")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    bundle = make_bundle(tmp_path_factory.mktemp("asgi") / "bundle")
    with service_client(bundle) as c:
        yield c


def post(client, path: str, body) -> tuple[int, dict]:
    if isinstance(body, str | bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    return r.status_code, r.json()


def test_every_endpoint_answers_with_its_strategy(client) -> None:
    status, body = post(client, "/recommend", {"user_id": user_id(3), "k": 5})
    assert status == 200 and body["strategy"] == "model" and len(body["items"]) == 5
    status, body = post(
        client,
        "/recommend",
        {"user_id": "new", "k": 3, "context": {"event_type": "view", "timestamp": 1.7e9}},
    )
    assert status == 200 and body["strategy"] == "context_popularity"
    status, body = post(client, "/recommend/session", {"items": [item_id(12)], "k": 3})
    assert status == 200 and body["strategy"] == "item_aggregate"
    assert body["items"][0] == item_id(13)
    status, body = post(client, "/similar", {"item_id": item_id(4), "k": 3})
    assert status == 200 and body["strategy"] == "item_similarity"
    r = client.get("/model")
    assert r.status_code == 200
    info = r.json()
    assert info["name"] == "mf_bpr" and info["registry_version"] == INFO["registry_version"]
    assert info["data_hash"] == INFO["data_hash"] and info["metrics"] == INFO["metrics"]


def test_unknown_ids_take_the_cold_start_path(client) -> None:
    assert post(client, "/recommend", {"user_id": "ghost"})[1]["strategy"] == "popularity"
    status, body = post(client, "/recommend/session", {"items": ["ghost-1", "ghost-2"]})
    assert status == 200 and body["strategy"] == "popularity"
    assert post(client, "/recommend/session", {"items": []})[1]["strategy"] == "popularity"
    assert post(client, "/similar", {"item_id": "ghost"})[1]["strategy"] == "popularity"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/recommend", "{not json", None),
        ("/recommend", "", "user_id"),
        ("/recommend", {"user_id": 42}, "user_id"),
        ("/recommend", {"user_id": "u3", "k": "five"}, "k"),
        ("/recommend", {"user_id": "u3", "k": 0}, "k"),
        ("/recommend", {"user_id": "u3", "k": 11}, "k"),  # over the bundle's max_k (10)
        ("/recommend", {"user_id": "u3", "colour": "red"}, "colour"),
        ("/recommend", {"user_id": "u3", "context": {"event_type": "teleport"}}, "context"),
        ("/recommend/session", {"items": "i4"}, "items"),
        ("/recommend/session", {"items": ["i4"] * 9}, "items"),  # over max_session_length
        ("/recommend/session", {"items": ["i4"], "event_types": ["view", "view"]}, None),
        ("/recommend/session", {"items": ["i4"], "timestamps": ["yesterday"]}, "timestamps"),
        ("/recommend/session", [1, 2], None),
        ("/similar", {"k": 3}, None),
        ("/similar", {"metadata": {"title": 5}}, "metadata"),
    ],
)
def test_bad_requests_get_400_with_a_reason(client, path, body, field) -> None:
    status, answer = post(client, path, body)
    assert status == 400, answer
    assert answer["error"]
    if field is not None:
        assert any(d["loc"] and d["loc"][0] == field for d in answer["detail"]), answer
