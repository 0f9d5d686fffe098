"""``MqttSink``: action events to an MQTT broker (Mosquitto, EMQX, Home Assistant's, AWS IoT ...).

Each event is one JSON message (``docs/events_format.md``) on ``edge_stad/<camera>/events``
(the ``topic`` template takes ``{camera}`` and ``{type}``), QoS 1 by default. The sink never
blocks or raises on the stream's thread because of the broker: paho-mqtt's network thread
connects, and reconnects with exponential back-off (``reconnect_delay``); meanwhile messages
wait in paho's bounded queue (``queue_size`` messages not yet acknowledged by the broker), and a
message that finds it full is dropped, counted in :meth:`MqttSink.stats` and logged (a warning
at the first drop of an outage, then at most every 10 s). The broker announces the sink's status
on ``edge_stad/<camera>/status``: a retained ``online`` at every connect, ``offline`` on
:meth:`MqttSink.close`, and ``offline`` as the last will when the process dies or the network
drops.

paho-mqtt is an optional dependency: ``pip install "edge_stad[mqtt]"``.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from typing import NamedTuple, Optional, Tuple
from urllib.parse import unquote, urlsplit

from edge_stad.errors import ConfigError, MissingDependencyError
from edge_stad.runtime.sinks.events import check_camera_name

log = logging.getLogger(__name__)

TOPIC = "edge_stad/{camera}/events"
STATUS_TOPIC = "edge_stad/{camera}/status"
SCHEMES = {"mqtt": 1883, "mqtts": 8883}
DROP_LOG_SECONDS = 10.0


class BrokerUrl(NamedTuple):
    """A parsed ``mqtt://`` or ``mqtts://`` (TLS) URL."""

    tls: bool
    host: str
    port: int
    username: Optional[str]
    password: Optional[str]

    def __str__(self):
        """The URL without the password (for logs)."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS, port 8883).

    User and password are percent-decoded; anything else (a path, a query, another scheme, a
    port outside 1..65535) is a :class:`ConfigError` naming the URL's form.
    """
    form = "mqtt://[user[:password]@]host[:port] or mqtts://... (TLS)"
    if not isinstance(url, str):
        raise ConfigError(f"broker URL must be a string {form}, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"broker URL {url!r}: {e}; expected {form}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"broker URL {url!r} is not {form}")
    if port == 0:
        raise ConfigError(f"broker URL {url!r}: port must be 1..65535")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return BrokerUrl(scheme == "mqtts", parts.hostname, port or SCHEMES[scheme], username, password)


def check_topic(template: str, camera: str) -> str:
    """A topic template's topic for ``camera`` (every event type), or a :class:`ConfigError`."""
    try:
        topics = {template.format(camera=camera, type=kind) for kind in ("started", "ended")}
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"MQTT topic template {template!r}: {e!r}; it may use {{camera}} and {{type}}") from None
    for topic in topics:
        if not topic or "+" in topic or "#" in topic or "\0" in topic or len(topic.encode()) > 65535:
            raise ConfigError(f"MQTT topic {topic!r} (from {template!r}) is not a topic one can publish to "
                              "(empty, or holds a wildcard + or #)")
    return template


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise MissingDependencyError("the MQTT sink needs paho-mqtt: pip install \"edge_stad[mqtt]\"") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise MissingDependencyError("the MQTT sink needs paho-mqtt >= 2.0: pip install -U \"edge_stad[mqtt]\"")
    return mqtt


