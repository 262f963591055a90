"""Key-safe ids, secrets and personal data: escaped key names (Python and Lua agree), Kafka security settings
passed to every client, secrets masked in settings, logs and errors, Redis AUTH, keyed pseudonyms."""
from __future__ import annotations

import logging
import subprocess
import sys
import uuid

import pytest
import redis
from conftest import ROOT, wait_for
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from schemas import Event
from stream.config.settings import Settings, SettingsError
from stream.core.storage.store import Keys, key_part
from stream.core.validate import InMessage
from stream.drivers.kafka import configure_security, consumer_conf, producer_conf
from stream.ops import stack
from stream.secrets import Pseudonymiser, RedactingFilter, redact_url

ids = st.text(alphabet=st.sampled_from(list("ab:{}%u") + ["é"]), max_size=10)


@hsettings(max_examples=500, deadline=None)
@given(ids, ids)
def test_key_names_are_injective_and_hash_tagged(a, b):
    ka, kb = Keys("rs:").user_keys(a), Keys("rs:").user_keys(b)
    if a != b:
        assert not set(ka) & set(kb)                      # no id names another id's keys
        assert Keys("rs:").item(a) != Keys("rs:").item(b)
    tag = ka[0][ka[0].index("{") + 1: ka[0].index("}")]
    assert all(k[k.index("{") + 1: k.index("}")] == tag for k in ka)   # one hash slot per user
    assert ":" not in key_part(a) and "{" not in key_part(a) and "}" not in key_part(a)


def test_lua_escapes_ids_like_python(redis_client):
    """The profile script builds item, co-visitation and category keys itself: same escaping as key_part."""
    from stream.core.storage.profile import ProfileStore
    from stream.core.storage.store import user_profile_dump
    prefix = f"rs:{uuid.uuid4().hex[:8]}:"
    store = ProfileStore(redis_client, prefix)
    weird = "it:em{1}%"
    cat = "a:b}"
    evs = [Event("e1", "u:1", "prev", "view", 1_730_000_000_000, context={"category": cat}),
           Event("e2", "u:1", weird, "click", 1_730_000_001_000, context={"category": cat})]
    store.apply(evs)
    k = Keys(prefix)
    assert redis_client.zscore(k.covis("prev"), weird) == 2.0
    assert redis_client.zscore(k.pop(cat), weird) == 2.0
    assert redis_client.hget(k.item(weird), "cat") == cat.encode()
    assert user_profile_dump(redis_client, prefix, "u:1")["seq"] == [weird.encode(), b"prev"]


