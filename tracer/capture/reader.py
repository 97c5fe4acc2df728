"""Reading captures: ``open_capture`` streams, ``read_capture`` collects
(see the package's docstring); ``presented`` is the sighting columns as
other tools should see them (Parquet export, ``tracer sql``)."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import events
from tracer.capture import STDIN, CaptureReadError
from tracer.capture.recordings import hooks_of_all, next_part
from tracer.capture_clock import with_missing_time
from tracer.errors import one_line
from tracer.journey_capture import JourneyBatch, JourneyRowReader, PlaceRegistry
from tracer.packet_window import NEW_RECORDING
from tracer.recorded_hooks import RecordedHooks

_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # end-of-stream marker of the IPC stream format
_CONTINUATION = b"\xff\xff\xff\xff"
_ARROW_FILE_MAGIC = b"ARROW1"


@dataclass
class Capture:
    """One or more capture files read back, in the order given."""

    paths: list[str]
    table: pa.Table  # CAPTURE_SCHEMA, every file's rows, dictionaries unified
    metadata: dict[str, str]  # the first file's, without the 'tracer.' prefix
    file_metadata: list[dict[str, str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # warnings about torn/unclosed files

    @cached_property
    def events(self) -> pa.Table:
        """Packet sightings only, in EVENT_SCHEMA."""
        rows = self.table.filter(pc.fill_null(pc.equal(self.table["kind"], "event"), False))
        return rows.select(events.EVENT_SCHEMA.names)

    @cached_property
    def stats(self) -> dict[str, Any] | None:
        """The closing statistics row (the last one if several captures were given)."""
        found = self._info("stats")
        return found[-1] if found else None

    @cached_property
    def histograms(self) -> pa.Table:
        """Latency-mode interval rows (kind='histogram'), all columns; their
        payload is the JSON in ``info`` (docs/capture-format.md)."""
        return self.table.filter(pc.fill_null(pc.equal(self.table["kind"], "histogram"), False))

    @cached_property
    def rules(self) -> list[tuple[int, str, dict[str, Any]]]:
        """Rule hits (kind='rule' rows of a capture recorded with --rules):
        (packet_id, hook, info) each, in file order."""
        return _rule_hits(self.table.filter(pc.fill_null(pc.equal(self.table["kind"], "rule"), False)))

    @property
    def has_rules(self) -> bool:
        """Recorded with --rules (rule rows may still be none)."""
        return self.metadata.get("rules") == "1" or bool(self.rules)

    @cached_property
    def containers(self) -> list[dict[str, Any]]:
        """Container start/die rows during the capture, in file order."""
        return self._info("container")

    def _info(self, kind: str) -> list[dict[str, Any]]:
        rows = self.table.filter(pc.fill_null(pc.equal(self.table["kind"], kind), False))
        return [json.loads(v) for v in rows["info"].to_pylist() if v]


def _meta(schema: pa.Schema, path: str = "") -> dict[str, str]:
    raw = schema.metadata or {}
    prefix = events.META_PREFIX.encode()
    try:
        return {k[len(prefix):].decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}
    except UnicodeDecodeError:
        raise CaptureReadError(f"{path or 'capture'}: damaged: its metadata is not UTF-8 text") from None


def _check_version(path: str, meta: dict[str, str]) -> None:
    version = meta.get("schema_version")
    if version is None:
        raise CaptureReadError(f"{path}: no tracer metadata: not a tracer capture")
    major = version.split(".")[0]
    if major not in READABLE_MAJORS:
        raise CaptureReadError(
            f"{path}: capture schema version {version} is incompatible with this tracer "
            f"(reads versions {', '.join(READABLE_MAJORS[:-1])} and {READABLE_MAJORS[-1]})"
        )


# Sighting rows (1) and journey rows (2; 3 with dt_ns stored as its bytes;
# 4 without the columns another says; 5 with each batch's hop paths once):
# all read as sighting rows.
JOURNEY_MAJORS = ("2", "3", "4", events.JOURNEY_SCHEMA_VERSION.split(".")[0])
READABLE_MAJORS = (events.SCHEMA_VERSION.split(".")[0], *JOURNEY_MAJORS)


def _rows_of(meta: dict[str, str], registry: PlaceRegistry | None = None) -> Callable[[pa.RecordBatch], Any]:
    """What turns one file's batches, in order, into CAPTURE_SCHEMA rows
    (with a ``registry``: journey rows as JourneyBatch, not laid out)."""
    if meta.get("schema_version", "").split(".")[0] in JOURNEY_MAJORS:
        # the file's wall clock minus ktime, as written (version 4 stores no
        # time column: every row's is ktime_ns plus it; capture_clock.ktime_offset)
        reader = JourneyRowReader(registry, meta.get("ktime_offset_ns"))
        return reader.parts if registry is not None else reader.convert
    offset = meta.get("ktime_offset_ns")
    # a stored time missing on a row (damaged): this file's offset, as version 4's (capture_clock)
    return lambda batch: with_missing_time(_conform(batch), offset)


# Version 1 files have had every column from the start but these.
_V1_LATER = ("tcp_doff",)
_V1_REQUIRED = tuple(n for n in events.CAPTURE_SCHEMA.names if n not in _V1_LATER)


def _conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A version 1 batch in CAPTURE_SCHEMA (events.conform)."""
    return events.conform(batch, events.CAPTURE_SCHEMA, _V1_REQUIRED)




