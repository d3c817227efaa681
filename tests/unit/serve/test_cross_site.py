"""A keyless server on 127.0.0.1 is out of reach of web pages: a POST whose body is not declared
``application/json`` (what a cross-site form or ``fetch`` without preflight can send) is a 415,
a ``Host`` that is not a loopback name (DNS rebinding) is a 403, and no CORS header is sent
unless ``cors_origins`` names the origin."""

import json

import httpx
import pytest

from tests.unit.serve.conftest import live_server

BODY = json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 2, "temperature": 0})


@pytest.fixture(scope="module")
def keyless(registry):
    with live_server(registry) as s:
        yield s


@pytest.mark.parametrize("ctype", [None, "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx", "json", ""])
def test_post_without_a_json_content_type_is_415(keyless, ctype):
    url, app = keyless
    headers = {} if ctype is None else {"Content-Type": ctype}
    steps = app.state.batcher.steps
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/attention", "/v1/classify", "/v1/summarize"):
        r = httpx.post(f"{url}{path}", content=BODY, headers=headers, timeout=30)
        assert r.status_code == 415, (path, ctype, r.status_code, r.text)
        assert "application/json" in r.json()["error"]["message"]
    assert app.state.batcher.steps == steps  # nothing was decoded


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_are_served(keyless, ctype):
    url, _ = keyless
    r = httpx.post(f"{url}/v1/completions", content=BODY, headers={"Content-Type": ctype}, timeout=30)
    assert r.status_code == 200, r.text


def port_of(url):
    return url.rsplit(":", 1)[1]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "0.0.0.0:{port}", "10.0.0.1", "[::2]:{port}", "[::1",
                                  "localhost:abc", "127.1",
                                  "attacker.localhost.example:{port}", "[::1]x"])
def test_foreign_host_header_is_403(keyless, host):
    url, _ = keyless
    host = host.format(port=port_of(url))
    for method, path in (("GET", "/"), ("GET", "/v1/models"), ("GET", "/health"), ("POST", "/v1/completions")):
        r = httpx.request(method, f"{url}{path}", content=BODY, timeout=30,
                          headers={"Host": host, "Content-Type": "application/json"})
        assert r.status_code == 403, (host, path, r.status_code)
        assert "Host" in r.json()["error"]["message"] and r.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1", "127.0.0.1:{port}", "127.8.9.10:{port}",
                                  "[::1]", "[::1]:{port}", "LOCALHOST:{port}"])
def test_loopback_host_headers_are_served(keyless, host):
    url, _ = keyless
    r = httpx.get(f"{url}/v1/models", headers={"Host": host.format(port=port_of(url))}, timeout=30)
    assert r.status_code == 200, (host, r.text)


def test_a_public_bind_takes_any_host(registry):
    from lmlab.serve.app import create_app
    from lmlab.serve.limits import ServeConfig
    from starlette.testclient import TestClient

    app = create_app(registry, ServeConfig(host="0.0.0.0", api_key="sk-0123456789"))
    with TestClient(app, base_url="http://lmlab.example.org") as client:
        r = client.get("/v1/models", headers={"Authorization": "Bearer sk-0123456789"})
    assert r.status_code == 200


def test_no_cors_headers_by_default(keyless):
    url, _ = keyless
    origin = {"Origin": "https://evil.example"}
    r = httpx.options(f"{url}/v1/completions", timeout=30,
                      headers={**origin, "Access-Control-Request-Method": "POST",
                               "Access-Control-Request-Headers": "content-type"})
    assert not any(k.lower().startswith("access-control-") for k in r.headers), r.headers
    r = httpx.get(f"{url}/v1/models", headers=origin, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_origin_allows_that_origin_only(registry):
    from tests.unit.serve.conftest import KEY

    ok = "http://localhost:5173"
    with live_server(registry, api_key=KEY, cors_origins=[ok]) as (url, _):
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
        r = httpx.options(f"{url}/v1/completions", headers={"Origin": ok, **pre}, timeout=30)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ok
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = httpx.post(f"{url}/v1/completions", content=BODY, timeout=30,
                       headers={"Origin": ok, "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ok
        r = httpx.options(f"{url}/v1/completions", headers={"Origin": "https://evil.example", **pre}, timeout=30)
        assert r.headers.get("access-control-allow-origin") is None
        r = httpx.get(f"{url}/v1/models", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {KEY}"},
                      timeout=30)
        assert r.headers.get("access-control-allow-origin") is None


@pytest.mark.parametrize("origin", ["*", "localhost:3000", "http://x.example/path", "ftp://x.example", "", 5])
def test_cors_origin_must_be_an_origin(origin):
    from lmlab.errors import ConfigError
    from lmlab.serve.limits import ServeConfig

    with pytest.raises(ConfigError, match="cors_origins"):
        ServeConfig(cors_origins=[origin])


def test_cli_takes_cors_origin():
    from lmlab.cli import build_parser

    args = build_parser().parse_args(["serve", "m", "--cors-origin", "http://a.example", "--cors-origin",
                                      "https://b.example:8443"])
    assert args.cors_origin == ["http://a.example", "https://b.example:8443"]
