"""The README's generated parts are current, and its promises about the CLI hold."""

from pathlib import Path

from worker import config_docs
from worker.config_convert import ENV_PREFIX

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands():
    block = README.split("```sh\n", 1)[1].split("```", 1)[0]
    assert block.splitlines()[0].startswith("bash .ci/dev local")
    assert block.splitlines()[1].startswith("bash .ci/dev test")


def test_the_key_table_in_the_readme_is_current():
    current = config_docs.key_table()
    assert current in README, "README's configuration table is stale: python -m worker.config_docs README.md"


def test_every_key_is_documented_and_every_documented_key_exists():
    keys = [k for k, *_ in config_docs.schema_keys()]
    assert len(keys) == len(set(keys))
    assert sorted(config_docs.DOCS) == sorted(keys)
    assert all(config_docs.DOCS[k] for k in keys)


def test_the_table_names_each_key_with_its_variable():
    rows = {k: env for k, _tp, _default, env in config_docs.schema_keys()}
    assert rows["search.password"] == f"{ENV_PREFIX}SEARCH__PASSWORD"
    assert rows["aggregates[].table"] == f"{ENV_PREFIX}AGGREGATES__<n>__TABLE"
    assert rows["kcl.http_port"] == f"{ENV_PREFIX}KCL__HTTP_PORT"


def test_replace_table_rewrites_only_between_the_markers():
    text = f"before\n{config_docs.BEGIN}\nold\n{config_docs.END}\nafter\n"
    assert config_docs.replace_table(text) == f"before\n{config_docs.key_table()}\nafter\n"


def test_every_metric_series_is_listed_in_the_readme(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from worker import metrics

    text = metrics.render(metrics.Collector(tmp_path).collect(), launcher_up=True).decode()
    names = {f.name for f in text_string_to_metric_families(text) if f.name.startswith("worker_")}
    assert names  # the exposition has worker_ series at all
    for name in names:
        assert f"`{name}" in README, f"{name} is not listed in the README"
