"""A real Mosquitto broker on a free loopback port, and a paho subscriber that records what arrives.

The broker keeps its state on disk after every change (``autosave_interval 1``), so a
subscriber's persistent session (``clean_session=False``) survives a SIGKILL and restart: what
is published after the restart waits for the subscriber even if the publisher reconnects first.
"""
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

MOSQUITTO = shutil.which("mosquitto") or (shutil.which("mosquitto", path="/usr/sbin:/sbin"))


def session_broker(tmp_path_factory):
    """A test module's ``broker`` fixture: ``yield from session_broker(tmp_path_factory)``."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    pytest.importorskip("paho.mqtt.client")
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield server
    server.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, folder, listener="allow_anonymous true\n", scheme="mqtt"):
        """``listener``: the settings of its one listener (authentication, TLS)."""
        self.folder, self.port = folder, free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.config = folder / "mosquitto.conf"
        # as root, mosquitto would switch to the user mosquitto, who cannot read pytest's private folders
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(f"{user}persistence true\npersistence_location {folder}/\nautosave_interval 1\n"
                               f"autosave_on_changes true\nlistener {self.port} 127.0.0.1\n{listener}")
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port in 10 s")

    def kill(self):
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Subscriber:
    """A paho client that subscribes to ``topic`` and keeps every message, (re)subscribing on each connect."""

    def __init__(self, port, topic, client_id=None, persistent=False):
        import paho.mqtt.client as mqtt

        self.messages, self.subscribed = [], threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode(), m.retain))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"

    def wait_for(self, done, timeout=15.0):
        """The messages once ``done(messages)`` holds, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.messages) and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def tls_files(folder):
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl): ``(ca, cert, key)`` paths."""
    ca, ca_key, cert, key, csr = (str(folder / n) for n in ("ca.crt", "ca.key", "server.crt", "server.key", "s.csr"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
                     "-subj", "/CN=edge_stad test CA"],
                    ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
                    ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                     "-days", "2", "-extfile", str(ext)]):
        subprocess.run(["openssl", *command], check=True, capture_output=True)
    return ca, cert, key
