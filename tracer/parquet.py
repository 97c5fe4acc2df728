"""`tracer export --parquet`: a capture's sightings as Parquet, streamed.

Rows are the capture's sightings as other tools should see them
(``capture.reader.PRESENTED_SCHEMA``: plain strings, signed ``ktime_ns``, unsigned
ids, NULL for unknown). Two layouts:

- ``OUT.parquet``: one file, with ``host`` and ``date`` as columns.
- ``OUT`` (a directory): Hive partitions ``OUT/host=H/date=YYYY-MM-DD/``,
  one file per capture export in each, named after the first capture file,
  the capture's start time and a random suffix (rotated captures all start
  ``cap.0000.arrows``: a later export adds a file, never replaces one), so
  exports of many captures into one directory are one dataset for
  DuckDB (``read_parquet('OUT/**/*.parquet', hive_partitioning = true)``),
  polars (``pl.scan_parquet('OUT/**/*.parquet', hive_partitioning=True)``),
  Spark or Trino. ``host`` is the capture's host metadata, ``date`` the UTC
  date of each sighting's ``time``.

Each file carries the capture's metadata (``tracer.*`` keys) as Parquet
key/value metadata. Files are created 0600, like captures.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracer.capture.reader import PRESENTED_SCHEMA, CaptureStream, presented
from tracer.errors import TracerError
from tracer.outfiles import create_fd

FLAT_SCHEMA = PRESENTED_SCHEMA.append(pa.field("host", pa.string())).append(pa.field("date", pa.string()))
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def export_parquet(capture: CaptureStream, out: str | os.PathLike) -> tuple[int, list[Path]]:
    """Write every sighting of ``capture``; returns (rows, files written)."""
    out = Path(out)
    flat = out.suffix == ".parquet"
    writers: dict[Any, pq.ParquetWriter] = {}
    paths: list[Path] = []
    rows = 0
    name = None  # of this export's file in each partition
    try:
        for batch in capture.sightings():
            meta = capture.file_metadata[capture.current]
            host = meta.get("host") or "unknown"
            batch = presented(batch)
            dates = _dates(batch)
            for date in sorted(set(dates.tolist())):
                part = batch if len(set(dates.tolist())) == 1 else batch.filter(pa.array(dates == date))
                key = None if flat else (host, date)
                writer = writers.get(key)
                if writer is None:
                    name = name or _file_name(capture, meta)
                    path = out if flat else out / f"host={_UNSAFE.sub('_', host)}" / f"date={date}" / name
                    writer = writers[key] = _writer(path, FLAT_SCHEMA if flat else PRESENTED_SCHEMA, meta)
                    paths.append(path)
                if flat:
                    n = part.num_rows
                    part = pa.RecordBatch.from_arrays(
                        [*part.columns, pa.array([host] * n, pa.string()), pa.array([date] * n, pa.string())],
                        schema=FLAT_SCHEMA)
                writer.write_batch(part)
                rows += part.num_rows
    finally:
        for writer in writers.values():
            writer.close()
            writer.sink.close()
    return rows, paths


def _file_name(capture: CaptureStream, meta: dict[str, str]) -> str:
    """``<first capture file>-<start time>-<random>.parquet``: unique per
    export, so exports into one dataset add up."""
    stem = _UNSAFE.sub("_", Path(capture.paths[0]).name.removesuffix(".arrows")) or "capture"
    start = _UNSAFE.sub("_", meta.get("start_time", "").replace(":", ""))
    return "-".join(p for p in (stem, start, secrets.token_hex(4)) if p) + ".parquet"


def _dates(batch: pa.RecordBatch) -> np.ndarray:
    """UTC date (YYYY-MM-DD) of each row's time ('unknown' without one)."""
    text = pc.strftime(batch.column("time"), format="%Y-%m-%d", locale="C")
    return np.asarray(pc.fill_null(text, "unknown").to_numpy(zero_copy_only=False), dtype=object)


def _writer(path: Path, schema: pa.Schema, meta: dict[str, str]) -> pq.ParquetWriter:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = create_fd(path)  # 0600 (or TRACER_FILE_MODE), never through a symlink
    except OSError as exc:
        raise TracerError(f"cannot write {path}: {exc.strerror or exc}") from None
    schema = schema.with_metadata({f"tracer.{k}": v for k, v in meta.items()})
    sink = os.fdopen(fd, "wb")
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    writer.sink = sink  # closed with the writer (ParquetWriter leaves a file object open)
    return writer