def _shared(meta: dict[str, str]) -> dict[str, str]:
    """The same metadata as the file before's is that file's dict (the parts
    of a rotated capture repeat it: one copy, not one per part)."""
    global _LAST_META
    if meta == _LAST_META:
        return _LAST_META
    _LAST_META = meta
    return meta


_LAST_META: dict[str, str] | None = None


def _check_schema(path: str, schema: pa.Schema, meta: dict[str, str]) -> None:
    """A file's columns against the one definition of them (events.py, via
    the same conversion every batch takes), when the file is opened: a
    column missing or of a type that does not convert is one line naming
    it, before any output. Batches are checked again as they are read."""
    try:
        schema.names  # noqa: B018 - decodes every column name
    except UnicodeDecodeError:
        raise CaptureReadError(f"{path}: damaged: its column names are not UTF-8 text") from None
    # The parts of a rotated capture share one schema: checked once (5,000
    # parts of `record -C` cost 0.5 ms each to check, as much as reading them).
    # Their metadata differs (part, start_time): the key is the columns and
    # what of the metadata the check reads.
    key = (schema.remove_metadata().serialize().to_pybytes(), meta.get("schema_version"), meta.get("ktime_offset_ns"))
    if key in _SCHEMAS_CHECKED:
        return
    try:
        _rows_of(meta)(pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema))
    except events.ColumnError as exc:
        raise CaptureReadError(f"{path}: {exc}") from None
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise CaptureReadError(f"{path}: columns not as a capture has them ({one_line(str(exc), 120)})") from None
    if len(_SCHEMAS_CHECKED) > 64:
        _SCHEMAS_CHECKED.clear()
    _SCHEMAS_CHECKED.add(key)


_SCHEMAS_CHECKED: set[tuple[bytes, str | None, str | None]] = set()


def _valid(batch: pa.RecordBatch) -> bool:
    """Whether a batch's data agrees with its layout (offsets, dictionary
    indices, lengths). A damaged file can hold a batch that parses but
    points outside its buffers, and Arrow's kernels trust what they are
    given: reading that would crash, not fail."""
    try:
        batch.validate(full=True)
    except (pa.ArrowException, ValueError):
        return False
    return True


# Below this size a file's buffers are decompressed on the reading thread:
# handing a few KB to Arrow's pool cost a quarter more CPU per file (5,000
# rotated parts of a few KB each).
SMALL_FILE = 1 << 20
_SMALL = pa.ipc.IpcReadOptions(use_threads=False)


