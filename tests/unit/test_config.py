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
