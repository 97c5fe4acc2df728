"""What fake ring buffers share: BackgroundDrain reads a ring through
RingBufferDrain's readable() and read_into(); a fake says what a read
brings in its read_records(), as RingBufferDrain.read does."""


class ReadsInto:
    """readable() and read_into() over the fake's read_records() (a batch
    of records, ``walked`` set to the bytes they took)."""

    def readable(self) -> int:
        # an upper bound without a look at the ring: fakes count the looks
        return self.size // self.record_size

    def read_into(self, out, at: int) -> int:
        got = self.read_records()
        assert len(got) <= len(out) - at, "a fake read more records than readable() allowed for"
        out[at:at + len(got)] = got
        return len(got)
