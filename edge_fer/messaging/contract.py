"""The documents edge-fer publishes (events and state), defined once: the daemon builds them, the recorder checks
them with the same fields and bounds, and schema_markdown() describes them for README."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, SupportsFloat, SupportsInt, TypeAlias, TypeVar

from edge_fer.types import (
    MAX_LABELS,
    NO_FACE,
    POINT_PLACES,
    SCORE_PLACES,
    UNSURE,
    EventType,
    Landmarks,
    label_problem,
)

# What the shipped model knows, and what a document that names no labels (edge-fer before labels travelled with
# the data) means.
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_ABSENT = "the seven FER-2013 emotions (documents from before labels were sent)"
MAX_TEXT = 200
MAX_NAME = 255  # a file name (Linux's NAME_MAX)
MAX_FACES = 10_000
# A clock this far off, or a forged time, would stretch every report over centuries and never be pruned.
YEARS = (2000, 2100)
UTC = dt.timezone.utc  # datetime.UTC is 3.11's
EARLIEST, LATEST = (dt.datetime(y, 1, 1, tzinfo=UTC).timestamp() for y in YEARS)
INT32 = (-2**31, 2**31 - 1)  # PostgreSQL's INTEGER: a value the database refuses would fail its whole batch
COUNT = (0, 2**63 - 1)  # BIGINT, non-negative

JSON: TypeAlias = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]


class MalformedDocument(ValueError):
    """A document that is not what edge-fer publishes; the message names the field and the rule."""


def utc_iso(t: float | None = None) -> str:
    """ISO 8601 UTC time with milliseconds, of `t` (seconds since the epoch) or now."""
    when = dt.datetime.now(UTC) if t is None else dt.datetime.fromtimestamp(t, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """An ISO 8601 time as seconds since the epoch; a time without a zone is UTC."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class Kind(Protocol):
    """How one field's value travels: checked from JSON, rendered to JSON, described for README."""

    def check(self, value: object, name: str) -> object:
        """The value as the document holds it; MalformedDocument if it breaks the rule."""

    def render(self, value: object) -> JSON:
        """The value as JSON."""

    def describe(self) -> str:
        """The rule in words."""


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _float(value: object) -> float:
    # A producer's numbers may be numpy's (float32 is no float): whatever converts, converts.
    if not isinstance(value, SupportsFloat):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def _int(value: object) -> int:
    if not isinstance(value, SupportsInt):
        raise TypeError(f"not an integer: {value!r}")
    return int(value)


def _bound(n: int, sep: str = ",") -> str:
    return "2^63-1" if n == COUNT[1] else f"{n:,}".replace(",", sep)


def _shown(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) else f"{x:g}"


@dataclass(frozen=True)
class Text:
    """A string of at most `longest` characters, without NUL, that UTF-8 can hold."""

    longest: int = MAX_TEXT

    def check(self, value: object, name: str) -> str:
        # What neither database could take (a NUL, a lone surrogate from a JSON escape) fails here, not the batch.
        if not isinstance(value, str) or len(value) > self.longest or "\x00" in value:
            raise MalformedDocument(f"{name} is not a short string")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise MalformedDocument(f"{name} is not valid Unicode") from None
        return value

    def render(self, value: object) -> JSON:
        return str(value)

    def describe(self) -> str:
        return f"string, at most {self.longest} characters"


@dataclass(frozen=True)
class Choice:
    """One of an enum's values."""

    enum: type[EventType]

    def check(self, value: object, name: str) -> EventType:
        text = Text().check(value, name)
        try:
            return self.enum(text)
        except ValueError:
            raise MalformedDocument(f"unknown {name} {text[:20]!r}") from None

    def render(self, value: object) -> JSON:
        return EventType(value).value

    def describe(self) -> str:
        return ", ".join(f"`{m.value}`" for m in self.enum)


@dataclass(frozen=True)
class Count:
    """A whole number within bounds."""

    low: int
    high: int
    what: str = "count"

    def check(self, value: object, name: str) -> int:
        if not _whole(value, self.low, self.high):
            raise MalformedDocument(f"{name} is not a {self.what} from {self.low} to {_bound(self.high, '')}")
        return _int(value)

    def render(self, value: object) -> JSON:
        return _int(value)

    def describe(self) -> str:
        return f"integer {self.low} to {_bound(self.high)}"


