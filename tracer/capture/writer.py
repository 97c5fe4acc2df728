"""Writing captures: ``CaptureWriter`` (see the package's docstring)."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import events, output
from tracer.arrow_columns import numeric_array
from tracer.capture import STDIN, CaptureReaderGone, CaptureWriteError
from tracer.capture_clock import ktime_offset
from tracer.errors import one_line
from tracer.journey_capture import PlaceIds
from tracer.journey_columns import NOTHING_STORED, JourneyColumns, Stored
from tracer.outfiles import create_fd

# Rows reach the OS at most this long after they were added (plus one tick of
# the trace loop, 0.1 s): a SIGKILL loses at most about a second. Timed from
# the oldest buffered row, so a burst after a quiet spell is one batch, not a
# tiny one then another: every batch costs ~3 KB of IPC metadata.
FLUSH_SECONDS = 0.9
# Larger batches compress better; at high rates cap the rows held in memory.
MAX_BATCH_ROWS = 1 << 17
# zstd level 3: lab HTTP traffic ~12 bytes/event (level 9 saves ~2 more but
# writes 4x slower, 0.5 M events/s on one core against 2.2 M at level 3).
ZSTD_LEVEL = 3
# Journey rows (schema 2) are few and dense: level 1 writes them in 0.4 µs
# per packet against 0.5-0.8 at level 3, for 7 % more bytes (44 B/packet on
# the lab's HTTP traffic against 41; sighting rows took ~70).
JOURNEY_ZSTD_LEVEL = 1
# Journey rows gathered into one table, at least this many (or at the flush,
# FLUSH_SECONDS): one table a flush at the lab's rates (~65,000 packets a
# second), whose columns go to the IPC writer as they are (several would be
# copied into one). Each add_journeys lays its records out at once into the
# table's columns (tracer/journey_columns.py); a pass's records join whole,
# so a burst (one drain read brings up to 65,536: RingBufferDrain.max_batch)
# makes a bigger table. A batch has a cost of its own beside its rows: Arrow
# compresses each of its ~50 buffers (dictionaries included) with a zstd
# context made for that buffer alone, and making one runs CPUID three times,
# which a virtual machine's hypervisor answers (8 µs each on this VM:
# ~22 µs a buffer, ~1.1 ms a batch), and the batch carries its own tuple and
# path dictionaries. 32,768 cost the lab's capture ~0.05 µs a packet more
# (docs/benchmarks.md, "Session 26").
JOURNEY_BATCH = 65536
# Journey rows laid out together, at least this many, are a record batch of
# their own (CaptureWriter._batch_groups).
OWN_BATCH_ROWS = 1024

# --- sizes ------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'10M' -> 10 MiB, '1G', '512k', '4096' (bytes). Units are powers of 1024."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"not a size: {text!r} (try 10M or 1G)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def part_path(path: str | os.PathLike, index: int) -> Path:
    """``cap.arrows`` -> ``cap.0003.arrows``: the names of rotated files."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{index:04d}{p.suffix}")


# --- dictionaries ---------------------------------------------------------------


class _GrowingDictionary:
    """One column's dictionary for the life of a stream: values are only
    appended, so each batch's dictionary extends the previous one and the IPC
    writer emits a delta (just the new values) instead of a replacement."""

    def __init__(self, value_type: pa.DataType) -> None:
        self.value_type = value_type
        self.index: dict[Any, int] = {}
        self.values: list[Any] = []
        self._array: pa.Array | None = None

    def encode(self, chunk: pa.Array, index_type: pa.DataType) -> pa.DictionaryArray:
        if not isinstance(chunk, pa.DictionaryArray):
            chunk = chunk.dictionary_encode()
        lut = np.fromiter(
            (self._code(v) for v in chunk.dictionary.to_pylist()), dtype=np.int64, count=len(chunk.dictionary)
        )
        if len(lut) and not _identity(lut):  # (numeric_array: pa.array would import numpy.ma in the first flush, ~10 ms)
            indices = pc.take(numeric_array(lut.astype(f"i{index_type.bit_width // 8}"), index_type), chunk.indices)
        else:  # the chunk's codes are already the stream's (most batches): no gather a row
            indices = chunk.indices.cast(index_type)
        return pa.DictionaryArray.from_arrays(indices, self.array)

    def _code(self, value: Any) -> int:
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.values)
            self.values.append(value)
            self._array = None
        return code

    @property
    def array(self) -> pa.Array:
        if self._array is None:
            self._array = pa.array(self.values, self.value_type)
        return self._array


