import pytest

from stream.config.settings import Settings, SettingsError, env_table


def test_env_overrides_and_types():
    s = Settings.from_env({"RECSTREAM_BROKERS": "kafka:9092", "RECSTREAM_BATCH_SIZE": "500",
                           "RECSTREAM_LOG_EVERY_S": "2.5", "RECSTREAM_GROUP_ID": "g"})
    assert (s.brokers, s.batch_size, s.log_every_s, s.group_id) == ("kafka:9092", 500, 2.5, "g")


@pytest.mark.parametrize("env,needle", [
    ({"RECSTREAM_BATCH_SIZE": "lots"}, "RECSTREAM_BATCH_SIZE"),
    ({"RECSTREAM_DRIVER": "spark"}, "RECSTREAM_DRIVER"),
    ({"RECSTREAM_REDIS_URL": "localhost:6379"}, "RECSTREAM_REDIS_URL"),
    ({"RECSTREAM_TOP_K": "0"}, "RECSTREAM_TOP_K"),
    ({"RECSTREAM_RANKER": "xgboost"}, "RECSTREAM_RANKER"),
    ({"RECSTREAM_RANKER": "lr:heavy"}, "RECSTREAM_RANKER"),
])
def test_bad_settings_name_the_variable(env, needle):
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env(env)


def test_settings_are_frozen_and_tabled():
    s = Settings.from_env({})
    with pytest.raises(Exception):
        s.brokers = "x"
    names = [n for n, _ in env_table()]
    assert "RECSTREAM_BROKERS" in names and "RECSTREAM_REDIS_URL" in names and "RECSTREAM_GROUP_ID" in names


def test_every_setting_is_documented():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    missing = [n for n, _ in env_table() if f"`{n}`" not in doc]
    assert not missing, f"docs/settings.md lacks {missing}"
