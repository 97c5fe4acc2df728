"""The human journey text of many journeys at once, column-wise.

``render.render_journey`` builds one journey's block from Journey and Hop
objects: clear, and about 20 µs per packet, which under load is most of what
`trace` costs. This renders the same text, byte for byte, from JourneyRows:
every distinct piece (a hook label, an interface, an address pair, a padding
run, a colour code) is formatted once, each line is a run of indices into
that pool, and one Arrow ``take`` lays the whole batch out. Per journey,
Python only formats the two short ids. ``render_journey`` stays the
definition (tests compare the two on real records).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.decode import _factorize as _factorize_any
from tracer.journey_json import _string_buffer
from tracer.journey_rows import JourneyRows, _endpoint_plain, _factorize, _lut
from tracer.journeys import VERDICTS, _flags_text
from tracer.ids import id_texts
from tracer.wallclock import clock_array
from tracer.render import _NAT_STYLE, _VERDICT_STYLE, NAT_NAMES, _style_parts, format_dt
from tracer.text import printable
from tracer.interning import Interner
from tracer.native import native

_ARROW = " → "
_MAX_PAD = 256

def _dt_texts(dt: np.ndarray) -> tuple[list[str], np.ndarray]:
    """format_dt of every hop, formatted once per distinct rounded value.
    The rounding is done on integers, exactly as Python rounds the float;
    values exactly half-way (where the float's own error decides) and
    negative ones are formatted by format_dt itself."""
    dt = dt.astype(np.int64)
    unit = np.where(dt < 1_000_000, 0, np.where(dt < 1_000_000_000, 1, 2))
    step = np.array([100, 10_000, 10_000_000], np.int64)[unit]  # 0.1 µs, 0.01 ms, 0.01 s
    q, r = np.divmod(dt, step)
    half = (r * 2 == step) | (dt < 0)  # and a drop stamped before a later hop (another CPU's clock)
    rounded = q + (r * 2 > step)
    key = rounded * 3 + unit
    key[half] = -1 - np.arange(int(half.sum()))  # each its own key, formatted exactly
    uniq, inverse = _factorize_any(key)  # negative keys too
    texts = []
    half_values = dt[half].tolist()
    for k in uniq.tolist():
        if k < 0:
            texts.append(format_dt(half_values[-1 - k]))
            continue
        v, u = divmod(k, 3)
        if u == 0:
            texts.append(f"+{v // 10}.{v % 10}µs")
        elif u == 1:
            texts.append(f"+{v // 100}.{v % 100:02d}ms")
        else:
            texts.append(f"+{v // 100}.{v % 100:02d}s")
    return texts, inverse


def render_rows(jr: JourneyRows, color: bool, compiled: bool = True, into=None) -> memoryview:
    """The text of ``"".join(render_journey(j, color) + "\\n" for j in
    journeys)``, encoded as UTF-8: for writing straight out, without a
    Python string per piece. By the compiled loop where it was built
    (tracer/native.py; ``compiled``: unless False), else below: the same
    bytes. ``into``: the direct output's stage (tracer/direct_output.py:
    ``buffer``, ``at``, ``ensure``) the compiled loop writes the text into
    at ``at``, where the output writes it from; the block is then a view of
    it, good until the stage's next use."""
    count, n = len(jr), len(jr.rows)
    if not count:
        return memoryview(b"")
    module = native() if compiled and jr.timed is None else None  # hops without a ktime_ns ('-'): below
    if module is not None:
        from tracer.native_render import native_text_block

        if into is None:
            return memoryview(native_text_block(jr, color, module))
        from tracer.direct_output import written_in

        return written_in(into, lambda buffer, at: native_text_block(jr, color, module, buffer, at))
    bold = _style_parts(color, bold=True)
    red = _style_parts(color, fg="red", bold=True)
    nat_style = _style_parts(color, **_NAT_STYLE)
    starts = jr.starts
    journey_of_hop = np.repeat(np.arange(count), np.diff(starts))
    first = starts[:-1]

    # --- per hop: the texts and their widths -----------------------------------
    dt_texts, dt_idx = _dt_texts(jr.dt)
    if jr.timed is not None:  # a hop without a ktime_ns: no dt, '-' (format_dt)
        dt_texts, dt_idx = dt_texts + [format_dt(None)], np.where(jr.timed, dt_idx, len(dt_texts))
    hook_values = jr.hook.values
    stage_values = jr.stage.values
    n_st = len(stage_values)
    hook_key = jr.hook.codes * n_st + jr.stage.codes
    hk_uniq, hk_idx = _factorize(hook_key)
    hook_texts = []
    for k in hk_uniq.tolist():
        h, st = divmod(k, n_st)
        hook, stage = hook_values[h], stage_values[st]
        hook_texts.append(f"{hook}/{stage}" if stage else hook)
    # Names from the system, escaped for the terminal (tracer/text.py).
    ct_values = [printable(v) if v else v for v in jr.container.values]
    reason_names = [printable(v) if v else v for v in jr.drop_reason.values]
    if_texts = [printable(v) if v else "-" for v in jr.ifname.values]
    ct_texts = [v or "" for v in ct_values]

    def lengths(texts: list[str], idx: np.ndarray) -> np.ndarray:
        return np.array([len(t) for t in texts], np.int64)[idx] if len(idx) else np.zeros(0, np.int64)

    l_dt = lengths(dt_texts, dt_idx)
    l_hook = lengths(hook_texts, hk_idx)
    l_if = lengths(if_texts, jr.ifname.codes)
    l_ct = lengths(ct_texts, jr.container.codes)
    w_dt = np.maximum.reduceat(l_dt, first)
    w_hook = np.maximum.reduceat(l_hook, first)
    w_if = np.maximum.reduceat(l_if, first)
    w_ct = np.maximum.reduceat(l_ct, first)
    has_ct = (w_ct > 0)[journey_of_hop]

    pad_dt = np.minimum(w_dt[journey_of_hop] - l_dt, _MAX_PAD - 1)
    pad_hook = np.minimum(w_hook[journey_of_hop] - l_hook, _MAX_PAD - 1)
    pad_if = np.minimum(w_if[journey_of_hop] - l_if, _MAX_PAD - 1)
    pad_ct = np.where(has_ct, np.minimum(w_ct[journey_of_hop] - l_ct, _MAX_PAD - 1), 0)
    ct_code = np.where(has_ct, jr.container.codes, 0)

    # Addresses: 'src → dst' per distinct pair; '?' for none.
    pidx, (s_keys, d_keys) = jr.pairs()
    s_keys, d_keys = s_keys.tolist(), d_keys.tolist()
    s_text = [_endpoint_plain(jr.src_ip[k >> 17], (k >> 1) & 0xFFFF, k & 1) or "?" for k in s_keys]
    d_text = [_endpoint_plain(jr.dst_ip[k >> 17], (k >> 1) & 0xFFFF, k & 1) or "?" for k in d_keys]
    pair_texts = [f"{s}{_ARROW}{d}" for s, d in zip(s_text, d_text)]

    # NAT between a hop and the previous one with addresses (drop hops say
    # nothing and are passed over: nat_translation).
    is_drop = _lut(hook_values, lambda v: v == "drop")[jr.hook.codes]
    s_known = np.array([jr.src_ip[k >> 17] is not None for k in s_keys], bool)[pidx]
    d_known = np.array([jr.dst_ip[k >> 17] is not None for k in d_keys], bool)[pidx]
    carries = ~is_drop & s_known & d_known
    pos = np.where(carries, np.arange(n), -1)
    prev_all = np.maximum.accumulate(np.concatenate(([-1], pos[:-1]))) if n else pos
    prev = np.where(prev_all >= first[journey_of_hop], prev_all, -1)  # within the journey only
    has_prev = (prev >= 0) & ~is_drop & s_known & d_known
    p = np.maximum(prev, 0)
    # Compared as shown (ICMP shows no ids, so an id NAT rewrote is no change).
    s_shown = _text_ids(s_text)[pidx]
    d_shown = _text_ids(d_text)[pidx]
    dst_changed = has_prev & (d_shown != d_shown[p])
    src_changed = has_prev & (s_shown != s_shown[p])
    reply = (jr.direction == 2)[journey_of_hop]
    nat_code = dst_changed * 1 + src_changed * 2 + reply * 4 * (dst_changed | src_changed)
    nat_texts = [""] * 8
    for code, name in NAT_NAMES.items():
        nat_texts[code] = "  " + nat_style[0] + name + nat_style[1]

    # Drop hops: the reason and where the packet was last seen.
    reason_values = [v or "dropped" for v in reason_names]
    seen = jr.last_seen
    seen_hook = np.where(seen >= 0, hk_idx[np.maximum(seen, 0)], -1)
    seen_texts = {-1: ""} | {k: f" (last seen {hook_texts[k]})" for k in set(seen_hook.tolist()) if k >= 0}
    drop_texts: Interner[str] = Interner()
    drop_of_hop = np.zeros(n, np.int64)
    drop_of_hop[is_drop] = [drop_texts.id_of(f"{reason_values[r]}{seen_texts[s]}") for r, s in
                            zip(jr.drop_reason.codes[is_drop].tolist(), seen_hook[journey_of_hop[is_drop]].tolist())]

    # --- per journey: the header ------------------------------------------------
    flags = jr.tcp_flags_key()  # 256: not TCP
    proto_names = [v or "?" for v in jr.protocol.values]
    pf_u, pf_idx = _factorize(jr.protocol.codes * 257 + flags)
    pf_texts = []
    for k in pf_u.tolist():
        c, f = divmod(k, 257)
        ft = _flags_text(f) if f < 256 else ""
        pf_texts.append(f"{proto_names[c]} {ft}" if ft else proto_names[c])
    directions = {0: "?", 1: "original", 2: "reply"}
    n_c, n_r = len(jr.container.values), len(jr.drop_reason.values)
    rk_u, rk_idx = _factorize((((jr.direction.astype(np.int64) * n_c + jr.container_of) * n_c + jr.container_to) * 3
                               + jr.verdict) * n_r + jr.reason)
    rest_a, rest_b = [], []  # "  direction  " + flow id + "  [container]  verdict": split around the flow id
    for k in rk_u.tolist():
        k, r = divmod(k, n_r)
        k, v = divmod(k, 3)
        k, to = divmod(k, n_c)
        d, c = divmod(k, n_c)
        verdict, reason, container = VERDICTS[v], reason_names[r], ct_values[c]
        if container and ct_values[to]:  # from one container to another
            container += " → " + ct_values[to]
        vs = _style_parts(color, **_VERDICT_STYLE.get(verdict, {}))
        rest_a.append(f"  {directions[d]}  ")
        rest_b.append(f"{'  [' + container + ']' if container else ''}  {vs[0]}{verdict}{' ' + reason if reason else ''}{vs[1]}\n")

    # --- lay it out ---------------------------------------------------------------
    # Seven pieces per header (bold on, clock, " #", packet id, the middle up to
    # "flow ", flow id, the rest) and four per hop (indent, dt, hook ..
    # container, addresses or drop reason to the newline): each piece but
    # the clock, ids and dt is one of few distinct texts, formatted once.
    texts: list[str] = [bold[0], " #"]
    # Indent: red on a drop hop, padding to the journey's widest dt.
    lead_u, lead_idx = _factorize(is_drop * _MAX_PAD + pad_dt)
    lead_at = len(texts)
    texts += [(red[0] if k >= _MAX_PAD else "") + "    " + " " * (k % _MAX_PAD) for k in lead_u.tolist()]
    dt_at = len(texts)
    texts += dt_texts
    # Hook, interface and container, each padded to the journey's widest.
    n_if, n_ct = len(if_texts), len(ct_texts)
    mid_key = ((((hk_idx * _MAX_PAD + pad_hook) * n_if + jr.ifname.codes) * _MAX_PAD + pad_if) * 2 + has_ct) * n_ct
    mid_key = (mid_key + ct_code) * _MAX_PAD + pad_ct
    mid_u, mid_idx = _factorize_any(mid_key)
    mid_at = len(texts)
    for k in mid_u.tolist():
        k, pc_ = divmod(k, _MAX_PAD)
        k, c = divmod(k, n_ct)
        k, with_ct = divmod(k, 2)
        k, pi = divmod(k, _MAX_PAD)
        k, i = divmod(k, n_if)
        hk, ph = divmod(k, _MAX_PAD)
        ct_part = f"  {ct_texts[c]}{' ' * pc_}" if with_ct else ""
        texts.append(f"  {hook_texts[hk]}{' ' * ph}  {if_texts[i]}{' ' * pi}{ct_part}  ")
    # Addresses and NAT, or the drop's reason (red off), to the end of the line.
    tail_key = np.where(is_drop, len(pair_texts) * 8 + drop_of_hop, pidx * 8 + nat_code)
    tail_u, tail_idx = _factorize(tail_key)
    tail_at = len(texts)
    for k in tail_u.tolist():
        if k >= len(pair_texts) * 8:
            texts.append(drop_texts.values[k - len(pair_texts) * 8] + red[1] + "\n")
        else:
            texts.append(pair_texts[k // 8] + nat_texts[k % 8] + "\n")
    # The header from the protocol to "flow ", and after the flow id.
    head_key = (pf_idx * len(pair_texts) + pidx[first]) * len(rest_a) + rk_idx
    head_u, head_idx = _factorize_any(head_key)
    head_at = len(texts)
    for k in head_u.tolist():
        k, rk = divmod(k, len(rest_a))
        pf, pr = divmod(k, len(pair_texts))
        texts.append(f" {pf_texts[pf]} {pair_texts[pr]}{bold[1]}{rest_a[rk]}flow ")
    rest_at = len(texts)
    texts += rest_b
    pid_at = len(texts)
    flow_at, clock_at = pid_at + count, pid_at + 2 * count
    journeys = np.arange(count)
    header = (0, clock_at + journeys, 1, pid_at + journeys, head_at + head_idx, flow_at + journeys, rest_at + rk_idx)
    hop = (lead_at + lead_idx, dt_at + dt_idx, mid_at + mid_idx, tail_at + tail_idx)
    H, P = len(header), len(hop)
    line_at = journeys * H + first * P
    idx = np.empty(count * H + n * P, np.int64)
    for i, piece in enumerate(header):
        idx[line_at + i] = piece
    hop_at = line_at[journey_of_hop] + H + (np.arange(n) - first[journey_of_hop]) * P
    for i, col in enumerate(hop):
        idx[hop_at + i] = col
    clocks = pc.fill_null(clock_array(jr.wall_ns), "-")  # the time of day the journey started
    pool = pa.concat_arrays([pa.array(texts, pa.string()), id_texts(jr.packet_id), id_texts(jr.flow_id), clocks])
    data, offsets = _string_buffer(pool.take(pa.array(idx)))
    return data[int(offsets[0]) : int(offsets[-1])]


def _text_ids(texts: list[str]) -> np.ndarray:
    """One id per distinct text."""
    seen: dict[str, int] = {}
    return np.array([seen.setdefault(t, len(seen)) for t in texts], np.int64)
