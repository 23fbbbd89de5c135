import pytest

from worker import config
from worker.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "w.toml"
    p.write_text(text)
    return p


def test_defaults_and_bundled_profiles_validate():
    assert config.load(None, env={}).pipeline.max_batch_records == 1000
    for name in ("config/worker.toml", "config/local.toml"):
        cfg = config.load(name, env={})
        assert cfg.aggregates and cfg.search and cfg.archive


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[pipeline]\nretry_attempts = 'x'", "pipeline.retry_attempts", "must be an integer"),
        ("[pipeline]\nretry_atempts = 3", "pipeline.retry_atempts", "unknown key"),
        ("[worker]\nlog_format = 'xml'", "worker.log_format", "must be one of"),
        ("[[aggregates]]\nname='a'\ntable='T'\ngroup_by=['s']", "aggregates[0].metrics", "required"),
        (
            "[[aggregates]]\nname='a'\ntable='T'\ngroup_by=['s']\nmetrics={x='avg(total)'}",
            "aggregates[0].metrics.x",
            "sum(attribute",
        ),
        ("[archive]\nprefix = 'p/'", "archive.bucket", "required"),
        ("[search]\nauth = 'basic'", "search.username", "required"),
        ("[deadletter]\nurl = ''", "deadletter.url", "must not be empty"),
        ("worker = 3", "worker", "must be a table"),
    ],
)
def test_errors_name_the_key(tmp_path, text, key, reason):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text), env={})
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(write(tmp_path, text)) in str(err.value)


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "[[aggregates]]\nname='a'\ntable='T'\ngroup_by=['s']\nmetrics={n='count'}")
    env = {
        "WORKER__PIPELINE__RETRY_ATTEMPTS": "3",
        "WORKER__SEARCH__URL": "http://localhost:9200",
        "WORKER__AGGREGATES__0__TABLE": "Other",
        "WORKER__WORKER__LOG_FORMAT": "json",
        "UNRELATED": "x",
    }
    cfg = config.load(path, env=env)
    assert cfg.pipeline.retry_attempts == 3
    assert cfg.search is not None and cfg.search.url == "http://localhost:9200"
    assert cfg.aggregates[0].table == "Other"
    assert cfg.worker.log_format == "json"


def test_bad_environment_value_names_the_key():
    with pytest.raises(ConfigError) as err:
        config.load(None, env={"WORKER__PIPELINE__MAX_BATCH_RECORDS": "0"})
    assert err.value.key == "pipeline.max_batch_records"


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(write(tmp_path, "[worker"), env={})
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml", env={})


# -- typed environment values, region, application name, names and URLs ------------------


def test_environment_value_is_converted_by_its_field_type():
    env = {
        "WORKER__SEARCH__PASSWORD": "12345",  # a string field: verbatim, never a number
        "WORKER__SEARCH__USERNAME": "true",
        "WORKER__SEARCH__VERIFY_TLS": "false",
        "WORKER__SEARCH__TIMEOUT_SECONDS": "2",
        "WORKER__SEARCH__INCLUDE": "a,b.c",
        "WORKER__SEARCH__RENAME": '{ a = "b" }',
        "WORKER__PIPELINE__MAX_BATCH_RECORDS": "1_000",
        "WORKER__KCL__PROPERTIES__maxLeasesForWorker": "7",
    }
    cfg = config.load(None, env=env)
    assert cfg.search is not None
    assert cfg.search.password == "12345"
    assert cfg.search.username == "true"
    assert cfg.search.verify_tls is False
    assert cfg.search.timeout_seconds == 2.0 and isinstance(cfg.search.timeout_seconds, float)
    assert cfg.search.include == ["a", "b.c"]
    assert cfg.search.rename == {"a": "b"}
    assert cfg.pipeline.max_batch_records == 1000
    assert cfg.kcl.properties == {"maxLeasesForWorker": 7}  # case kept: KCL property names


