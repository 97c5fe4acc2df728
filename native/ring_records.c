/* Records out of the BPF ring buffer's mapping into fixed-size rows
 * (tracer/drain.py RingBufferDrain.read_records).
 *
 * A journey record is as long as the hops it uses (bpf/journey.h
 * journey_emit: the slot's first bytes up to its last hop), so records
 * cannot be viewed as one array: each is found by the one before it
 * (kernel/bpf/ringbuf.c: an 8-byte header, u32 len with bit 31 BUSY and
 * bit 30 DISCARD, then the sample, padded to 8 bytes), copied into its row
 * and the row's tail zeroed. Why C: the walk is a loop over records, ~1-2 µs
 * each in Python; here it is the copy. drain._copy_records stays the
 * reference (tests compare the rows). */
#include "native.h"

#include <stdint.h>
#include <string.h>

#define RB_BUSY_BIT (1u << 31)
#define RB_DISCARD_BIT (1u << 30)
#define RB_HEADER 8

PyObject *native_ring_records(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ring_obj, *out_obj;
    Py_ssize_t start, avail, row, max_rows;
    if (!PyArg_ParseTuple(args, "OnnOnn", &ring_obj, &start, &avail, &out_obj, &row, &max_rows)) return NULL;
    Py_buffer ring, out;
    if (PyObject_GetBuffer(ring_obj, &ring, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&ring);
        return NULL;
    }
    PyObject *result = NULL;
    if (start < 0 || avail < 0 || start % 8 || start + avail > ring.len || row <= 0 || max_rows < 0
        || max_rows > out.len / row) {
        PyErr_SetString(PyExc_ValueError, "ring_records: start/avail outside the ring, or out smaller than the rows");
        goto done;
    }
    const uint8_t *base = (const uint8_t *)ring.buf + start;
    uint8_t *rows = (uint8_t *)out.buf;
    Py_ssize_t off = 0, n = 0;
    uint32_t bad = 0;
    Py_BEGIN_ALLOW_THREADS
    while (off + RB_HEADER <= avail && n < max_rows) {
        /* The kernel commits a record by clearing BUSY (an xchg after its
         * data): the header is read before the data. */
        uint32_t hdr = __atomic_load_n((const uint32_t *)(base + off), __ATOMIC_ACQUIRE);
        if (hdr & RB_BUSY_BIT) break;
        uint32_t len = hdr & ~(RB_BUSY_BIT | RB_DISCARD_BIT);
        Py_ssize_t total = ((Py_ssize_t)len + RB_HEADER + 7) & ~(Py_ssize_t)7;
        if ((Py_ssize_t)len > row || off + total > avail) {
            bad = len ? len : 1;
            break;
        }
        if (!(hdr & RB_DISCARD_BIT)) {
            uint8_t *dst = rows + n * row;
            memcpy(dst, base + off + RB_HEADER, len);
            memset(dst + len, 0, row - len);
            n++;
        }
        off += total;
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("nnI", n, off, bad);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&ring);
    return result;
}

const char native_ring_records_doc[] =
    "ring_records(ring, start, avail, out, row, max_rows) -> (rows, consumed, bad)\n\n"
    "Walk the BPF ring buffer's records from byte ``start`` of the mapping ``ring`` over at most\n"
    "``avail`` bytes (producer - consumer position), copying each committed sample into the next\n"
    "``row``-byte row of the writable buffer ``out`` (its tail zeroed), discarded ones skipped,\n"
    "up to ``max_rows`` rows; stop at the first record still being written. ``consumed``: the\n"
    "bytes walked (the consumer position moves by it). ``bad``: the length of a record longer\n"
    "than a row (the walk stops before it), else 0. See tracer/drain.py.";