def _identity(lut: np.ndarray) -> bool:
    return bool((lut == np.arange(len(lut))).all())


# --- writing --------------------------------------------------------------------


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    """A column as one array: its only chunk as it is (combine_chunks
    copies even that: a flush's journey rows are one chunk, ~300 bytes a
    packet)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _one_dictionary(column: pa.ChunkedArray) -> pa.Array:
    """A dictionary column as one array whose dictionary is its chunks',
    one after the other (a value may be there twice: Arrow's dictionary
    unification takes no list values)."""
    if column.num_chunks == 1:
        return column.chunk(0)
    dictionaries, indices, at = [], [], 0
    for chunk in column.chunks:
        dictionaries.append(chunk.dictionary)
        indices.append(pc.add(chunk.indices, pa.scalar(at, chunk.indices.type)) if at else chunk.indices)
        at += len(chunk.dictionary)
    return pa.DictionaryArray.from_arrays(pa.concat_arrays(indices), pa.concat_arrays(dictionaries))


Metadata = Mapping[str, str] | Callable[[], Mapping[str, str]]


def _create(path: Path) -> int:
    """Open for writing with mode 0600 (truncating an old capture), never
    following a symlink: a root process writing where users can plant links."""
    try:
        return create_fd(path)
    except OSError as exc:
        raise CaptureWriteError(f"cannot write {path}: {exc.strerror}") from None


def _ktime_offset(metadata: Mapping[str, str], journeys: bool) -> int | None:
    """The metadata's ktime_offset_ns (wall clock minus ktime): every row's
    time is ktime_ns plus it. A journey-row file cannot be read without it
    (version 4 stores no time), so writing one without it is a bug: the
    reader's own check (capture_clock.ktime_offset) refuses it here."""
    text = metadata.get("ktime_offset_ns")
    if text is None and not journeys:
        return None
    return ktime_offset(text)


def schema_with_metadata(metadata: Mapping[str, str], journeys: bool = False) -> pa.Schema:
    """The file's schema: sighting rows (version 1), or journey rows
    (events.JOURNEY_SCHEMA_VERSION, what `record` writes; tracer/journey_capture.py)."""
    meta = {f"{events.META_PREFIX}{k}": str(v) for k, v in metadata.items()}
    version = events.JOURNEY_SCHEMA_VERSION if journeys else events.SCHEMA_VERSION
    meta.setdefault(f"{events.META_PREFIX}schema_version", version)
    return (events.JOURNEY_FILE_SCHEMA if journeys else events.CAPTURE_SCHEMA).with_metadata(meta)


class _CountingPipe:
    """A pipe that says how much was written to it (a pipe cannot tell())."""

    def __init__(self, f: Any) -> None:
        self._f, self._n = f, 0

    def write(self, data) -> int:
        output.pipe_writing = True
        try:
            n = self._f.write(data)
        finally:
            output.pipe_writing = False
        self._n += len(data) if n is None else n
        return n

    def tell(self) -> int:
        return self._n

    def flush(self) -> None:
        output.pipe_writing = True
        try:
            self._f.flush()
        finally:
            output.pipe_writing = False

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed


