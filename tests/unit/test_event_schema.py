"""EVENT_SCHEMA is generated from RAW_FIELDS (events.py), as the C struct
and the dtype are; the columns a capture has on disk stay exactly these."""

from __future__ import annotations

import pyarrow as pa

from tracer import events

_S = pa.dictionary(pa.int32(), pa.string())
ON_DISK = pa.schema([
    ("time", pa.timestamp("ns", tz="UTC")), ("ktime_ns", pa.uint64()), ("hook", _S), ("nat_stage", _S),
    ("ifindex", pa.uint32()), ("ifname", _S), ("if_role", _S), ("out_ifindex", pa.uint32()), ("netns", pa.uint32()),
    ("container_id", _S), ("container_name", _S), ("skb", pa.uint64()), ("packet_id", pa.uint64()),
    ("flow_id", pa.uint64()), ("direction", _S), ("protocol", _S), ("src_ip", _S), ("src_port", pa.uint16()),
    ("dst_ip", _S), ("dst_port", pa.uint16()), ("ip_id", pa.uint16()), ("ttl", pa.uint8()), ("length", pa.uint16()),
    ("tcp_flags", pa.uint8()), ("tcp_seq", pa.uint32()), ("tcp_ack", pa.uint32()), ("drop_reason", _S),
    ("cpu", pa.uint16()), ("flags", pa.uint8()), ("tcp_doff", pa.uint8()),
])


def test_generated_schema_is_the_one_on_disk():
    assert events.EVENT_SCHEMA.serialize().to_pybytes() == ON_DISK.serialize().to_pybytes()


def test_every_raw_field_is_a_column_of_its_type():
    for f in events.RAW_FIELDS:
        column = events.EVENT_SCHEMA.field(f.name).type
        assert column == f.arrow_type
        if not f.decoded:  # a number: as wide as the record's field
            assert column.bit_width == 8 * events.RAW_DTYPE[f.name].itemsize
