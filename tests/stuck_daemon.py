"""edge-fer with a classifier that blocks forever after 20 frames: a simulated hung pipeline."""

import sys
import threading

from edge_fer.cli.main import main
from edge_fer.vision import analyze

_real_classify = analyze.Analyzer.classify
_calls = [0]


def _classify(self, gray, boxes):  # type: ignore[no-untyped-def]
    _calls[0] += 1
    if _calls[0] > 20:
        print("test: the classifier blocks now", file=sys.stderr, flush=True)
        threading.Event().wait()
    return _real_classify(self, gray, boxes)


analyze.Analyzer.classify = _classify
sys.exit(main(sys.argv[1:]))