class CaptureWriter:
    """Writes CAPTURE_SCHEMA rows to ``path`` (or numbered parts when rotating);
    with ``journeys=True`` the kernel's journey records as JOURNEY_FILE_SCHEMA
    rows (``add_journeys``) instead of sighting rows (``add_events``).

    Not thread-safe: one thread adds rows and calls ``tick()`` regularly (the
    trace loop does, ten times a second); ``tick`` writes the buffered rows once
    ``flush_seconds`` have passed and rotates files that are big or old enough.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: Metadata,
        *,
        rotate_size: int | None = None,
        rotate_seconds: float | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        max_batch_rows: int = MAX_BATCH_ROWS,
        zstd_level: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        journeys: bool = False,
        max_files: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.journeys = journeys
        # tcpdump's -W: a ring of at most this many rotated files, the oldest removed
        self.max_files = max_files
        self.removed: list[Path] = []
        self._parts = 0
        self.schema = events.JOURNEY_FILE_SCHEMA if journeys else events.CAPTURE_SCHEMA
        self.place_ids = PlaceIds()
        self.rotating = rotate_size is not None or rotate_seconds is not None
        self.rotate_size = rotate_size
        self.rotate_seconds = rotate_seconds
        self.flush_seconds = flush_seconds
        self.max_batch_rows = max_batch_rows
        self.clock = clock
        self._metadata = metadata
        # One thread: Arrow compresses a batch's buffers on its thread pool
        # by default, which on the lab's HTTP capture cost 3.7 µs of CPU per
        # packet against 2.3 on one thread (offline, docs/benchmarks.md;
        # live `record` runs differ by less than their noise). A live capture
        # competes with the traffic for CPU, not for time.
        if zstd_level is None:
            zstd_level = JOURNEY_ZSTD_LEVEL if journeys else ZSTD_LEVEL
        self._options = pa.ipc.IpcWriteOptions(
            compression=pa.Codec("zstd", compression_level=zstd_level), emit_dictionary_deltas=True, use_threads=False
        )
        self.paths: list[Path] = []
        self.event_rows = 0  # sightings (a journey row counts its hops)
        self.journey_rows = 0
        self.rule_rows = 0
        self.batches_written = 0
        self._closed_bytes = 0  # bytes in files already rotated away
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        # journey rows not buffered as a table yet (add_journeys)
        self._journeys = JourneyColumns()
        self._oldest = 0.0  # clock() when the oldest buffered row was added
        self._file = None
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None
        self._opened_at = 0.0
        self._batches_in_file = 0
        self._dicts: dict[str, _GrowingDictionary] = {}
        self._open()  # the first file at once: a bad path fails before any tracing

    # -- rows ------------------------------------------------------------------
    def add_events(self, table: pa.Table) -> None:
        """Decoded events (EVENT_SCHEMA) as kind='event' rows."""
        n = table.num_rows
        if n == 0:
            return
        kind = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["event"]))
        rows = table.append_column(events.CAPTURE_SCHEMA.field("kind"), kind).append_column(
            events.CAPTURE_SCHEMA.field("info"), pa.nulls(n, pa.string())
        )
        self._buffer(rows)
        self.event_rows += n

    def add_journeys(self, records: np.ndarray, ctx: Any, lock: Any = None) -> Stored:
        """The kernel's journey records (events.JOURNEY_DTYPE) as `journey`
        rows; ``ctx`` (decode.DecodeContext, read under ``lock``) names their
        hops' places. Laid out at once, into columns that become one table
        once JOURNEY_BATCH rows are there or the rows are written (a table
        costs about half a millisecond whatever its size, and several in one
        record batch are copied into one). Returns what the stored rows hold
        (journey_columns.Stored: new packets, flow ids)."""
        if not self.journeys:
            raise ValueError("add_journeys on a sighting-row capture")
        if not len(records):
            return NOTHING_STORED
        if not len(self._journeys):
            self._buffer_started()
        rows, hops = len(self._journeys), self._journeys.n_hops
        if lock is not None:
            with lock:
                stored = self._journeys.add(records, ctx, self.place_ids)
        else:
            stored = self._journeys.add(records, ctx, self.place_ids)
        self.journey_rows += len(self._journeys) - rows  # records without hops are not stored
        self.event_rows += self._journeys.n_hops - hops
        if len(self._journeys) >= JOURNEY_BATCH:
            self._lay_out_records()
        return stored

    def _lay_out_records(self) -> None:
        if len(self._journeys):
            self._buffer(self._journeys.take(), started=True)

    def add_row(self, kind: str, ktime_ns: int, info: Mapping[str, Any], **columns: Any) -> None:
        """One non-event row (container, stats...) at ``ktime_ns`` (the
        monotonic clock, bpf_ktime_get_ns): packet columns stay null.

        A row has no time of its own: its wall-clock time is always ktime_ns
        plus the metadata's ktime_offset_ns. A journey-row file (version 4)
        stores no `time` and its readers compute it so; a sighting-row file
        stores that sum. Something stamped on another clock (Docker's wall
        clock) is converted to ktime before it is added."""
        if kind not in events.ROW_KINDS:
            raise ValueError(f"unknown row kind {kind!r}")
        self._lay_out_records()  # rows stay in the order they came
        row = {"ktime_ns": ktime_ns, "kind": kind, "info": json.dumps(info, sort_keys=True), **columns}
        if not self.journeys:
            row["time"] = ktime_ns + self._offset()
        self._buffer(self._rows([row]))

    def _rows(self, rows: list[dict]) -> pa.Table:
        """Rows given as dicts, in the file's schema (a journey file's
        dictionaries of lists null: pa.Table.from_pylist cannot make them)."""
        lists = [f for f in self.schema if f.name in events.BATCH_DICTIONARIES]
        table = pa.Table.from_pylist(rows, schema=pa.schema([f for f in self.schema if f not in lists]))
        for f in lists:
            table = table.add_column(self.schema.get_field_index(f.name), f, pa.nulls(len(rows), f.type))
        return table

    def add_rule_rows(self, rows: list[tuple[int, int, str, Mapping[str, Any]]]) -> None:
        """Rule hits joined to packets, (ktime_ns, packet_id, hook, info)
        each, as kind='rule' rows (docs/capture-format.md); their time is
        ktime_ns plus the metadata's ktime_offset_ns, as ``add_row``."""
        if not rows:
            return
        self._lay_out_records()  # rows stay in the order they came
        ktime = [r[0] for r in rows]
        offset_ns = 0 if self.journeys else self._offset()  # a journey-row file has no time column
        # The hook goes in info: journey-row files (version 2) have no hook column.
        columns = {
            "time": pa.array([k + offset_ns for k in ktime], pa.timestamp("ns", tz="UTC")),
            "ktime_ns": pa.array(ktime, pa.uint64()),
            "packet_id": pa.array([r[1] for r in rows], pa.uint64()),
            "kind": pa.array(["rule"] * len(rows), pa.string()).dictionary_encode(),
            "info": pa.array([json.dumps({"hook": r[2], **r[3]}, sort_keys=True) for r in rows], pa.string()),
        }
        full = [columns[f.name] if f.name in columns else pa.nulls(len(rows), f.type) for f in self.schema]
        self._buffer(pa.Table.from_arrays(full, schema=self.schema))
        self.rule_rows += len(rows)

    def _offset(self) -> int:
        if self._ktime_offset_ns is None:
            raise ValueError("a row's time is its ktime_ns plus the metadata's ktime_offset_ns, "
                             "and this capture's metadata has none")
        return self._ktime_offset_ns

    def _buffer(self, rows: pa.Table, started: bool = False) -> None:
        if not started:
            self._buffer_started()
        self._pending.append(rows)
        self._pending_rows += rows.num_rows

    def _buffer_started(self) -> None:
        """Rows are about to be held: the flush clock starts with the oldest."""
        if self.closed:
            raise CaptureWriteError(f"{self.path}: capture already closed")
        if not self._pending and not len(self._journeys):
            self._oldest = self.clock()

    # -- time passing ------------------------------------------------------------
    def tick(self) -> None:
        """Write what is buffered if it is time (or plenty), rotate if due."""
        now = self.clock()
        held = self._pending_rows + len(self._journeys)
        if held and (now - self._oldest >= self.flush_seconds or held >= self.max_batch_rows):
            self.flush()
        if self._stream is not None and self._batches_in_file and self.rotate_seconds is not None:
            if now - self._opened_at >= self.rotate_seconds:
                self._close_file()

    def flush(self) -> None:
        """Write buffered rows as record batches (_batch_groups) and hand them to the OS."""
        self._lay_out_records()
        if not self._pending_rows:
            return
        if self._stream is None:
            self._open()
        places = self.place_ids.take_unwritten()  # before the rows that point at them
        if places:
            self._pending.insert(0, self._rows([{"kind": "place", "info": json.dumps(p, sort_keys=True)} for p in places]))
        groups = self._batch_groups(self._pending)
        self._pending, self._pending_rows = [], 0
        for group in groups:
            table = pa.concat_tables(group)
            for start in range(0, table.num_rows, self.max_batch_rows):
                self._write(table.slice(start, self.max_batch_rows))
        if self.rotate_size is not None and self.current_file_bytes >= self.rotate_size:
            self._close_file()

    def _batch_groups(self, pending: list[pa.Table]) -> list[list[pa.Table]]:
        """The buffered tables, in order, grouped into record batches: all in
        one, except that a journey writer's big tables (journey rows laid
        out together) are batches of their own. One batch of several tables
        is a copy of every column (~300 bytes a packet); a batch more costs
        ~2 KB of IPC metadata, next to ~45 bytes a packet of rows."""
        if not self.journeys:
            return [pending]
        groups: list[list[pa.Table]] = []
        small: list[pa.Table] = []
        for table in pending:
            if table.num_rows >= OWN_BATCH_ROWS:
                if small:
                    groups.append(small)
                    small = []
                groups.append([table])
            else:
                small.append(table)
        return groups + [small] if small else groups

    def _write(self, table: pa.Table) -> None:
        arrays = []
        for f in self.schema:
            col = table.column(f.name)
            if f.name in events.BATCH_DICTIONARIES:  # each batch its own dictionary: as it is
                arrays.append(_one_dictionary(col))
            elif pa.types.is_dictionary(f.type):
                state = self._dicts.get(f.name)
                if state is None:
                    state = self._dicts[f.name] = _GrowingDictionary(f.type.value_type)
                chunks = [state.encode(c, f.type.index_type) for c in col.chunks]
                arrays.append(_one_array(pa.chunked_array(chunks, f.type)))
            else:
                arrays.append(_one_array(col))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        try:
            self._stream.write_batch(batch)
            self._file.flush()
        except (OSError, pa.ArrowException) as exc:
            raise self._abandon(exc) from None
        self._good_bytes = self._file.tell()
        self.batches_written += 1
        self._batches_in_file += 1

    def _abandon(self, exc: BaseException) -> CaptureWriteError:
        """A write failed (disk full, I/O error): stop writing for good, cut
        the file back to its last whole batch (a reader recovers those and
        says the capture was not stopped cleanly) and return the one-line
        error to raise. Closing never raises a second error on top."""
        path = self.paths[-1] if self.paths else self.path
        self._is_closed = True
        self._pending, self._pending_rows = [], 0
        f, self._stream, self._file = self._file, None, None
        if f is not None:
            keep = os.dup(f.fileno()) if hasattr(f, "fileno") else None  # `-w -` (a pipe): nothing to cut
            try:
                f.close()  # may try to flush the torn batch's bytes again: ignored, cut below
            except (OSError, ValueError):
                pass
            if keep is not None:
                try:
                    if stat.S_ISREG(os.fstat(keep).st_mode):
                        os.ftruncate(keep, self._good_bytes)
                except OSError:
                    pass
                finally:
                    os.close(keep)
            self._closed_bytes += self._good_bytes
        if isinstance(exc, BrokenPipeError) and str(self.path) == STDIN:
            return CaptureReaderGone("the capture's reader closed the pipe")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(str(exc), 200)
        kept = (f"the capture keeps the {self._batches_in_file:,} batches written before" if self._batches_in_file
                else "nothing of it could be written")
        return CaptureWriteError(f"writing {path}: {reason}; {kept}")

    # -- files ----------------------------------------------------------------
    @property
    def current_file_bytes(self) -> int:
        return self._file.tell() if self._file is not None else 0

    @property
    def bytes_written(self) -> int:
        return self._closed_bytes + self.current_file_bytes

    @property
    def closed(self) -> bool:
        return getattr(self, "_is_closed", False)

    def _open(self) -> None:
        metadata = self._metadata() if callable(self._metadata) else self._metadata
        # Each file says which part of its recording it is: readers join a
        # packet across two files only where the second is the next part of
        # the first's recording (not the same file twice, not another recording).
        metadata = {**metadata, "part": str(self._parts)}
        self._ktime_offset_ns = _ktime_offset(metadata, self.journeys)
        path = part_path(self.path, self._parts) if self.rotating else self.path
        self._parts += 1
        self.paths.append(path)
        if str(self.path) == STDIN:  # `-w -`: the stream on stdout, a pipe (no tell())
            self._file = _CountingPipe(os.fdopen(os.dup(1), "wb"))
        else:
            self._file = os.fdopen(_create(path), "wb")
        self._good_bytes = 0
        self._batches_in_file = 0
        try:
            self._stream = pa.ipc.new_stream(self._file, schema_with_metadata(metadata, self.journeys),
                                             options=self._options)
            self._file.flush()
        except (OSError, pa.ArrowException) as exc:
            raise self._abandon(exc) from None
        self._good_bytes = self._file.tell()
        self._opened_at = self.clock()
        self._batches_in_file = 0
        while self.max_files is not None and len(self.paths) > self.max_files:
            oldest = self.paths.pop(0)  # closed already: only the current file is open
            try:
                oldest.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CaptureWriteError(f"cannot remove {oldest} (-W): {exc.strerror or exc}") from None
            self.removed.append(oldest)
        self._dicts = {}  # a new stream starts with empty dictionaries
        self.place_ids.new_file()  # and knows no places yet

    def _close_file(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.close()  # writes the end-of-stream marker
            self._file.flush()
            size = self._file.tell()
            self._file.close()
        except (OSError, pa.ArrowException) as exc:
            raise self._abandon(exc) from None
        self._closed_bytes += size
        self._stream, self._file = None, None

    def close(self) -> None:
        """Write what is buffered and end the stream properly."""
        if self.closed:
            return
        try:
            if self._pending_rows or len(self._journeys):
                self.flush()
        finally:
            if not self.closed:  # a failed write has closed it already
                self._is_closed = True
                self._close_file()

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
