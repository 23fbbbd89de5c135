"""Search sink construction: configuration checks, index creation bodies, templates, URLs and auth."""

import base64
import dataclasses
import hashlib

import orjson
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from worker import config
from worker.config import Config, SearchSection
from worker.errors import ConfigError
from worker.sinks import search
from worker.sinks.search.client import BasicAuth, HttpSettings, http_settings, split_url
from worker.sinks.search.docs import live_filter, meta_mapping
from worker.sinks.search.sink import index_setup, load_template


def _load(tmp_path, text):
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return config.load(path, env={})


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('url = "localhost:9200"', "search.url"),
        ('meta_field = "a.b"', "search.meta_field"),
        ('meta_field = ""', "search.meta_field"),
        ('rename = { status = "_stream" }', "search.rename"),
        ('index = ""', "search.index"),
        ("timeout_seconds = 0", "search.timeout_seconds"),
        ('include = ["a"]\nexclude = ["b"]', "search.exclude"),
    ],
)
def test_invalid_search_settings_name_their_key(tmp_path, body, key):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, f"[search]\n{body}\n")
    assert exc.value.key == key


def test_index_body_without_template_has_the_metadata_mapping_and_the_live_alias():
    setup = index_setup(SearchSection(index="orders", live_alias="orders-live"), None)
    assert setup.template is None
    assert setup.body == {
        "mappings": {"properties": {"_stream": meta_mapping()}},
        "aliases": {"orders-live": {"filter": live_filter("_stream")}},
    }


def test_an_index_body_template_is_merged_with_the_metadata_mapping():
    tpl = {
        "settings": {"number_of_shards": 2},
        "mappings": {"dynamic": "strict", "properties": {"a": {"type": "keyword"}}},
    }
    setup = index_setup(SearchSection(meta_field="m"), tpl)
    assert setup.body["settings"] == {"number_of_shards": 2}
    assert setup.body["mappings"]["dynamic"] == "strict"
    assert setup.body["mappings"]["properties"] == {"a": {"type": "keyword"}, "m": meta_mapping()}
    assert "m" not in tpl["mappings"]["properties"]  # the loaded template is not mutated


def test_a_composable_template_is_put_and_the_index_gets_only_the_metadata_mapping():
    tpl = {"index_patterns": ["orders*"], "template": {"mappings": {"properties": {"a": {"type": "keyword"}}}}}
    setup = index_setup(SearchSection(index="orders"), tpl)
    assert setup.template == tpl
    assert setup.template_name == "worker-orders"
    assert setup.body == {"mappings": {"properties": {"_stream": meta_mapping()}}}


def test_template_file_is_read_relative_to_the_configuration(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "orders.json").write_bytes(orjson.dumps({"mappings": {"properties": {}}}))
    cfg = _load(tmp_path, '[search]\ntemplate = "config/orders.json"\n')
    assert cfg.search is not None
    assert load_template(cfg, cfg.search) == {"mappings": {"properties": {}}}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"index_patterns": ["logs-*"], "template": {}}', "do not match"),
    ],
)
def test_template_problems_are_config_errors(tmp_path, content, reason):
    if content is not None:
        (tmp_path / "tpl.json").write_bytes(content)
    cfg = _load(tmp_path, '[search]\ntemplate = "tpl.json"\n')
    assert cfg.search is not None
    with pytest.raises(ConfigError) as exc:
        load_template(cfg, cfg.search)
    assert exc.value.key == "search.template"
    assert reason in exc.value.reason


def test_create_needs_a_url_and_the_section():
    with pytest.raises(ConfigError) as exc:
        search.create(Config(search=SearchSection(url="")))
    assert exc.value.key == "search.url"
    with pytest.raises(ConfigError) as exc:
        search.create(Config())
    assert exc.value.key == "search"


def test_split_url_takes_credentials_out_of_the_url():
    assert split_url("https://admin:p%40ss@localhost:9200/") == ("https://localhost:9200", "admin", "p@ss")
    assert split_url("http://[::1]:9200") == ("http://[::1]:9200", "", "")
    assert split_url("https://search.example.com/prefix/") == ("https://search.example.com/prefix", "", "")
    with pytest.raises(ConfigError):
        split_url("localhost:9200")


def _prepared(settings: HttpSettings) -> AWSRequest:
    """A bulk request as the client sends it: authenticated by ``settings``."""
    req = AWSRequest(
        method="POST",
        url="https://search.example.com/_bulk",
        data=b"{}\n",
        headers={"Content-Type": "application/json"},
    )
    assert settings.auth is not None
    settings.auth(req)
    return req


def test_basic_auth_from_the_url_or_the_settings():
    base, settings = http_settings(SearchSection(url="https://admin:secret@localhost:9200"), "us-east-1")
    assert base == "https://localhost:9200"
    assert settings.auth == BasicAuth("admin", "secret")
    _, settings = http_settings(
        SearchSection(url="https://localhost:9200", auth="basic", username="u", password="p"), "eu-west-1"
    )
    assert settings.auth == BasicAuth("u", "p")
    assert _prepared(settings).headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    _, settings = http_settings(SearchSection(url="https://localhost:9200"), "eu-west-1")
    assert settings.auth is None


def test_tls_options():
    _, settings = http_settings(SearchSection(url="https://h", verify_tls=False), "us-east-1")
    assert settings.verify is False
    _, settings = http_settings(SearchSection(url="https://h", ca_certs="/etc/ca.pem"), "us-east-1")
    assert settings.verify == "/etc/ca.pem"


@pytest.mark.parametrize("service", ["es", "aoss"])
def test_sigv4_signs_for_the_service_and_region_with_the_payload_hash(service):
    section = SearchSection(url="https://search.example.com", auth="sigv4", sigv4_service=service)
    creds = Credentials("AKIDEXAMPLE", "secret", "token")
    _, settings = http_settings(section, "eu-west-3", credentials=creds)
    headers = _prepared(settings).headers
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert f"/eu-west-3/{service}/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "token"
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(b"{}\n").hexdigest()
    region_override = dataclasses.replace(section, region="ap-northeast-1")
    _, settings = http_settings(region_override, "eu-west-3", credentials=creds)
    assert "/ap-northeast-1/" in _prepared(settings).headers["Authorization"]