@dataclass(frozen=True)
class Number:
    """A finite number within bounds, rounded to `places` when published."""

    low: float
    high: float
    places: int

    def check(self, value: object, name: str) -> float:
        # Comparing first keeps out NaN, JSON's Infinity and integers beyond any float.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            raise MalformedDocument(f"{name} is not a number from {self.low:g} to {self.high:g}")
        return float(value)

    def render(self, value: object) -> JSON:
        return round(_float(value), self.places)

    def describe(self) -> str:
        return f"number {_shown(self.low)} to {_shown(self.high)}, {self.places} decimal" + "s" * (self.places > 1)


@dataclass(frozen=True)
class Time:
    """An ISO 8601 time from 2000 to 2099, held as seconds since the epoch."""

    def check(self, value: object, name: str) -> float:
        try:
            when = parse_time(Text().check(value, name))
        except ValueError:
            raise MalformedDocument(f"{name} is not an ISO 8601 time") from None
        if not EARLIEST <= when < LATEST:
            raise MalformedDocument(f"{name} is not a time from {YEARS[0]} to {YEARS[1] - 1}")
        return when

    def render(self, value: object) -> JSON:
        return utc_iso(_float(value))

    def describe(self) -> str:
        return f"ISO 8601 time, UTC, milliseconds, {YEARS[0]} to {YEARS[1] - 1}"


@dataclass(frozen=True)
class Ints:
    """A list of `n` 32-bit integers."""

    n: int

    def check(self, value: object, name: str) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) != self.n or not all(_whole(v, *INT32) for v in value):
            raise MalformedDocument(f"{name} is not a list of {self.n} integers")
        return tuple(value)

    def render(self, value: object) -> JSON:
        return [_int(v) for v in _items(value)]

    def describe(self) -> str:
        return f"{self.n} 32-bit integers"


@dataclass(frozen=True)
class Points:
    """Five [x, y] pairs of pixel coordinates."""

    def check(self, value: object, name: str) -> Landmarks:
        if not isinstance(value, list) or len(value) != 5 or not all(
                isinstance(p, list) and len(p) == 2 and all(_finite(v) for v in p) for p in value):
            raise MalformedDocument(f"{name} is not five [x, y] pairs")
        a, b, c, d, e = ((float(p[0]), float(p[1])) for p in value)
        return a, b, c, d, e

    def render(self, value: object) -> JSON:
        return [[round(_float(v), POINT_PLACES) for v in _items(p)] for p in _items(value)]

    def describe(self) -> str:
        return f"five [x, y] pairs, {POINT_PLACES} decimal" + "s" * (POINT_PLACES > 1)