@pytest.mark.parametrize(
    ("name", "raw", "key", "reason"),
    [
        ("WORKER__PIPELINE__RETRY_ATTEMPTS", "three", "pipeline.retry_attempts", "must be an integer"),
        ("WORKER__SEARCH__VERIFY_TLS", "maybe", "search.verify_tls", "must be true or false"),
        ("WORKER__PIPELINE__MAX_BATCH_RECORDS", "0", "pipeline.max_batch_records", "must be > 0"),
        ("WORKER__WORKER__LOG_LEVEL", "loud", "worker.log_level", "must be one of"),
        ("WORKER__SEARCH__RENAME", "{ a = ", "search.rename", "TOML inline table"),
    ],
)
def test_environment_error_names_the_variable_not_the_file(tmp_path, name, raw, key, reason):
    path = write(tmp_path, "[worker]\ntable = 'Orders'\n")
    with pytest.raises(ConfigError) as err:
        config.load(path, env={name: raw})
    assert err.value.key == key
    assert reason in err.value.reason
    assert err.value.source == name
    assert str(path) not in str(err.value)


@pytest.mark.parametrize(
    ("file_region", "env", "expected"),
    [
        ("eu-west-1", {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "us-west-2"}, "eu-west-1"),
        (None, {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "us-west-2"}, "ap-south-1"),
        (None, {"AWS_DEFAULT_REGION": "us-west-2"}, "us-west-2"),
        (None, {"AWS_DEFAULT_REGION": "us-west-2", "WORKER__WORKER__REGION": "sa-east-1"}, "sa-east-1"),
    ],
)
def test_region_precedence(tmp_path, file_region, env, expected):
    text = "[worker]\ntable = 'Orders'\n" + (f"region = '{file_region}'\n" if file_region else "")
    assert config.load(write(tmp_path, text), env=env).worker.region == expected


def test_no_region_anywhere_is_a_start_up_error():
    cfg = config.load(None, env={"WORKER__WORKER__TABLE": "Orders"})
    assert cfg.worker.region == ""
    with pytest.raises(ConfigError) as err:
        config.require_runtime(cfg)
    assert err.value.key == "worker.region"
    assert "AWS_REGION" in err.value.reason


def test_application_name_is_derived_from_the_table_never_shared():
    a = config.load(None, env={"WORKER__WORKER__TABLE": "Orders"})
    b = config.load(None, env={"WORKER__WORKER__TABLE": "Payments"})
    assert a.kcl.application_name != b.kcl.application_name
    assert "Orders" in a.kcl.application_name and "Payments" in b.kcl.application_name
    given = config.load(None, env={"WORKER__WORKER__TABLE": "Orders", "WORKER__KCL__APPLICATION_NAME": "mine"})
    assert given.kcl.application_name == "mine"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[worker]\ntable = ''", "worker.table"),
        ("[worker]\nregion = ''", "worker.region"),
        ("[worker]\nregion = 'Europe'", "worker.region"),
        ("[worker]\ntable = 'a b'", "worker.table"),
        ("[kcl]\napplication_name = ''", "kcl.application_name"),
        ("[deadletter]\nurl = 's3:///prefix/'", "deadletter.url"),
        ("[deadletter]\nurl = 's3://Bad_Bucket/x/'", "deadletter.url"),
        ("[aws]\nendpoint_url = 'localhost:4566'", "aws.endpoint_url"),
        ("[aws]\ns3_endpoint_url = 'http://'", "aws.s3_endpoint_url"),
        ("[search]\nurl = 'ftp://x'", "search.url"),
        ("[search]\nindex = 'Orders'", "search.index"),
        ("[search]\nindex = 'a,b'", "search.index"),
        ("[archive]\nbucket = 's3://b'", "archive.bucket"),
        ("[[aggregates]]\nname='a'\ntable=''\ngroup_by=['s']\nmetrics={n='count'}", "aggregates[0].table"),
    ],
)
def test_names_and_urls_are_validated(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text), env={})
    assert err.value.key == key


def test_a_url_password_never_appears_in_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(None, env={"WORKER__AWS__ENDPOINT_URL": "ftp://user:hunter2@host"})
    assert "hunter2" not in str(err.value)
