"""Classic BPF (what libpcap compiles a pcap-filter expression to) translated
to C for the BCC programs.

Classic BPF only jumps forward, so the program is a straight line of
statements with forward gotos: nothing for the verifier to unroll, and every
path is at most as long as the program. The packet is read from a bounded
buffer (the first ``snap`` bytes of the packet from its IP header, copied by
bpf/pcap_filter.h); a load beyond what was captured rejects the packet, as
libpcap's own interpreter does beyond its captured length. So the C program
answers exactly what ``pcap_offline_filter`` answers on the same bytes
(tests/unit/test_cbpf.py and tests/e2e/test_pcap_filter.py hold them equal).
"""

from __future__ import annotations

from tracer.pcap import CompiledFilter, FilterError

# Instruction classes and fields (pcap/bpf.h).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
SRC_X = 0x08
RVAL_K, RVAL_X, RVAL_A = 0x00, 0x08, 0x10
TAX, TXA = 0x00, 0x80
MEMWORDS = 16
SIZES = {W: 4, H: 2, B: 1}
# Loads at SKF_AD_OFF (-0x1000) and above read Linux socket metadata
# (inbound/outbound, ifindex, vlan...), not packet bytes.
ANCILLARY = 0xFFFFF000

DEFAULT_SNAP = 256  # bytes of a packet the kernel filter sees, from its IP header


def cls(code: int) -> int:
    return code & 0x07


def check(compiled: CompiledFilter) -> None:
    """Raise FilterError (one line) for a program we cannot run: an unknown
    opcode, a jump out of the program, packet metadata a raw IPv4 packet
    does not carry."""
    n = len(compiled.insns)
    for i, (code, jt, jf, k) in enumerate(compiled.insns):
        c = cls(code)
        where = f"filter expression {compiled.expression!r}"
        if c in (LD, LDX) and code & 0xE0 in (ABS, IND) and k >= ANCILLARY:
            raise FilterError(f"{where}: reads packet metadata (inbound/outbound, ifindex, vlan...) that tracer's filter does not see")
        if c == LD and code & 0xE0 not in (IMM, ABS, IND, MEM, LEN) or c == LD and code & 0x18 not in SIZES:
            raise FilterError(f"{where}: unsupported load (opcode 0x{code:02x})")
        if c == LDX and code not in (LDX | W | IMM, LDX | W | MEM, LDX | W | LEN, LDX | B | MSH):
            raise FilterError(f"{where}: unsupported load (opcode 0x{code:02x})")
        if c in (LD, LDX, ST, STX) and code & 0xE0 == MEM and k >= MEMWORDS or c in (ST, STX) and k >= MEMWORDS:
            raise FilterError(f"{where}: scratch memory word {k} out of range")
        if c == ALU and (code & 0xF0) not in (ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR):
            raise FilterError(f"{where}: unsupported arithmetic (opcode 0x{code:02x})")
        if c == ALU and not code & SRC_X and code & 0xF0 in (DIV, MOD) and k == 0:
            raise FilterError(f"{where}: division by zero")
        if c == JMP:
            op = code & 0xF0
            if op not in (JA, JEQ, JGT, JGE, JSET):
                raise FilterError(f"{where}: unsupported jump (opcode 0x{code:02x})")
            targets = (i + 1 + k,) if op == JA else (i + 1 + jt, i + 1 + jf)
            if any(t >= n for t in targets):
                raise FilterError(f"{where}: jump out of the program at instruction {i}")
        if c == RET and code & 0x18 not in (RVAL_K, RVAL_A):
            raise FilterError(f"{where}: unsupported return (opcode 0x{code:02x})")
        if c == MISC and code & 0xF8 not in (TAX, TXA):
            raise FilterError(f"{where}: unsupported instruction (opcode 0x{code:02x})")
    if not n or cls(compiled.insns[-1][0]) not in (RET, JMP):
        raise FilterError(f"filter expression {compiled.expression!r}: the program does not end in a return")


def _load(size: int, offset: str) -> str:
    """Big-endian load of `size` bytes at P[offset] (byte loads: no alignment
    questions, and the verifier bounds each one)."""
    if size == 1:
        return f"(u32)P[{offset}]"
    if size == 2:
        return f"((u32)P[{offset}] << 8 | (u32)P[{offset} + 1])"
    return (f"((u32)P[{offset}] << 24 | (u32)P[{offset} + 1] << 16 | "
            f"(u32)P[{offset} + 2] << 8 | (u32)P[{offset} + 3])")


def _u32(k: int) -> str:
    return f"0x{k:x}U"