def _finite(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and -1e6 <= v <= 1e6


def _items(value: object) -> tuple[object, ...]:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"not a sequence: {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Labels:
    """The model's labels: 1 to MAX_LABELS distinct short names, none of them `unsure` or `no_face`."""

    def check(self, value: object, name: str) -> tuple[str, ...]:
        problem = label_problem(value) if isinstance(value, list) else f"is not a list of 1 to {MAX_LABELS} names"
        if problem:
            raise MalformedDocument(f"{name} {problem}")
        return tuple(str(v) for v in _items(value))

    def render(self, value: object) -> JSON:
        return [str(v) for v in _items(value)]

    def describe(self) -> str:
        return f"1 to {MAX_LABELS} distinct strings, in the model's order, neither `{UNSURE}` nor `{NO_FACE}`"


@dataclass(frozen=True)
class Scores:
    """A score from 0 to 1 per label (which labels is the document's own rule)."""

    def check(self, value: object, name: str) -> dict[str, float]:
        if not isinstance(value, dict) or len(value) > MAX_LABELS:
            raise MalformedDocument(f"{name} is not an object of scores")
        score = Number(0, 1, SCORE_PLACES)
        return {Text().check(k, name): score.check(v, f"{name}.{k[:20]}") for k, v in value.items()}

    def render(self, value: object) -> JSON:
        if not isinstance(value, dict):
            raise TypeError(f"not scores: {value!r}")
        return {str(k): round(_float(v), SCORE_PLACES) for k, v in value.items()}

    def describe(self) -> str:
        return f"an object: label -> score 0 to 1, {SCORE_PLACES} decimals, in the labels' order"


D = TypeVar("D", bound="Document")


@dataclass(frozen=True)
class Nested:
    """A list of up to MAX_FACES documents of one kind."""

    of: type[Document]

    def check(self, value: object, name: str) -> tuple[Document, ...]:
        if not isinstance(value, list) or len(value) > MAX_FACES:
            raise MalformedDocument(f"{name} is not a list of at most {MAX_FACES}")
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise MalformedDocument(f"{name}[{i}] is not an object")
            items.append(self.of.parse(item, f"{name}[{i}]."))
        return tuple(items)

    def render(self, value: object) -> JSON:
        return [item.to_json() for item in _items(value) if isinstance(item, Document)]

    def describe(self) -> str:
        return f"a list of {self.of.__name__} objects (below)"


@dataclass(frozen=True)
class Spec:
    """One field: its kind, what README says of it, and whether it may be absent or null."""

    kind: Kind
    doc: str
    required: bool = True  # else absent or null reads as the field's default
    omit_none: bool = False  # left out of the JSON when None, rather than sent as null
    absent: str = ""  # what an absent value reads as, where that is not null (README)


def spec(kind: Kind, doc: str, required: bool = True, omit_none: bool = False, absent: str = "") -> dict[str, Spec]:
    """A dataclass field's metadata."""
    return {"spec": Spec(kind, doc, required, omit_none, absent)}


class Document:
    """What events and states share: parsing with their fields' kinds, rendering, and the rules across fields."""

    TITLE: ClassVar[str]

    @classmethod
    def specs(cls) -> list[tuple[str, Spec]]:
        """Each field's name and spec, in the document's order."""
        return [(f.name, f.metadata["spec"]) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def parse(cls: type[D], doc: Mapping[str, object], prefix: str = "") -> D:
        """The document from parsed JSON; MalformedDocument names the first field that breaks its rule."""
        values: dict[str, object] = {}
        for name, s in cls.specs():
            raw = doc.get(name)
            if raw is None:
                if s.required:
                    raise MalformedDocument(f"{prefix}{name} is missing")
                continue  # the field's default
            values[name] = s.kind.check(raw, prefix + name)
        made = _construct(cls, values)
        made.check()
        return made

    def check(self) -> None:
        """The rules across fields; MalformedDocument if one is broken."""

    def to_json(self) -> dict[str, JSON]:
        """The document as JSON, each value rounded as its kind says."""
        out: dict[str, JSON] = {}
        for name, s in self.specs():
            value = getattr(self, name)
            if value is None:
                if not s.omit_none:
                    out[name] = None
                continue
            out[name] = s.kind.render(value)
        return out


def _construct(cls: type[D], values: Mapping[str, object]) -> D:
    # Each value was checked by its field's kind, which returns that field's type: the constructor's own types
    # cannot be spelled for a generic caller.
    make: Callable[..., D] = cls
    return make(**values)


def _judged(emotion: str | None, labels: tuple[str, ...], name: str) -> None:
    if emotion is not None and emotion != UNSURE and emotion not in labels:
        raise MalformedDocument(f"{name} {emotion[:20]!r} is not one of the labels nor {UNSURE!r}")


@dataclass(frozen=True, kw_only=True)
class Event(Document):
    """One message on the `events` topic."""

    TITLE: ClassVar[str] = "Event (`<prefix>/<device>/events`, not retained)"

    type: EventType = field(metadata=spec(Choice(EventType), "what happened: a track started, changed its "
                                                             "emotion or ended; `image` is a photo's face"))
    device: str = field(metadata=spec(Text(), "the device id, as in the topic"))
    track_id: int | None = field(default=None, metadata=spec(
        Count(*COUNT), "the track, from 1 within a run; absent on `image`", False, True))
    image: str | None = field(default=None, metadata=spec(
        Text(MAX_NAME), "`image` only: the photo's file name, never its folders", False, True))
    face_index: int | None = field(default=None, metadata=spec(
        Count(0, MAX_FACES), "`image` only: the face's place in the photo, largest first from 0", False, True))
    emotion: str = field(metadata=spec(Text(), "one of `labels`, or `unsure`"))
    confidence: float = field(metadata=spec(Number(0, 1, SCORE_PLACES), "the score of `emotion` (the top score "
                                                                          "when `unsure`)"))
    scores: dict[str, float] = field(metadata=spec(Scores(), "one score per label, no other"))
    unsure: str | None = field(default=None, metadata=spec(
        Text(), "why the face is not judged (`image`); null when it is", False))
    box: tuple[int, ...] = field(metadata=spec(Ints(4), "x, y, width, height in the frame's pixels"))
    landmarks: Landmarks | None = field(default=None, metadata=spec(
        Points(), "eyes, nose tip, mouth corners (YuNet); null when the detector gives none", False))
    detector_score: float | None = field(default=None, metadata=spec(
        Number(-1e6, 1e6, SCORE_PLACES), "the detector's score; null when it gives none", False))
    frame_size: tuple[int, ...] = field(metadata=spec(Ints(2), "width, height of the frame or photo"))
    ts: float = field(metadata=spec(Time(), "when the event was made"))
    run_id: str = field(default="", metadata=spec(Text(), "new each time the daemon starts or reloads", False,
                                                  absent='`""`'))
    seq: int = field(metadata=spec(Count(*COUNT, "non-negative integer"), "counts from 1 within a run"))
    frame_ts: float | None = field(default=None, metadata=spec(
        Time(), "`start`, `change`: the capture time of the frame that caused it", False, True))
    duration: float | None = field(default=None, metadata=spec(
        Number(0, 1e9, 3), "`end` only: seconds the face was seen", False, True))
    labels: tuple[str, ...] = field(default=FER_LABELS, metadata=spec(
        Labels(), "the labels of the model that made it", False, absent=FER_ABSENT))

    def check(self) -> None:
        """A judged emotion is one of the labels, the scores are the labels', and a live event names its track."""
        _judged(self.emotion, self.labels, "emotion")
        if set(self.scores) != set(self.labels):
            raise MalformedDocument("scores are not one per label")
        if self.type is not EventType.IMAGE and self.track_id is None:
            raise MalformedDocument("track_id is missing")


@dataclass(frozen=True, kw_only=True)
class Track(Document):
    """One open track, as the state lists it."""

    TITLE: ClassVar[str] = "Track (each of a state's `tracks`)"

    track_id: int = field(metadata=spec(Count(*COUNT), "the track, as in its events"))
    emotion: str = field(metadata=spec(Text(), "its steady emotion: one of the state's `labels`, or `unsure`"))
    confidence: float = field(metadata=spec(Number(0, 1, SCORE_PLACES), "the smoothed score of `emotion`"))
    box: tuple[int, ...] = field(metadata=spec(Ints(4), "x, y, width, height of its latest face"))


@dataclass(frozen=True, kw_only=True)
class State(Document):
    """The retained message on the `state` topic; with no face in view the dominant emotion and confidence are null."""

    TITLE: ClassVar[str] = "State (`<prefix>/<device>/state`, retained)"

    device: str = field(metadata=spec(Text(), "the device id, as in the topic"))
    run_id: str = field(default="", metadata=spec(Text(), "as in the events of this run", False, absent='`""`'))
    camera: str = field(default="", metadata=spec(
        Text(), "`starting`, `ok`, `down`, `stalled`, `ended` or `failed`", False, absent='`""`'))
    faces: int = field(metadata=spec(Count(0, MAX_FACES), "faces in view"))
    dominant_emotion: str | None = field(default=None, metadata=spec(
        Text(), "the largest face's emotion (`unsure` included); null with no face in view", False))
    dominant_confidence: float | None = field(default=None, metadata=spec(
        Number(0, 1, SCORE_PLACES), "its confidence; null with no face in view", False))
    tracks: tuple[Track, ...] = field(default=(), metadata=spec(Nested(Track), "each open track", False,
                                                                 absent="`[]`"))
    fps: float = field(metadata=spec(Number(0, 1e4, 2), "frames processed per second, over the last 2 s"))
    frames: int | None = field(default=None, metadata=spec(Count(*COUNT), "frames processed in this run", False))
    dropped_frames: int | None = field(default=None, metadata=spec(
        Count(*COUNT), "frames the camera delivered that were not processed", False))
    dropped_events: int | None = field(default=None, metadata=spec(
        Count(*COUNT), "events that never reached the broker: a full queue, or refused by it (MQTT 5)", False))
    uptime: float | None = field(default=None, metadata=spec(Number(0, 1e10, 1), "seconds since the run began",
                                                              False))
    ts: float = field(metadata=spec(Time(), "when the state was made"))
    labels: tuple[str, ...] = field(default=FER_LABELS, metadata=spec(
        Labels(), "the labels of the model that made it", False, absent=FER_ABSENT))

    def check(self) -> None:
        """The dominant emotion and each track's are the model's labels or `unsure`."""
        _judged(self.dominant_emotion, self.labels, "dominant_emotion")
        for i, t in enumerate(self.tracks):
            _judged(t.emotion, self.labels, f"tracks[{i}].emotion")


DOCUMENTS: tuple[type[Document], ...] = (Event, State, Track)


def schema_markdown() -> str:
    """Each document's fields as a markdown table: name, JSON form, when it may be absent or null, meaning."""
    parts = []
    for cls in DOCUMENTS:
        rows = [f"#### {cls.TITLE}", "", "| field | value | when absent or null | meaning |", "|---|---|---|---|"]
        for name, s in cls.specs():
            optional = ("malformed" if s.required else "left out where it does not apply" if s.omit_none
                        else f"read as {s.absent}" if s.absent else "may be null")
            rows.append(f"| `{name}` | {s.kind.describe()} | {optional} | {s.doc} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts) + "\n"
