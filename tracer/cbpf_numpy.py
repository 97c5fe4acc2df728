"""Classic BPF run over many packets at once with numpy: `tracer show`
applies a pcap-filter expression to the headers it synthesises from a
capture's rows (tracer/pcapng.py's build_headers), millions of rows without
a Python loop per row.

Classic BPF only jumps forward, so one pass over the instructions in order
runs every packet: at instruction i, the packets whose program counter is i
execute it. Semantics are libpcap's (bpf_filter.c): a load beyond the
captured bytes, or a division by a zero X, rejects the packet.
"""

from __future__ import annotations

import numpy as np

from tracer.cbpf import (ABS, ADD, ALU, AND, DIV, IMM, JA, JEQ, JGE, JGT, JMP, JSET, LD, LDX, LEN, LSH, MEM, MEMWORDS,
                         MISC, MOD, MSH, MUL, NEG, OR, RET, RSH, RVAL_A, SIZES, SRC_X, ST, STX, SUB, TAX, XOR, check, cls)
from tracer.pcap import CompiledFilter

_DONE = -1


def run(compiled: CompiledFilter, packets: np.ndarray, caplen: np.ndarray, wirelen: np.ndarray) -> np.ndarray:
    """Boolean per packet: does the filter accept it? ``packets`` is n x width
    bytes (uint8), ``caplen`` how many of each row's bytes are the packet's
    (at most width), ``wirelen`` the packet's whole length (`len`)."""
    check(compiled)
    n = packets.shape[0]
    width = packets.shape[1] if packets.ndim == 2 else 0
    caplen = np.minimum(np.asarray(caplen, np.int64), width)
    wirelen = np.asarray(wirelen, np.int64).astype(np.uint32)
    pc = np.zeros(n, np.int64)
    a = np.zeros(n, np.uint32)
    x = np.zeros(n, np.uint32)
    mem = np.zeros((MEMWORDS, n), np.uint32)
    accept = np.zeros(n, bool)
    for i, (code, jt, jf, k) in enumerate(compiled.insns):
        rows = np.flatnonzero(pc == i)
        if not len(rows):
            continue
        c = cls(code)
        kk = np.uint32(k)
        nxt = i + 1
        if c in (LD, LDX):
            mode = code & 0xE0
            if mode == IMM:
                value = np.full(len(rows), kk, np.uint32)
            elif mode == LEN:
                value = wirelen[rows]
            elif mode == MEM:
                value = mem[k, rows]
            else:
                size = 1 if mode == MSH else SIZES[code & 0x18]
                offset = np.full(len(rows), k, np.int64) if mode in (ABS, MSH) else x[rows].astype(np.int64) + k
                fits = offset + size <= caplen[rows]
                pc[rows[~fits]] = _DONE  # rejected: accept stays False
                rows, offset = rows[fits], offset[fits]
                value = np.zeros(len(rows), np.uint32)
                for b in range(size):
                    value = (value << np.uint32(8)) | packets[rows, offset + b].astype(np.uint32)
                if mode == MSH:
                    value = (value & np.uint32(0xF)) << np.uint32(2)
            if c == LD:
                a[rows] = value
            else:
                x[rows] = value
        elif c == ST:
            mem[k, rows] = a[rows]
        elif c == STX:
            mem[k, rows] = x[rows]
        elif c == ALU:
            op = code & 0xF0
            av = a[rows]
            src = x[rows] if code & SRC_X else np.full(len(rows), kk, np.uint32)
            if op in (DIV, MOD):
                zero = src == 0
                pc[rows[zero]] = _DONE
                rows, av, src = rows[~zero], av[~zero], src[~zero]
                a[rows] = av // src if op == DIV else av % src
            elif op in (LSH, RSH):
                small = src < 32
                shift = np.where(small, src, 0)
                shifted = av << shift if op == LSH else av >> shift
                a[rows] = np.where(small, shifted, np.uint32(0))
            elif op == NEG:
                a[rows] = np.uint32(0) - av
            else:
                a[rows] = {ADD: np.add, SUB: np.subtract, MUL: np.multiply, OR: np.bitwise_or, AND: np.bitwise_and,
                           XOR: np.bitwise_xor}[op](av, src)
        elif c == JMP:
            op = code & 0xF0
            if op == JA:
                pc[rows] = i + 1 + k
                continue
            av = a[rows]
            src = x[rows] if code & SRC_X else kk
            hit = {JEQ: lambda: av == src, JGT: lambda: av > src, JGE: lambda: av >= src,
                   JSET: lambda: (av & src) != 0}[op]()
            pc[rows] = np.where(hit, i + 1 + jt, i + 1 + jf)
            continue
        elif c == RET:
            accept[rows] = (a[rows] != 0) if code & 0x18 == RVAL_A else bool(k)
            pc[rows] = _DONE
            continue
        elif c == MISC:
            if code & 0xF8 == TAX:
                x[rows] = a[rows]
            else:
                a[rows] = x[rows]
        pc[rows] = nxt
    return accept
