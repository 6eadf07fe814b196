"""Home Assistant's image entity: annotated JPEGs every mqtt.snapshot_seconds when asked for, none by default."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_fer.messaging.homeassistant import discovery_topic
from tests.broker import Broker, Subscriber
from tests.conftest import paste_faces, write_video
from tests.test_daemon import finish, start_daemon, write_config
from tests.test_mqtt_ha import check_device_discovery

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto is not installed (apt-get install mosquitto)")


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def face_clip(tmp_path: Path, clear_faces) -> tuple[Path, np.ndarray]:
    """4 s of one happy face at 15 fps, and its frame."""
    frame, _ = paste_faces([clear_faces["happy"][0]], size=180)
    return write_video(tmp_path / "face.avi", [frame] * 60), frame


def run_daemon(tmp_path: Path, broker: Broker, video: Path, **mqtt: float) -> Subscriber:
    """The daemon on the clip to its end; a subscriber that heard it all (closed)."""
    sub = Subscriber(broker.port)
    try:
        code, err = finish(start_daemon(write_config(tmp_path / "c.yaml", video, broker.port, mqtt=mqtt)), 60)
        assert code == 0 and "Traceback" not in err, err
        assert sub.wait_for(lambda s: [m.payload for m in s.on("testcam/availability")][-1:] == [b"offline"], 10)
    finally:
        sub.close()
    return sub


def colourful(image: np.ndarray) -> np.ndarray:
    """Per pixel, the spread of its channels: 0 for gray, large for a coloured line."""
    return image.max(axis=2).astype(int) - image.min(axis=2).astype(int)


def test_snapshots_are_annotated_jpegs_for_the_image_entity_and_not_kept_on_the_broker(
        tmp_path: Path, broker: Broker, face_clip: tuple[Path, np.ndarray]) -> None:
    video, frame = face_clip
    sub = run_daemon(tmp_path, broker, video, snapshot_seconds=0.5)
    discovery = sub.on(discovery_topic("homeassistant", "testcam"))[-1]
    check_device_discovery(discovery.topic, discovery.json())
    image = discovery.json()["components"]["snapshot"]
    assert (image["platform"], image["image_topic"]) == ("image", "edge_fer/testcam/snapshot")
    pictures = sub.on("edge_fer/testcam/snapshot")
    assert len(pictures) >= 2, len(pictures)  # 4 s of video, one every 0.5 s once a frame is in
    assert not any(m.retain for m in pictures)
    start = next(m.json() for m in sub.on("edge_fer/testcam/events") if m.json()["type"] == "start")
    x, y, w, h = start["box"]
    for m in pictures:
        picture = cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape == frame.shape, "not a JPEG of the frame"
        # The face's box is drawn in its emotion's colour, where the frame itself is gray.
        edge = (slice(max(0, y - 1), y + 2), slice(x + w // 4, x + 3 * w // 4))
        assert colourful(frame[edge]).mean() < 10
        assert colourful(picture[edge]).mean() > 60, colourful(picture[edge]).mean()


def test_no_snapshot_and_no_image_entity_unless_asked_for(tmp_path: Path, broker: Broker,
                                                          face_clip: tuple[Path, np.ndarray]) -> None:
    video, _ = face_clip
    sub = run_daemon(tmp_path, broker, video)
    assert sub.on("edge_fer/testcam/events")  # it ran and saw the face
    assert sub.on("edge_fer/testcam/snapshot") == []
    assert "snapshot" not in sub.on(discovery_topic("homeassistant", "testcam"))[-1].json()["components"]
