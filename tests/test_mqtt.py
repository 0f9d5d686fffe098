"""MqttSink against a real Mosquitto broker: order, a broker killed mid-stream, the last will, TLS with a
password, an unreachable broker (the end-to-end run with events and clips is in test_events.py)."""
import json
import logging
import shutil
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("paho.mqtt.client")
from mosquitto import MOSQUITTO, Mosquitto, Subscriber, session_broker, tls_files  # noqa: E402

if MOSQUITTO is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)", allow_module_level=True)

from edge_stad.errors import ConfigError  # noqa: E402
from edge_stad.runtime.sinks.mqtt import BrokerUrl, MqttSink, check_topic, parse_broker_url  # noqa: E402


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    yield from session_broker(tmp_path_factory)


def until(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def payloads(messages, topic):
    return [json.loads(p) for t, p, _ in messages if t == topic]


def unique_seqs(events):
    return list(dict.fromkeys(e["seq"] for e in events))   # QoS 1 is at least once: a resent duplicate counts once


# -- URL and topic checks -------------------------------------------------------------------------

hosts = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
                  st.ip_addresses(v=4).map(str))
secrets_ = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=12)


@given(st.booleans(), hosts, st.one_of(st.none(), st.integers(1, 65535)), st.one_of(st.none(), secrets_),
       st.one_of(st.none(), secrets_))
def test_broker_urls_round_trip(tls, host, port, user, password):
    from urllib.parse import quote

    auth = "" if user is None else quote(user, safe="") + ("" if password is None else ":" + quote(password, safe=""))
    url = f"{'mqtts' if tls else 'mqtt'}://{auth}{'@' if auth else ''}{host}{'' if port is None else f':{port}'}"
    parsed = parse_broker_url(url)
    assert parsed == BrokerUrl(tls, host, port or (8883 if tls else 1883), user, None if user is None else password)
    shown = f"{'mqtts' if tls else 'mqtt'}://{'' if user is None else user + '@'}{host}:{parsed.port}"
    assert str(parsed) == shown   # what logs show: never the password


@pytest.mark.parametrize("url", ["localhost:1883", "http://broker:1883", "mqtt://", "mqtt://host:0",
                                 "mqtt://host:99999", "mqtt://host/topic", "mqtt://host?x=1", "tcp://host", 1883])
def test_bad_broker_urls(url):
    with pytest.raises(ConfigError, match="mqtt://"):
        parse_broker_url(url)


def test_topic_templates():
    assert check_topic("site/{camera}/{type}", "door") == "site/{camera}/{type}"
    for bad, match in [("edge_stad/{cam}/events", "may use"), ("a/+/{camera}", "wildcard"), ("{type}/#", "wildcard"),
                       ("", "empty"), ("x/{0}", "may use")]:
        with pytest.raises(ConfigError, match=match):
            check_topic(bad, "door")
    with pytest.raises(ConfigError, match="QoS"):
        MqttSink("mqtt://127.0.0.1:1", qos=0)
    with pytest.raises(ConfigError, match="mqtts"):
        MqttSink("mqtt://127.0.0.1:1", ca_certs="ca.crt")


# -- against the broker ------------------------------------------------------------------------------

def test_events_arrive_in_order_with_their_topic_and_status(broker):
    subscriber = Subscriber(broker.port, "edge_stad/door/#")
    events = [{"schema": 1, "type": kind, "seq": i, "camera": "door"}
              for i, kind in enumerate(["started", "updated", "updated", "ended"] * 5)]
    with MqttSink(broker.url, "door") as sink:
        for event in events:
            sink(event)
        assert until(lambda: len(payloads(subscriber.messages, "edge_stad/door/events")) == len(events))
        assert sink.stats()["published"] == len(events) and sink.stats()["dropped"] == 0
    got = subscriber.wait_for(lambda m: ("edge_stad/door/status", "offline", False) in m)
    assert payloads(got, "edge_stad/door/events") == events   # in order, the JSON unchanged
    assert [p for t, p, _ in got if t == "edge_stad/door/status"] == ["online", "offline"]
    subscriber.close()
    later = Subscriber(broker.port, "edge_stad/door/status")   # a newcomer reads the retained status
    assert later.wait_for(lambda m: m) == [("edge_stad/door/status", "offline", True)]
    later.close()


def test_topic_template_places_events_by_type(broker):
    subscriber = Subscriber(broker.port, "site/#")
    with MqttSink(broker.url, "gate", topic="site/{camera}/{type}", status_topic="site/{camera}/alive") as sink:
        sink({"type": "started", "seq": 0, "camera": "gate"})
        sink({"type": "ended", "seq": 1, "camera": "gate"})
    got = subscriber.wait_for(lambda m: len(m) >= 4)
    assert [t for t, _, _ in got if t != "site/gate/alive"] == ["site/gate/started", "site/gate/ended"]
    assert [p for t, p, _ in got if t == "site/gate/alive"] == ["online", "offline"]
    subscriber.close()