class MqttSink:
    """Publish each event dict it is called with to the broker at ``url`` (an :class:`EventSink`).

    ``camera``: names the status topic (and the client id); events carry their own camera.
    ``username``/``password`` override the URL's; ``ca_certs`` (a CA bundle; the system's by
    default), ``certfile``/``keyfile`` (a client certificate) apply to ``mqtts://``.
    ``reconnect_delay``: ``(first, longest)`` seconds between attempts, doubling. ``close_timeout``:
    seconds :meth:`close` waits for the queue to reach the broker.
    """

    def __init__(self, url: str, camera: str = "camera", *, topic: str = TOPIC, status_topic: str = STATUS_TOPIC,
                 qos: int = 1, username: Optional[str] = None, password: Optional[str] = None,
                 ca_certs: Optional[str] = None, certfile: Optional[str] = None, keyfile: Optional[str] = None,
                 queue_size: int = 1000, keepalive: int = 30, reconnect_delay: Tuple[float, float] = (1, 30),
                 close_timeout: float = 5.0, client_id: Optional[str] = None):
        mqtt = _paho()
        self.broker = parse_broker_url(url)
        self.camera = check_camera_name(camera)
        self.topic = check_topic(topic, self.camera)
        self.status_topic = check_topic(status_topic, self.camera).format(camera=self.camera, type="status")
        if qos not in (1, 2):
            raise ConfigError(f"MQTT QoS must be 1 or 2, got {qos!r} (paho does not queue QoS 0 messages while the "
                              "broker is away: they would be lost)")
        if int(queue_size) < 1:
            raise ConfigError(f"queue_size must be >= 1 message, got {queue_size}")
        if (certfile or keyfile or ca_certs) and not self.broker.tls:
            raise ConfigError(f"TLS files given for {self.broker}: use an mqtts:// URL")
        self.qos, self.queue_size, self.close_timeout = qos, int(queue_size), float(close_timeout)
        self._mqtt = mqtt
        self._lock = threading.Lock()
        self._counts = {"published": 0, "dropped": 0, "connects": 0}
        self._sent = self._acknowledged = 0    # messages paho took (events and status), and the broker's acks
        self._connected = self._closed = False
        # Messages of a connection not up yet wait here, in order, until the broker's CONNACK: paho sends a
        # message published after its socket opens but before the CONNACK at once, ahead of the ones it
        # queued before the socket opened (seen on a loaded machine: events 8-11 before 0-7). Every
        # hand-over to paho holds _order, so the backlog goes out first and nothing overtakes it.
        self._backlog = deque()
        self._order = threading.Lock()
        self._outage = {"drops": 0, "logged_at": None, "unreachable": False}
        client = self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                            client_id=client_id or f"edge_stad-{self.camera}-{secrets.token_hex(3)}")
        client.max_queued_messages_set(self.queue_size + 2)   # room for the status messages
        client.reconnect_delay_set(*reconnect_delay)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        user = username if username is not None else self.broker.username
        if user is not None:
            client.username_pw_set(user, password if password is not None else self.broker.password)
        if self.broker.tls:
            client.tls_set(ca_certs=ca_certs, certfile=certfile, keyfile=keyfile)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(self.broker.host, self.broker.port, keepalive)
        client.loop_start()

    def __call__(self, event: dict) -> None:
        """Queue ``event`` for the broker; never blocks on the network, never raises for it."""
        with self._lock:
            full = self._sent - self._acknowledged >= self.queue_size
        if full:
            self._dropped(event, "the queue is full")
            return
        topic = self.topic.format(camera=event.get("camera", self.camera), type=event.get("type", "event"))
        rc = self._publish(topic, json.dumps(event, separators=(",", ":")))
        if rc is None:
            with self._lock:
                self._counts["published"] += 1
        else:
            self._dropped(event, self._mqtt.error_string(rc))

    def stats(self) -> dict:
        """``published`` (events queued or sent), ``dropped``, ``pending`` (messages the broker has not
        acknowledged yet, at most ``queue_size`` events), ``connected``, ``connects``."""
        with self._lock:
            return dict(self._counts, pending=self._sent - self._acknowledged, connected=self._connected)

    def close(self) -> None:
        """Wait up to ``close_timeout`` s for the queue to reach the broker, say ``offline``, disconnect."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.close_timeout
        self._wait(deadline)
        if self._connected:
            self._publish(self.status_topic, "offline", retain=True)
            self._wait(deadline)
        left = self.stats()["pending"]
        if left:
            log.warning("mqtt %s: closed with %d messages the broker never acknowledged", self.broker, left)
        self._client.disconnect()
        self._client.loop_stop()

    def _wait(self, deadline):
        while self.stats()["pending"] and time.monotonic() < deadline:
            time.sleep(0.01)

    def _publish(self, topic, payload, retain=False):
        """Hand a message to paho, or to the backlog while no connection is up; None if taken (sent, or
        queued while the broker is away), else paho's error. Counted before the call: paho acknowledges on
        its own thread, maybe before it returns."""
        with self._order:
            with self._lock:
                self._sent += 1
                waiting = not self._connected
            if waiting:
                self._backlog.append((topic, payload, retain))
                return None
            return self._hand_over(topic, payload, retain)

    def _hand_over(self, topic, payload, retain):
        rc = self._client.publish(topic, payload, qos=self.qos, retain=retain).rc
        if rc in (self._mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS, self._mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN):
            return None
        with self._lock:
            self._sent -= 1
        return rc

    def _dropped(self, event, reason):
        """Count a dropped event; log the first of an outage, then at most every DROP_LOG_SECONDS."""
        with self._lock:
            self._counts["dropped"] += 1
            self._outage["drops"] += 1
            now, last = time.monotonic(), self._outage["logged_at"]
            if last is not None and now - last < DROP_LOG_SECONDS:
                return
            self._outage["logged_at"] = now
            dropped = self._counts["dropped"]
        log.warning("mqtt %s: dropped event seq %s (%s: %d messages wait for the broker); %d dropped so far",
                    self.broker, event.get("seq"), reason, self.queue_size, dropped)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- paho's network thread ---------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("mqtt %s: the broker refused the connection: %s (retrying)", self.broker, reason_code)
            return
        with self._order:   # the backlog first, in order; then events go to paho directly
            while self._backlog:
                if self._hand_over(*self._backlog.popleft()) is not None:
                    log.warning("mqtt %s: paho refused a queued message", self.broker)
            with self._lock:
                self._connected = True
                self._counts["connects"] += 1
                drops, reconnect = self._outage["drops"], self._counts["connects"] > 1
                self._outage = {"drops": 0, "logged_at": None, "unreachable": False}
        self._publish(self.status_topic, "online", retain=True)
        if reconnect:
            log.warning("mqtt %s: reconnected; %d events were dropped while it was away", self.broker, drops)

    def _on_connect_fail(self, client, userdata):
        with self._lock:
            first, self._outage["unreachable"] = not self._outage["unreachable"], True
        if first:
            log.warning("mqtt %s: cannot connect; retrying with back-off, events wait (%d at most)",
                        self.broker, self.queue_size)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._lock:
            was, self._connected = self._connected, False
        if was and not self._closed:
            log.warning("mqtt %s: connection lost (%s); reconnecting with back-off, events wait (%d at most)",
                        self.broker, reason_code, self.queue_size)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            self._acknowledged += 1
