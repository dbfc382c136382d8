"""The per-step loops in pure PyTorch: the fallback of ``csrc/loops.cpp``, the same algorithm.

Same functions, same arguments, same in-place outputs as the compiled ``forward_loop`` and
``backward_loop`` (read that file's header for the layout); only the loop is Python, so each
step pays PyTorch's per-op overhead. Used when the extension cannot be built, and on GPUs.
"""

from __future__ import annotations

import torch

RNN_TANH, RNN_RELU, LSTM, GRU_BEFORE, GRU_AFTER = range(5)


def _slots(T: int, s: int, reverse: bool) -> tuple[int, int, int]:
    """Step s of the loop -> (time t, previous state slot, next state slot)."""
    t = T - 1 - s if reverse else s
    return (t, t + 1, t) if reverse else (t, t, t + 1)


def forward_loop(cell, xp, w_hh_t, b_hn, mask, reverse, states, cells, gates, extra, threads, h_mask=None) -> None:
    """``h_mask`` (B, H): the GRU's recurrent dropout (``gru_forward_loop``): the GEMMs see h_{t-1} · mask."""
    T, H = xp.shape[0], w_hh_t.shape[0]
    before = cell == GRU_BEFORE
    w_first = w_hh_t[:, : 2 * H] if before else w_hh_t  # W_hhᵀ (H, G·H)
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        h_prev = states[p]
        h_in = h_prev if h_mask is None else h_prev * h_mask
        hh = h_in @ w_first  # (B, G·H); reset="before": (B, 2H)
        a = xp[t]
        g = gates[t]
        if cell in (RNN_TANH, RNN_RELU):
            h = torch.tanh(a + hh) if cell == RNN_TANH else torch.relu(a + hh)  # h_t = φ(a)
            g.copy_(h)
        elif cell == LSTM:
            f, i, c_, o = (a + hh).chunk(4, 1)
            f, i, c_, o = torch.sigmoid(f), torch.sigmoid(i), torch.tanh(c_), torch.sigmoid(o)
            c = f * cells[p] + i * c_  # C_t = f C_{t-1} + i C̃
            h = o * torch.tanh(c)  # h_t = o tanh(C_t)
            g.copy_(torch.cat((f, i, c_, o), 1))
            cells[n].copy_(c)
        elif before:
            z = torch.sigmoid(a[:, :H] + hh[:, :H])
            r = torch.sigmoid(a[:, H : 2 * H] + hh[:, H:])
            rh = r * h_in
            nn_ = torch.tanh(a[:, 2 * H :] + rh @ w_hh_t[:, 2 * H :])  # n = tanh(W_xn x + b_n + W_hn (r h))
            h = h_prev + z * (nn_ - h_prev)  # h_t = (1 - z) h_{t-1} + z n
            g.copy_(torch.cat((z, r, nn_), 1))
            extra[t].copy_(rh)
        else:
            hn = hh[:, 2 * H :] if b_hn.numel() == 0 else hh[:, 2 * H :] + b_hn
            z = torch.sigmoid(a[:, :H] + hh[:, :H])
            r = torch.sigmoid(a[:, H : 2 * H] + hh[:, H : 2 * H])
            nn_ = torch.tanh(a[:, 2 * H :] + r * hn)  # n = tanh(W_xn x + b_n + r (W_hn h + b_hn))
            h = h_prev + z * (nn_ - h_prev)
            g.copy_(torch.cat((z, r, nn_), 1))
            extra[t].copy_(hn)
        states[n].copy_(h)
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)  # (B, 1): past the sequence's end
            states[n].copy_(torch.where(dead, h_prev, states[n]))
            if cells.numel():
                cells[n].copy_(torch.where(dead, cells[p], cells[n]))
            g.masked_fill_(dead, 0.0)
            if extra.numel():
                extra[t].masked_fill_(dead, 0.0)