def test_kafka_security_settings_reach_every_client():
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="app",
                 kafka_sasl_password="pw-123456", kafka_ssl_ca_location="/etc/ssl/certs/ca-certificates.crt")
    s.check()
    configure_security(s.kafka_security())
    try:
        for conf in (producer_conf("b:9092"), consumer_conf("b:9092", "g")):
            assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-256"
            assert conf["sasl.username"] == "app" and conf["sasl.password"] == "pw-123456"
            assert conf["ssl.ca.location"] == "/etc/ssl/certs/ca-certificates.crt"
        from confluent_kafka import Producer
        Producer(producer_conf("127.0.0.1:1"))            # librdkafka accepts the combination
    finally:
        configure_security({})
    assert "security.protocol" not in producer_conf("b:9092")
    with pytest.raises(SettingsError, match="RECSTREAM_KAFKA_SASL_MECHANISM"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT").check()
    with pytest.raises(SettingsError, match="RECSTREAM_KAFKA_SECURITY_PROTOCOL"):
        Settings(kafka_security_protocol="TLS").check()
    with pytest.raises(SettingsError, match="RECSTREAM_KEY_PREFIX"):
        Settings(key_prefix="rs{x}:").check()


def test_sasl_against_the_local_broker_is_refused_not_hung(stack):
    """The local broker (Tansu) speaks plaintext only: a SASL client fails fast with a broker error."""
    from stream.drivers.kafka import check_brokers
    from stream.errors import BrokerError
    configure_security({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                        "sasl.username": "u", "sasl.password": "p"})
    try:
        with pytest.raises(BrokerError):
            check_brokers(stack[0], timeout=3)
    finally:
        configure_security({})


def test_settings_command_masks_secrets():
    env = {"RECSTREAM_REDIS_URL": "redis://app:hunter2-secret@db:6379/0", "RECSTREAM_KAFKA_SASL_PASSWORD": "kafka-pw-9",
           "RECSTREAM_PSEUDONYMISE_KEY": "0123456789abcdef-key", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "stream.cli", "settings"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "hunter2-secret" not in out.stdout and "kafka-pw-9" not in out.stdout and "0123456789abcdef" not in out.stdout
    assert "redis://app:***@db:6379/0" in out.stdout and "RECSTREAM_KAFKA_SASL_PASSWORD" in out.stdout


def test_log_lines_and_errors_never_carry_the_redis_password(tmp_path):
    assert redact_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed at %s with %s",
                            ("redis://u:topsecret@h:1/0", "token-abcdef"), None)
    RedactingFilter(["token-abcdef"]).filter(rec)
    assert "topsecret" not in rec.getMessage() and "token-abcdef" not in rec.getMessage()
    # a worker pointed at a Redis that does not answer: the error line names the URL without the password
    env = {"RECSTREAM_REDIS_URL": f"redis://app:s3cr3t-pw@127.0.0.1:{stack.free_port()}/0", "PATH": "/usr/bin:/bin",
           "RECSTREAM_METRICS_PORT": "0"}
    out = subprocess.run([sys.executable, "-m", "stream.cli", "worker"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "s3cr3t-pw" not in out.stderr + out.stdout and "app:***@" in out.stderr, out.stderr[-1500:]


def test_redis_auth_with_a_password_and_an_acl_user(tmp_path):
    port = stack.free_port()
    proc = subprocess.Popen([stack.redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", "default-pw-1",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, preexec_fn=stack.die_with_parent)
    try:
        wait_for(lambda: stack.port_open("127.0.0.1", port), what="redis with a password")
        from stream.core.storage.store import connect
        with pytest.raises(ConnectionError) as err:
            connect(f"redis://:wrong-pw-1@127.0.0.1:{port}/0")
        assert "wrong-pw-1" not in str(err.value)
        c = connect(f"redis://:default-pw-1@127.0.0.1:{port}/0")
        c.execute_command("ACL", "SETUSER", "recstream", "on", ">app-pw-1", "~rs:*", "+@all")
        app = connect(f"redis://recstream:app-pw-1@127.0.0.1:{port}/0")
        from stream.core.pipeline import Pipeline
        p = Pipeline(app, "rs:")
        p.process_batch([InMessage(b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1730000000000}')])
        assert app.exists(Keys("rs:").user("u"))
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.set("other:key", 1)                      # the ACL user is confined to its prefix
    finally:
        proc.terminate()
        proc.wait(10)


def test_pseudonymised_user_ids_reach_neither_redis_nor_the_recommendations(redis_client):
    from stream.core.pipeline import Pipeline
    prefix = f"rs:{uuid.uuid4().hex[:8]}:"
    p = Pipeline(redis_client, prefix)
    ps = Pseudonymiser(b"k" * 16)
    p.pseudonymiser = ps
    msgs = [InMessage(b'{"event_id":"e%d","user_id":"alice@example.com","item_id":"i%d","type":"view","ts":%d}'
                      % (n, n % 3, 1730000000000 + n)) for n in range(5)]
    res = p.process_batch(msgs)
    assert res.recommendations and all(r.user_id == ps.user("alice@example.com") for r in res.recommendations)
    keys = [k.decode() for k in redis_client.scan_iter(match=prefix + "*")]
    assert keys and not any("alice" in k for k in keys)
    assert redis_client.exists(Keys(prefix).user(ps.user("alice@example.com")))
    with pytest.raises(ValueError):
        Pseudonymiser(b"short")