def to_c(compiled: CompiledFilter, snap: int = DEFAULT_SNAP, name: str = "pcap_filter_run") -> str:
    """C source of ``static int name(const u8 *P, u32 caplen, u32 wirelen)``:
    1 when the filter accepts the packet whose first ``caplen`` bytes
    (``caplen <= snap``) are at P, 0 otherwise. P must have ``snap + 8``
    readable bytes (indirect loads are masked into the buffer for the
    verifier; the caplen check makes the mask a no-op)."""
    if snap & (snap - 1) or snap < 64:
        raise ValueError("snap: a power of two, at least 64")
    check(compiled)
    insns = compiled.insns
    targets: set[int] = set()
    for i, (code, jt, jf, k) in enumerate(insns):
        if cls(code) == JMP:
            targets.update((i + 1 + k,) if code & 0xF0 == JA else (i + 1 + jt, i + 1 + jf))
    uses_mem = any(cls(c) in (ST, STX) or cls(c) in (LD, LDX) and c & 0xE0 == MEM for c, *_ in insns)
    mask = snap - 1
    body: list[str] = []

    def emit(i: int, text: str) -> None:
        body.append(f"{'L%d: ' % i if i in targets else '    '}{text}")

    for i, (code, jt, jf, k) in enumerate(insns):
        c = cls(code)
        if c == LD or c == LDX:
            reg = "A" if c == LD else "X"
            mode = code & 0xE0
            if mode == IMM:
                emit(i, f"{reg} = {_u32(k)};")
            elif mode == LEN:
                emit(i, f"{reg} = wirelen;")
            elif mode == MEM:
                emit(i, f"{reg} = M[{k}];")
            elif mode == MSH:
                if k + 1 > snap:
                    emit(i, "return 0; /* beyond what the filter sees */")
                else:
                    emit(i, f"if (caplen < {k + 1}) return 0; X = (P[{k}] & 0xf) << 2;")
            elif mode == ABS:
                size = SIZES[code & 0x18]
                if k + size > snap:
                    emit(i, "return 0; /* beyond what the filter sees */")
                else:
                    emit(i, f"if (caplen < {k + size}) return 0; A = {_load(size, str(k))};")
            else:  # IND
                size = SIZES[code & 0x18]
                emit(i, f"o = (u64)X + {k}; if (o + {size} > caplen) return 0; o &= {mask}; A = {_load(size, 'o')};")
        elif c == ST:
            emit(i, f"M[{k}] = A;")
        elif c == STX:
            emit(i, f"M[{k}] = X;")
        elif c == ALU:
            op = code & 0xF0
            src = "X" if code & SRC_X else _u32(k)
            if op == NEG:
                emit(i, "A = -A;")
            elif op in (DIV, MOD):
                sym = "/" if op == DIV else "%"
                guard = "if (X == 0) return 0; " if code & SRC_X else ""
                emit(i, f"{guard}A = A {sym} {src};")
            elif op in (LSH, RSH):
                sym = "<<" if op == LSH else ">>"
                if code & SRC_X:
                    emit(i, f"A = X < 32 ? A {sym} X : 0;")
                else:
                    emit(i, f"A = {'A ' + sym + ' ' + str(k) if k < 32 else '0'};")
            else:
                sym = {ADD: "+", SUB: "-", MUL: "*", OR: "|", AND: "&", XOR: "^"}[op]
                emit(i, f"A = A {sym} {src};")
        elif c == JMP:
            op = code & 0xF0
            if op == JA:
                emit(i, f"goto L{i + 1 + k};")
                continue
            src = "X" if code & SRC_X else _u32(k)
            cond = {JEQ: f"A == {src}", JGT: f"A > {src}", JGE: f"A >= {src}", JSET: f"(A & {src}) != 0"}[op]
            t, f = i + 1 + jt, i + 1 + jf
            if t == f:
                emit(i, f"goto L{t};" if t != i + 1 else ";")
            elif f == i + 1:
                emit(i, f"if ({cond}) goto L{t};")
            elif t == i + 1:
                emit(i, f"if (!({cond})) goto L{f};")
            else:
                emit(i, f"if ({cond}) goto L{t}; else goto L{f};")
        elif c == RET:
            emit(i, "return A != 0;" if code & 0x18 == RVAL_A else f"return {int(k != 0)};")
        else:  # MISC
            emit(i, "X = A;" if code & 0xF8 == TAX else "A = X;")
    expression = compiled.expression.replace("*/", "* /")
    lines = [
        f"/* Generated by tracer/cbpf.py from the pcap-filter expression: {expression}",
        " * (libpcap's classic BPF for raw IPv4; one statement per instruction). */",
        f"#define PCAP_SNAP {snap}",
        f"static __always_inline int {name}(const u8 *P, u32 caplen, u32 wirelen)",
        "{",
        "    u32 A = 0, X = 0;",
        "    u64 o = 0;",
        *(["    u32 M[16] = {};"] if uses_mem else []),
        "    (void)A; (void)X; (void)o; (void)wirelen;",
        *body,
        "    return 0;",
        "}",
    ]
    return "\n".join(lines) + "\n"


def expression_c(expression: str | None) -> str:
    """A pcap-filter expression as the C the BCC programs include ('' for
    none): compiled by libpcap, translated here. A bad expression raises
    FilterError (one line), before any kernel work."""
    if expression is None:
        return ""
    from tracer.pcap import compile_filter

    return to_c(compile_filter(expression))