def backward_loop(cell, w_hh, mask, reverse, states, cells, gates, extra, g_states, g_cells, g_gates, da, dhn, dh0, dc0,
                  threads, h_mask=None) -> None:
    T, H = gates.shape[0], w_hh.shape[1]
    last = 0 if reverse else T
    dh = g_states[last].clone()
    dc = g_cells[last].clone() if cells.numel() else None
    for s in reversed(range(T)):
        t, p, n = _slots(T, s, reverse)
        h_prev, gate, gg = states[p], gates[t], g_gates[t]
        if cell in (RNN_TANH, RNN_RELU):
            y, d = gate, dh + gg
            d_a = d * (1 - y * y) if cell == RNN_TANH else torch.where(y > 0, d, 0.0)
            dhh, direct = d_a, 0.0
        elif cell == LSTM:
            f, i, c_, o = gate.chunk(4, 1)
            gf, gi, gc, go = gg.chunk(4, 1)
            tc = torch.tanh(cells[n])
            dC = dc + dh * o * (1 - tc * tc)
            d_a = torch.cat(((dC * cells[p] + gf) * f * (1 - f), (dC * c_ + gi) * i * (1 - i),
                             (dC * i + gc) * (1 - c_ * c_), (dh * tc + go) * o * (1 - o)), 1)
            dc_prev = dC * f
            dhh, direct = d_a, 0.0
        else:
            z, r, nn_ = gate.chunk(3, 1)
            gz, gr, gn = gg.chunk(3, 1)
            dz = (dh * (nn_ - h_prev) + gz) * z * (1 - z)
            dn = (dh * z + gn) * (1 - nn_ * nn_)
            direct = dh * (1 - z)
            if cell == GRU_BEFORE:
                drh = dn @ w_hh[2 * H :]  # ∂(r h_{t-1})
                h_in = h_prev if h_mask is None else h_prev * h_mask
                dr = (drh * h_in + gr) * r * (1 - r)
                if h_mask is None:
                    direct = direct + drh * r
                else:
                    drh_r = drh * r
                d_a = torch.cat((dz, dr, dn), 1)
                dhh = d_a[:, : 2 * H]
            else:
                dr = (dn * extra[t] + gr) * r * (1 - r)
                d_a = torch.cat((dz, dr, dn), 1)
                dhh = torch.cat((dz, dr, dn * r), 1)
        w = w_hh[: 2 * H] if cell == GRU_BEFORE else w_hh
        if h_mask is None:
            d_prev = direct + dhh @ w + g_states[p]  # ∂h_{t-1}
        else:  # recurrent dropout: the recurrent share of ∂h_{t-1} passes the mask
            rec = dhh @ w if cell != GRU_BEFORE else drh_r + dhh @ w
            d_prev = direct + rec * h_mask + g_states[p]
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)
            d_a = d_a.masked_fill(dead, 0.0)
            d_prev = torch.where(dead, dh + g_states[p], d_prev)
            if dc is not None:
                dc_prev = torch.where(dead, dc, dc_prev)
        da[t].copy_(d_a)
        if cell == GRU_AFTER:
            dhn[t].copy_(da[t, :, 2 * H :] * gate[:, H : 2 * H])
        dh = d_prev
        if dc is not None:
            dc = dc_prev + g_cells[p]
    dh0.copy_(dh)
    if dc is not None:
        dc0.copy_(dc)


