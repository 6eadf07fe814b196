"""edge-fer: facial emotion recognition on small devices, from photos, cameras and MQTT."""

from edge_fer.analyze import Analyzer, Face, analyze_image
from edge_fer.classifier import EmotionClassifier
from edge_fer.detector import FaceDetector, HaarDetector, YuNetDetector

__version__ = "0.1.0"
__all__ = ["Analyzer", "EmotionClassifier", "Face", "FaceDetector", "HaarDetector", "YuNetDetector", "analyze_image", "__version__"]
