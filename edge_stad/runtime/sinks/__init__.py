"""Where action events go: :class:`ActionEvents` turns a Runtime's tubes into events (started,
updated, ended, discarded; ``docs/events_format.md``), hands them to sinks (:class:`MqttSink`, or
any callable) and writes event clips (:class:`~edge_stad.runtime.sinks.clips.ClipRecorder`).

Imports without paho-mqtt; :class:`MqttSink` raises :class:`~edge_stad.errors.MissingDependencyError`
where it is missing (``pip install "edge_stad[mqtt]"``).
"""
from edge_stad.runtime.sinks.events import SCHEMA, ActionEvents, EventSink, engine_identity
from edge_stad.runtime.sinks.mqtt import MqttSink, parse_broker_url

__all__ = ["SCHEMA", "ActionEvents", "EventSink", "MqttSink", "engine_identity", "parse_broker_url"]