def lstm_forward_loop(xp, w_hh_t, peep, coupled, h_mask, mask, reverse, states, cells, gates, threads) -> None:
    """The LSTM with its variants: peepholes (``peep`` (P·H): p_f, p_i, p_o; p_f, p_o when coupled; or
    empty), ``coupled`` (CIFG: i = 1 - f, xp and W_hhᵀ have the G = 3 blocks f, g, o) and recurrent
    dropout (``h_mask`` (B, H) or empty: the GEMM's input is h_{t-1} · mask). ``gates`` is always
    (T, B, 4H), (f, i, g, o), so the traces read alike."""
    T, H = xp.shape[0], w_hh_t.shape[0]
    pf = pi = po = None
    if peep.numel():
        pf, pi, po = (peep[:H], None, peep[H:]) if coupled else peep.chunk(3)
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        h_prev, c_prev = states[p], cells[p]
        h_in = h_prev * h_mask if h_mask.numel() else h_prev
        a = xp[t] + h_in @ w_hh_t
        if coupled:
            af, ag, ao = a.chunk(3, 1)
        else:
            af, ai, ag, ao = a.chunk(4, 1)
        f = torch.sigmoid(af if pf is None else af + pf * c_prev)
        if coupled:
            i = 1 - f
        else:
            i = torch.sigmoid(ai if pi is None else ai + pi * c_prev)
        g = torch.tanh(ag)
        c = f * c_prev + i * g
        o = torch.sigmoid(ao if po is None else ao + po * c)  # the output gate's peephole sees C_t
        gates[t].copy_(torch.cat((f, i, g, o), 1))
        cells[n].copy_(c)
        states[n].copy_(o * torch.tanh(c))
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)
            states[n].copy_(torch.where(dead, h_prev, states[n]))
            cells[n].copy_(torch.where(dead, c_prev, cells[n]))
            gates[t].masked_fill_(dead, 0.0)


def lstm_backward_loop(w_hh, peep, coupled, h_mask, mask, reverse, states, cells, gates, g_states, g_cells, g_gates,
                       da, dh0, dc0, threads) -> None:
    """The backward loop of ``lstm_forward_loop``: da (T, B, G·H) in the rows of W_hh (f, g, o when coupled)."""
    T, H = gates.shape[0], w_hh.shape[1]
    pf = pi = po = None
    if peep.numel():
        pf, pi, po = (peep[:H], None, peep[H:]) if coupled else peep.chunk(3)
    last = 0 if reverse else T
    dh = g_states[last].clone()
    dc = g_cells[last].clone()
    for s in reversed(range(T)):
        t, p, n = _slots(T, s, reverse)
        f, i, g, o = gates[t].chunk(4, 1)
        gf, gi, gg, go = g_gates[t].chunk(4, 1)
        c, c_prev = cells[n], cells[p]
        tc = torch.tanh(c)
        da_o = (dh * tc + go) * o * (1 - o)
        dC = dc + dh * o * (1 - tc * tc)
        if po is not None:
            dC = dC + da_o * po
        df = dC * c_prev + gf
        di = dC * g + gi
        da_g = (dC * i + gg) * (1 - g * g)
        dc_prev = dC * f
        if coupled:
            da_f = (df - di) * f * (1 - f)  # i = 1 - f
            d_a = torch.cat((da_f, da_g, da_o), 1)
        else:
            da_f, da_i = df * f * (1 - f), di * i * (1 - i)
            d_a = torch.cat((da_f, da_i, da_g, da_o), 1)
            if pi is not None:
                dc_prev = dc_prev + da_i * pi
        if pf is not None:
            dc_prev = dc_prev + da_f * pf
        rec = d_a @ w_hh
        d_prev = (rec * h_mask if h_mask.numel() else rec) + g_states[p]
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)
            d_a = d_a.masked_fill(dead, 0.0)
            d_prev = torch.where(dead, dh + g_states[p], d_prev)
            dc_prev = torch.where(dead, dc, dc_prev)
        da[t].copy_(d_a)
        dh = d_prev
        dc = dc_prev + g_cells[p]
    dh0.copy_(dh)
    dc0.copy_(dc)


def gru_forward_loop(cell, xp, w_hh_t, b_hn, h_mask, mask, reverse, states, cells, gates, extra, threads) -> None:
    """The GRU with recurrent dropout: ``forward_loop`` with the sequence's mask ``h_mask`` (B, H)."""
    forward_loop(cell, xp, w_hh_t, b_hn, mask, reverse, states, cells, gates, extra, threads, h_mask=h_mask)


def gru_backward_loop(cell, w_hh, h_mask, mask, reverse, states, cells, gates, extra, g_states, g_cells, g_gates, da,
                      dhn, dh0, dc0, threads) -> None:
    """The backward loop of ``gru_forward_loop``."""
    backward_loop(cell, w_hh, mask, reverse, states, cells, gates, extra, g_states, g_cells, g_gates, da, dhn, dh0, dc0,
                  threads, h_mask=h_mask)