class _FileRows:
    """One capture file opened for a single pass: its metadata at once (so
    bad input fails before any output), its batches on demand, and at the
    end a warning if it was torn or not closed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.batches = 0
        self.rows = 0
        self.warning: str | None = None
        self._stdin = None
        if path == STDIN:  # a pipe is read once, as it comes: `tracer record -w - | tracer show -`
            self._stdin = self._stdin_reader()
            self.is_file_format = False
            self.metadata = _meta(self._stdin.schema, "standard input")
            _check_version("standard input", meta=self.metadata)
            _check_schema("standard input", self._stdin.schema, self.metadata)
            return
        f = self._open()
        try:
            self.is_file_format, reader = self._reader(f)
            self.metadata = _shared(_meta(reader.schema, path))
            _check_version(path, meta=self.metadata)
            _check_schema(path, reader.schema, self.metadata)
        finally:
            f.close()

    def _open(self):
        try:
            size = os.path.getsize(self.path)
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise CaptureReadError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise CaptureReadError(f"{self.path}: is a directory, not a capture file") from None
        except OSError as exc:
            raise CaptureReadError(f"{self.path}: {exc.strerror or exc}") from None
        if size == 0:
            f.close()
            raise CaptureReadError(f"{self.path}: empty file")
        self.size = size
        return f

    def _stdin_reader(self) -> Any:
        stream = sys.stdin.buffer
        if stream.isatty():
            raise CaptureReadError("-: standard input is a terminal, not a capture (pipe one in: tracer record -w - | tracer show -)")
        try:
            return pa.ipc.open_stream(stream)
        except (pa.ArrowException, OSError):
            raise CaptureReadError("-: standard input is not an Arrow IPC stream (.arrows) capture") from None

    def _stdin_batches(self, rows_of) -> Iterator[pa.RecordBatch]:
        reader, self._stdin = self._stdin, None
        if reader is None:
            raise CaptureReadError("-: standard input can be read only once (save it to a file for this)")
        end = yield from self._stream(reader, rows_of)
        if end != "clean":  # the writer was killed: what came before is kept
            self.warning = f"standard input: recovered {self.batches} batches ({self.rows:,} rows); it ends in a torn batch"

    def _stream(self, reader: Any, rows_of) -> Iterator[pa.RecordBatch]:
        """An IPC stream's batches as CAPTURE_SCHEMA rows, up to its end; returns
        how it ended: "clean", "torn" (a batch cut short) or "damaged" (a
        batch whose data contradicts its own layout: read no further)."""
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return "clean"
            except (pa.ArrowException, OSError, ValueError, MemoryError):  # damaged text or lengths in a batch
                return "torn"
            if not _valid(batch):
                return "damaged"
            yield from self._converted(rows_of, batch)

    def _reader(self, f: Any) -> tuple[bool, Any]:
        head = f.read(8)
        f.seek(0)
        if head.startswith(_ARROW_FILE_MAGIC):
            try:
                return True, pa.ipc.open_file(f)
            except pa.ArrowException:
                raise CaptureReadError(f"{self.path}: truncated or damaged Arrow file") from None
        if not head.startswith(_CONTINUATION):
            raise CaptureReadError(f"{self.path}: not an Arrow IPC stream (.arrows) file")
        try:
            return False, pa.ipc.open_stream(f, options=_SMALL if self.size < SMALL_FILE else None)
        except (pa.ArrowException, OSError):
            raise CaptureReadError(f"{self.path}: truncated: the file ends inside its schema header") from None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self.read()

    def read(self, registry: PlaceRegistry | None = None) -> Iterator[Any]:
        """The file's batches as CAPTURE_SCHEMA rows (``_rows_of``: journey
        rows laid out as sightings, or with a ``registry`` as JourneyBatch);
        a torn tail ends the file (what came before is kept) and sets ``warning``."""
        rows_of = _rows_of(self.metadata, registry)
        if self.path == STDIN:
            yield from self._stdin_batches(rows_of)
            return
        f = self._open()
        with f:
            file_format, reader = self._reader(f)
            if file_format:
                try:
                    for i in range(reader.num_record_batches):
                        batch = reader.get_batch(i)
                        if not _valid(batch):
                            raise CaptureReadError(f"{self.path}: batch {i} is damaged")
                        yield from self._converted(rows_of, batch)
                except (pa.ArrowException, ValueError, MemoryError):
                    raise CaptureReadError(f"{self.path}: truncated or damaged Arrow file") from None
                return
            end = yield from self._stream(reader, rows_of)
            torn, damaged = end == "torn", end == "damaged"
            f.seek(max(0, self.size - len(_EOS)))
            clean = not torn and f.read() == _EOS
        if not self.batches and not clean:
            raise CaptureReadError(f"{self.path}: truncated: no complete record batch")
        recovered = f"{self.path}: recovered {self.batches} batches ({self.rows:,} rows)"
        if damaged:
            self.warning = f"{recovered}; the next batch is damaged (its data contradicts its own layout): read no further"
        elif torn:
            self.warning = f"{recovered}; file ends in a torn batch"
        elif not clean:
            self.warning = f"{recovered}; the capture was not stopped cleanly (no end-of-stream marker)"

    def _converted(self, rows_of, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        try:
            rows = rows_of(batch)
        except events.ColumnError as exc:  # a column missing or of another type (BadJourneyRows too)
            raise CaptureReadError(f"{self.path}: {exc}") from None
        self.batches += 1
        for part in rows if isinstance(rows, list) else [rows]:
            for out in (part.to_batches() if isinstance(part, pa.Table) else [part]):
                self.rows += out.num_rows
                yield out


class CaptureStream:
    """Capture files read in one pass, batch by batch, in bounded memory
    (``read_capture`` is this, collected into one table).

    Every file's header is checked when the stream is made, so bad input
    fails before any output. ``sightings()`` yields the packet sightings
    (EVENT_SCHEMA batches, each converted by ``_conform``) and keeps the few
    other rows (container, stats, histogram) aside: ``stats``, ``containers``
    and ``histograms`` are complete once the sightings are consumed.
    Warnings about torn or unclosed files go to ``on_warning`` as each file
    ends and are kept in ``recovered``."""

    def __init__(self, paths: list[str] | str, on_warning: Callable[[str], None] | None = None) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise CaptureReadError("no capture files given")
        if self.paths.count(STDIN) > 1:
            raise CaptureReadError("-: standard input can be read only once")
        self._files = [_FileRows(p) for p in self.paths]
        self.file_metadata = [f.metadata for f in self._files]
        # each file's hook profile: drops are placed by it; ``metadata`` only shows it
        self.recorded_hooks = RecordedHooks.of_files(self.file_metadata, self.paths)
        self.metadata = hooks_of_all(self.file_metadata, self.recorded_hooks)
        # Which files start another recording than the one before's (not its next part).
        self._starts_recording = [i > 0 and not next_part(self.file_metadata[i - 1], meta)
                                  for i, meta in enumerate(self.file_metadata)]
        self.recovered: list[str] = []
        self.on_warning = on_warning
        self.rows = 0
        self.current = 0  # index of the file the last batch came from
        self._other: list[pa.RecordBatch] = []
        self._rules: list[pa.RecordBatch] = []  # rule rows (--rules) not yet taken
        self._proxies: list[pa.RecordBatch] = []  # proxy rows (docker-proxy links) not yet taken
        self._consumed = False
        self.places = PlaceRegistry()  # journey rows' places, every file's (sightings_or_journeys)

    def batches(self, journeys: bool = False, boundaries: bool = False) -> Iterator[Any]:
        """Every row of every file, in order, in CAPTURE_SCHEMA (with
        ``journeys``, journey rows as JourneyBatch of ``self.places``; with
        ``boundaries``, NEW_RECORDING before a file that is not the next
        part of the recording before it: tracer.packet_window)."""
        if self._consumed:
            raise RuntimeError("a CaptureStream is read once")
        self._consumed = True
        for i, f in enumerate(self._files):
            self.current = i
            if boundaries and self._starts_recording[i]:
                yield NEW_RECORDING
            for batch in f.read(self.places if journeys else None):
                self.rows += batch.num_rows
                yield batch
            if f.warning:
                self.recovered.append(f.warning)
                if self.on_warning is not None:
                    self.on_warning(f.warning)

    def sightings(self, read_ahead: int = 0, boundaries: bool = False) -> Iterator[Any]:
        """Packet sightings (kind 'event') as EVENT_SCHEMA batches; the other
        rows are kept for ``stats``, ``containers`` and ``histograms``.
        ``read_ahead`` batches are read and decompressed on a thread of
        their own meanwhile (Arrow releases the GIL while it does).
        ``boundaries``: NEW_RECORDING between recordings too (``batches``),
        for a tracer.packet_window.PacketWindow."""
        yield from self._sightings(read_ahead, False, boundaries)

    def sightings_or_journeys(self, read_ahead: int = 0, boundaries: bool = False) -> Iterator[Any]:
        """``sightings()``, except that journey rows (version 2 files) come
        as they are stored, as JourneyBatch (tracer/journey_analysis.py
        reads their list columns without laying them out)."""
        yield from self._sightings(read_ahead, True, boundaries)

    def _sightings(self, read_ahead: int, journeys: bool, boundaries: bool) -> Iterator[Any]:
        names = events.EVENT_SCHEMA.names
        batches = self.batches(journeys, boundaries)
        batches = batches if read_ahead <= 0 else _read_ahead(batches, read_ahead)
        for batch in batches:
            if isinstance(batch, JourneyBatch) or batch is NEW_RECORDING:
                yield batch
                continue
            is_event = _is_event(batch.column("kind"))
            if is_event is None:  # every row is a sighting (the common case)
                yield batch.select(names)
                continue
            if not is_event.all():
                other = batch.filter(pa.array(~is_event))
                is_rule = pc.fill_null(pc.equal(other.column("kind"), "rule"), False)
                if pc.any(is_rule).as_py():
                    self._rules.append(other.filter(is_rule))
                    other = other.filter(pc.invert(is_rule))
                is_proxy = pc.fill_null(pc.equal(other.column("kind"), "proxy"), False)
                if pc.any(is_proxy).as_py():
                    self._proxies.append(other.filter(is_proxy))
                    other = other.filter(pc.invert(is_proxy))
                if other.num_rows:
                    self._other.append(other)
            if is_event.any():
                yield batch.filter(pa.array(is_event)).select(names)

    def reader(self) -> pa.RecordBatchReader:
        """``sightings()`` as a pyarrow RecordBatchReader (DuckDB, polars and
        pyarrow consume it streaming)."""
        return pa.RecordBatchReader.from_batches(events.EVENT_SCHEMA, self.sightings())

    def presented(self) -> Iterator[pa.RecordBatch]:
        """``sightings()`` in PRESENTED_SCHEMA (signed times, NULL for unknown)."""
        for batch in self.sightings():
            yield presented(batch)

    def presented_reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(PRESENTED_SCHEMA, self.presented())

    def other_rows(self) -> pa.Table:
        """The rows that are not sightings, read so far."""
        return pa.Table.from_batches(self._other, schema=events.CAPTURE_SCHEMA).unify_dictionaries()

    @property
    def has_rules(self) -> bool:
        """Recorded with --rules: `rule` rows come with the sightings."""
        return self.metadata.get("rules") == "1"

    def take_rules(self) -> list[tuple[int, str, dict[str, Any]]]:
        """The rule rows read since the last call, (packet_id, hook, info)
        each, in file order (they are not kept: memory stays bounded)."""
        batches, self._rules = self._rules, []
        return [hit for b in batches for hit in _rule_hits(b)]

    def take_proxy_links(self) -> list[dict[str, Any]]:
        """The `proxy` rows' infos read since the last call, in file order
        (not kept: a capture of many proxied connections stays bounded)."""
        batches, self._proxies = self._proxies, []
        return [json.loads(i) for b in batches for i in b.column("info").to_pylist() if i]

    @property
    def stats(self) -> dict[str, Any] | None:
        found = _infos(self.other_rows(), "stats")
        return found[-1] if found else None

    @property
    def containers(self) -> list[dict[str, Any]]:
        return _infos(self.other_rows(), "container")

    @property
    def histograms(self) -> pa.Table:
        rows = self.other_rows()
        return rows.filter(pc.fill_null(pc.equal(rows["kind"], "histogram"), False))


def _read_ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items``, produced on another thread up to ``depth`` ahead; an
    exception there is raised here, in order."""
    q: "queue.Queue[tuple[str, Any]]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        # Never block for good: the reader may have stopped with the queue
        # full (an exception, Ctrl-C), and its close() joins this thread.
        while not stop.is_set():
            try:
                q.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 (handed to the reader)
            put(("error", exc))

    thread = threading.Thread(target=produce, daemon=True, name="tracer-read-ahead")
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def _is_event(kind: pa.Array) -> np.ndarray | None:
    """Which rows are sightings; None when all of them are."""
    if isinstance(kind, pa.DictionaryArray):
        values = kind.dictionary.to_pylist()
        code = values.index("event") if "event" in values else -1
        if kind.null_count == 0 and len(values) == 1 and code == 0:
            return None
        idx = pc.fill_null(kind.indices, -1).to_numpy()
        return idx == code
    return pc.fill_null(pc.equal(kind, "event"), False).to_numpy(zero_copy_only=False)