def test_broker_killed_mid_stream_loses_nothing_within_the_queue_and_counts_the_rest(tmp_path, caplog):
    server = Mosquitto(tmp_path)
    # a persistent session: what the restarted broker gets before this subscriber is back waits for it
    subscriber = Subscriber(server.port, "edge_stad/cam/events", client_id="test-restart", persistent=True)
    queue, before, during = 30, 12, 50
    sink = MqttSink(server.url, "cam", queue_size=queue, reconnect_delay=(0.1, 0.5))
    event = {"type": "updated", "camera": "cam"}
    try:
        for i in range(before):
            sink(dict(event, seq=i))
        assert until(lambda: len(subscriber.messages) >= before and sink.stats()["pending"] == 0)
        server.kill()
        assert until(lambda: not sink.stats()["connected"])
        start = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="edge_stad.runtime.sinks.mqtt"):
            for i in range(before, before + during):
                sink(dict(event, seq=i))
        assert time.perf_counter() - start < 1.0   # never waits for the broker
        stats = sink.stats()
        assert (stats["published"], stats["dropped"], stats["pending"]) == (before + queue, during - queue, queue)
        drops = [r.getMessage() for r in caplog.records if "dropped event" in r.getMessage()]
        assert len(drops) == 1 and f"seq {before + queue}" in drops[0] and "queue is full" in drops[0]
        server.start()
        expected = list(range(before + queue))
        got = subscriber.wait_for(lambda m: unique_seqs(payloads(m, "edge_stad/cam/events")) == expected, 30)
        assert unique_seqs(payloads(got, "edge_stad/cam/events")) == expected   # in order, none lost
        assert until(lambda: sink.stats()["connects"] == 2 and sink.stats()["pending"] == 0)
        assert any(f"{during - queue} events were dropped" in r.getMessage() for r in caplog.records)
    finally:
        sink.close()
        subscriber.close()
        server.stop()


def test_last_will_says_offline_when_the_process_is_killed(broker):
    subscriber = Subscriber(broker.port, "edge_stad/child/status")
    code = ("import sys, time\n"
            "from edge_stad.runtime.sinks import MqttSink\n"
            f"sink = MqttSink({broker.url!r}, 'child')\n"
            "while not sink.stats()['connected']:\n    time.sleep(0.01)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert subscriber.wait_for(lambda m: m)[-1][:2] == ("edge_stad/child/status", "online")
        child.send_signal(signal.SIGKILL)
        child.wait()
        got = subscriber.wait_for(lambda m: len(m) >= 2)
        assert [p for _, p, _ in got] == ["online", "offline"]   # the broker published the will
    finally:
        child.kill()
        subscriber.close()
    later = Subscriber(broker.port, "edge_stad/child/status")
    assert later.wait_for(lambda m: m) == [("edge_stad/child/status", "offline", True)]   # retained
    later.close()


def test_tls_with_a_password(tmp_path):
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs the openssl and mosquitto_passwd commands (apt-get install openssl mosquitto)")
    ca, cert, key = tls_files(tmp_path)
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "camera", "s3cret:/@"], check=True)
    server = Mosquitto(tmp_path, f"allow_anonymous false\npassword_file {passwords}\ncafile {ca}\ncertfile {cert}\n"
                                 f"keyfile {key}\n", scheme="mqtts")
    try:
        with MqttSink(server.url.replace("://", "://camera:s3cret%3A%2F%40@"), "tls", ca_certs=ca) as sink:
            assert until(lambda: sink.stats()["connected"])
            sink({"type": "started", "seq": 0, "camera": "tls"})
            assert until(lambda: sink.stats()["pending"] == 0)
        with MqttSink(server.url, "tls", username="camera", password="wrong", ca_certs=ca,
                      reconnect_delay=(0.1, 0.2)) as refused:
            time.sleep(0.5)
            assert not refused.stats()["connected"]
        with MqttSink(server.url.replace("mqtts", "mqtt"), "plain", username="camera", password="s3cret:/@",
                      reconnect_delay=(0.1, 0.2), close_timeout=0.2) as plain:   # a TLS port does not speak plain MQTT
            time.sleep(0.5)
            assert not plain.stats()["connected"]
    finally:
        server.stop()


def test_unreachable_broker_does_not_stall_the_stream():
    from mosquitto import free_port

    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}", "cam", queue_size=5, close_timeout=0.2)
    start = time.perf_counter()
    for i in range(200):
        sink({"type": "updated", "seq": i, "camera": "cam"})
    assert time.perf_counter() - start < 1.0
    assert sink.stats()["published"] == 5 and sink.stats()["dropped"] == 195 and not sink.stats()["connected"]
    sink.close()
