/* Kernel addresses -> keyed ids (tracer/opaque_ids.py): SipHash-2-4 of
 * each 8-byte address under the key's two words, cut to 48 bits; 0 stays 0
 * (unknown), and a hash of 0 becomes 1.
 *
 * Why C: numpy runs SipHash as ~100 whole-array operations (after a
 * dictionary encoding to hash each distinct address once), about half a
 * microsecond of every traced packet; one loop here is a few ns a value.
 * opaque_ids._siphash24 stays the reference (tests compare the ids). */
#include "parts.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                                      \
    do {                                                                                                              \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                                     \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                                        \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                                        \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                                     \
    } while (0)

static inline uint64_t siphash24_word(uint64_t k0, uint64_t k1, uint64_t m) {
    uint64_t v0 = k0 ^ 0x736F6D6570736575ULL, v1 = k1 ^ 0x646F72616E646F6DULL;
    uint64_t v2 = k0 ^ 0x6C7967656E657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    const uint64_t last = (uint64_t)8 << 56;  /* the message length, 8, in the final block */
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xFF;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

PyObject *native_address_ids(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *in_obj, *out_obj;
    unsigned long long k0, k1;
    int bits;
    if (!PyArg_ParseTuple(args, "OOKKi", &in_obj, &out_obj, &k0, &k1, &bits)) return NULL;
    if (bits < 1 || bits > 64) {
        PyErr_SetString(PyExc_ValueError, "address_ids: bits must be 1..64");
        return NULL;
    }
    column c[2] = {0}; /* the addresses (words), their ids written */
    if (load_column(in_obj, &c[0], COL_UINT64, "address_ids", "addresses") < 0
        || load_column(out_obj, &c[1], COL_UINT64 | COL_WRITABLE, "address_ids", "out") < 0) {
        release_columns(c, 2);
        return NULL;
    }
    if (c[1].n != c[0].n) {
        PyErr_SetString(PyExc_ValueError, "address_ids: out must have the size of the addresses");
        release_columns(c, 2);
        return NULL;
    }
    /* each id is written after its address is read: in place is fine, but
     * out shifted into the addresses would overwrite ones not yet read */
    if (c[1].view.buf != c[0].view.buf && overlap(&c[0].view, &c[1].view)) {
        PyErr_SetString(PyExc_ValueError, "address_ids: out overlaps the addresses (other than in place)");
        release_columns(c, 2);
        return NULL;
    }
    const uint64_t mask = bits == 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1;
    const uint64_t *v = (const uint64_t *)c[0].v;
    uint64_t *o = (uint64_t *)c[1].v;
    const Py_ssize_t n = c[0].n;
    /* The addresses of a batch repeat (a few hundred flows, the allocator's
     * few dozen sk_buffs): each hashed once per slot of a small direct-mapped
     * cache, ~3 ns a value against SipHash's ~19. 0 marks an empty slot (the
     * address 0 is never looked up). */
    enum { CACHE_BITS = 10 };
    static _Thread_local struct { uint64_t address, id; } cache[1 << CACHE_BITS];
    Py_BEGIN_ALLOW_THREADS
    memset(cache, 0, sizeof cache);  /* another call's key: nothing kept across calls */
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint64_t a = v[i];
        if (!a) {
            o[i] = 0;
            continue;
        }
        const size_t at = (size_t)((a * 0x9E3779B97F4A7C15ULL) >> (64 - CACHE_BITS));
        if (cache[at].address != a) {
            const uint64_t id = siphash24_word(k0, k1, a) & mask;
            cache[at].address = a;
            cache[at].id = id ? id : 1;
        }
        o[i] = cache[at].id;
    }
    Py_END_ALLOW_THREADS
    release_columns(c, 2);
    Py_RETURN_NONE;
}

const char native_address_ids_doc[] =
    "address_ids(addresses, out, k0, k1, bits)\n\n"
    "Into ``out`` (a writable uint64 array as long as the uint64 addresses): per address its\n"
    "SipHash-2-4 under the key words k0, k1, masked to ``bits``; 0 for 0, and 1\n"
    "where the masked hash is 0. See tracer/opaque_ids.py.";