def _rule_hits(rows: pa.Table | pa.RecordBatch) -> list[tuple[int, str, dict[str, Any]]]:
    out = []
    for pid, info in zip(rows.column("packet_id").to_pylist(), rows.column("info").to_pylist()):
        info = json.loads(info)
        out.append((pid, info.pop("hook", None), info))
    return out


def _infos(rows: pa.Table, kind: str) -> list[dict[str, Any]]:
    picked = rows.filter(pc.fill_null(pc.equal(rows["kind"], kind), False))
    return [json.loads(v) for v in picked["info"].to_pylist() if v]


def open_capture(paths: list[str] | str, on_warning: Callable[[str], None] | None = None) -> CaptureStream:
    """Capture files for one streaming pass (see ``CaptureStream``)."""
    return CaptureStream(paths, on_warning)


def read_capture(paths: list[str] | str) -> Capture:
    """Read capture files in order into one table (see ``Capture``): for
    captures that fit in memory; ``open_capture`` streams any size."""
    stream = CaptureStream(paths)
    batches = list(stream.batches())
    table = pa.Table.from_batches(batches, schema=events.CAPTURE_SCHEMA).unify_dictionaries()
    return Capture(paths=stream.paths, table=table, metadata=stream.metadata, file_metadata=stream.file_metadata,
                   recovered=stream.recovered)


