"""Wait until a topic's message (retained or new) contains a text; run inside the booted container by its test.

usage: python mqtt_wait.py TOPIC TEXT [TIMEOUT [USER PASSWORD]]; exits 0 when seen, 1 (with what it saw) when not.
"""

from __future__ import annotations

import sys
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main(argv: list[str]) -> int:
    """Subscribe to the topic on 127.0.0.1:1883 and wait for a message containing the text."""
    topic, text = argv[0], argv[1].encode()
    timeout = float(argv[2]) if len(argv) > 2 else 30.0
    seen: list[bytes] = []
    found = threading.Event()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        seen.append(bytes(msg.payload))
        if text in msg.payload:
            found.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv5)
    if len(argv) > 4:
        client.username_pw_set(argv[3], argv[4])
    client.on_connect = lambda c, u, f, reason, p: c.subscribe(topic, qos=1)
    client.on_message = on_message
    client.connect_async("127.0.0.1", 1883)
    client.loop_start()
    try:
        if found.wait(timeout):
            return 0
        sys.stderr.write(f"no message on {topic} containing {text!r} within {timeout:g} s; saw {seen[-3:]!r}\n")
        return 1
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