# --- sightings as other tools should see them -----------------------------------

# What `tracer export --parquet` and `tracer sql` present: the sighting
# columns with plain strings (no dictionaries: polars cannot read a stream's
# dictionary deltas, and Spark/Trino want plain columns), the monotonic clock
# as signed 64-bit (DuckDB's `max - min` of a UBIGINT overflows below zero;
# ktime stays below 2^63), and NULL where the capture writes 0 for "unknown"
# (packet_id, flow_id, skb). Ids stay unsigned: captures written before flow
# ids were shortened hold raw kernel addresses, above 2^63, as skb does.
_SIGNED = ("ktime_ns",)
_ZERO_IS_NULL = ("packet_id", "flow_id", "skb")
PRESENTED_SCHEMA = pa.schema([
    pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else pa.int64() if f.name in _SIGNED else f.type)
    for f in events.EVENT_SCHEMA
])


def presented(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A sighting batch (EVENT_SCHEMA) in PRESENTED_SCHEMA."""
    arrays = []
    for f in PRESENTED_SCHEMA:
        col = batch.column(f.name)
        if f.name in _ZERO_IS_NULL:
            col = pc.if_else(pc.equal(col, pa.scalar(0, col.type)), pa.scalar(None, col.type), col)
        # ktime_ns as signed wraps past 2^63 (only a damaged file's), as the writers' time = ktime + offset did
        arrays.append(col if col.type == f.type else col.cast(f.type, safe=f.name not in _SIGNED))
    return pa.RecordBatch.from_arrays(arrays, schema=PRESENTED_SCHEMA)
