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


def forward_loop(cell, xp, w_hh_t, b_hn, mask, reverse, states, cells, gates, extra, threads) -> None:
    """The plain cells; the LSTM and the GRU are their variant loops with every variant off."""
    e = xp.new_empty(0)
    if cell == LSTM:
        return lstm_forward_loop(xp, w_hh_t, e, False, e, mask, reverse, states, cells, gates, threads, [], e, e)
    if cell in (GRU_BEFORE, GRU_AFTER):
        return gru_forward_loop(cell, xp, w_hh_t, b_hn, e, mask, reverse, states, cells, gates, extra, threads, [], e)
    T = xp.shape[0]
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        h_prev = states[p]
        a = xp[t] + h_prev @ w_hh_t
        h = torch.tanh(a) if cell == RNN_TANH else torch.relu(a)  # h_t = φ(a)
        gates[t].copy_(h)
        states[n].copy_(h)
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)  # (B, 1): past the sequence's end
            states[n].copy_(torch.where(dead, h_prev, states[n]))
            gates[t].masked_fill_(dead, 0.0)


def backward_loop(cell, w_hh, mask, reverse, states, cells, gates, extra, g_states, g_cells, g_gates, da, dhn, dh0, dc0,
                  threads) -> None:
    e = gates.new_empty(0)
    if cell == LSTM:
        return lstm_backward_loop(w_hh, e, False, e, mask, reverse, states, cells, gates, g_states, g_cells, g_gates, da,
                                  dh0, dc0, threads, [], e, e, e)
    if cell in (GRU_BEFORE, GRU_AFTER):
        return gru_backward_loop(cell, w_hh, e, mask, reverse, states, cells, gates, extra, g_states, g_cells, g_gates,
                                 da, dhn, dh0, dc0, threads, [], e)
    T = gates.shape[0]
    last = 0 if reverse else T
    dh = g_states[last].clone()
    for s in reversed(range(T)):
        t, p, n = _slots(T, s, reverse)
        y, d = gates[t], dh + g_gates[t]
        d_a = d * (1 - y * y) if cell == RNN_TANH else torch.where(y > 0, d, 0.0)
        d_prev = d_a @ w_hh + g_states[p]  # ∂h_{t-1}
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)
            d_a = d_a.masked_fill(dead, 0.0)
            d_prev = torch.where(dead, dh + g_states[p], d_prev)
        da[t].copy_(d_a)
        dh = d_prev
    dh0.copy_(dh)


EPS = 1e-5  # layer norm's ε (cells/variants.EPS)


def _ln(a, gain, bias):
    """LN over the rows of a: (gain · â + bias, â, 1/σ) with â = (a − μ)/σ, σ = √(var + ε) (biased var)."""
    mu = a.mean(1, keepdim=True)
    rstd = torch.rsqrt((a - mu).pow(2).mean(1, keepdim=True) + EPS)
    hat = (a - mu) * rstd
    return hat * gain + bias, hat, rstd.squeeze(1)


def _ln_back(dy, gain, hat, rstd):
    """∂a of LN from ∂y: 1/σ · (g − mean(g) − â · mean(g â)), g = ∂y · gain."""
    g = dy * gain
    return rstd.unsqueeze(1) * (g - g.mean(1, keepdim=True) - hat * (g * hat).mean(1, keepdim=True))


def _zoneout_forward(zone, t, prev, new):
    """Zoneout: each unit keeps its previous value where zone[t, k] (the keep mask of state k) is 1."""
    return tuple(torch.where(zone[t, k] != 0, p, n) for k, (p, n) in enumerate(zip(prev, new)))


def lstm_forward_loop(xp, w_hh_t, peep, coupled, h_mask, mask, reverse, states, cells, gates, threads, norm, zone,
                      c_pre) -> None:
    """The LSTM with its variants: peepholes (``peep`` (P·H): p_f, p_i, p_o; p_f, p_o when coupled; or
    empty), ``coupled`` (CIFG: i = 1 - f, xp and W_hhᵀ have the G = 3 blocks f, g, o), recurrent
    dropout (``h_mask`` (B, H) or empty: the GEMM's input is h_{t-1} · mask), layer norm (``norm``:
    empty, or [g_hh, b_hh (G·H), g_c, b_c (H), uhat (T, B, G·H), urstd (T, B), chat (T, B, H), crstd (T, B)]:
    LN of the GEMM's output and of C_t before its tanh, the normalised values and 1/σ saved) and zoneout
    (``zone`` (T, 2, B, H) keep masks of h and C, or empty; then ``c_pre`` (T, B, H) keeps C_t before
    zoneout). ``gates`` is always (T, B, 4H), (f, i, g, o), so the traces read alike."""
    T, H = xp.shape[0], w_hh_t.shape[0]
    pf = pi = po = None
    if peep.numel():
        pf, pi, po = (peep[:H], None, peep[H:]) if coupled else peep.chunk(3)
    if norm:
        g_hh, b_hh, g_c, b_c, uhat, urstd, chat, crstd = norm
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        h_prev, c_prev = states[p], cells[p]
        h_in = h_prev * h_mask if h_mask.numel() else h_prev
        hh = h_in @ w_hh_t
        if norm:
            hh, uhat[t], urstd[t] = _ln(hh, g_hh, b_hh)  # LN(W_h h_{t-1})
        a = xp[t] + hh
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
        if norm:
            c_out, chat[t], crstd[t] = _ln(c, g_c, b_c)  # h_t = o tanh(LN(C_t))
            h = o * torch.tanh(c_out)
        else:
            h = o * torch.tanh(c)
        gates[t].copy_(torch.cat((f, i, g, o), 1))
        if zone.numel():
            c_pre[t].copy_(c)
            h, c = _zoneout_forward(zone, t, (h_prev, c_prev), (h, c))
        cells[n].copy_(c)
        states[n].copy_(h)
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)
            states[n].copy_(torch.where(dead, h_prev, states[n]))
            cells[n].copy_(torch.where(dead, c_prev, cells[n]))
            gates[t].masked_fill_(dead, 0.0)
            if zone.numel():
                c_pre[t].masked_fill_(dead, 0.0)
            if norm:
                for buf in (uhat[t], urstd[t], chat[t], crstd[t]):
                    buf.masked_fill_(dead if buf.dim() == 2 else dead[:, 0], 0.0)


def lstm_backward_loop(w_hh, peep, coupled, h_mask, mask, reverse, states, cells, gates, g_states, g_cells, g_gates,
                       da, dh0, dc0, threads, norm, zone, c_pre, g_cpre) -> None:
    """The backward loop of ``lstm_forward_loop``: da (T, B, G·H) in the rows of W_hh (f, g, o when coupled).
    With layer norm ``norm`` is the forward's eight tensors and [dhh (T, B, G·H), dg_hh, db_hh (G·H), dg_c, db_c (H)]:
    the gradient w.r.t. the raw GEMM output h_{t-1} W_hhᵀ (for ∂W_hh), and the gains' and biases' gradients.
    With zoneout ``g_cpre`` (T, B, H) or empty is the gradient w.r.t. ``c_pre`` (the traces' C_t)."""
    T, H = gates.shape[0], w_hh.shape[1]
    pf = pi = po = None
    if peep.numel():
        pf, pi, po = (peep[:H], None, peep[H:]) if coupled else peep.chunk(3)
    if norm:
        g_hh, b_hh, g_c, b_c, uhat, urstd, chat, crstd, dhh, *dln = norm
        sums = [torch.zeros_like(t) for t in dln]  # Σ ∂y â, Σ ∂y of LN(W_h ·) and of LN(C_t)
    last = 0 if reverse else T
    dh = g_states[last].clone()
    dc = g_cells[last].clone()
    for s in reversed(range(T)):
        t, p, n = _slots(T, s, reverse)
        live = None if not mask.numel() else (mask[t] != 0).unsqueeze(1)
        f, i, g, o = gates[t].chunk(4, 1)
        gf, gi, gg, go = g_gates[t].chunk(4, 1)
        carry_h = carry_c = 0.0
        if zone.numel():  # the units that kept their previous value pass the gradient straight back
            kh, kc = zone[t, 0] != 0, zone[t, 1] != 0
            if live is not None:
                kh, kc = kh & live, kc & live
            carry_h, carry_c = torch.where(kh, dh, 0.0), torch.where(kc, dc, 0.0)
            dh_all, dc_all = dh, dc
            dh, dc = torch.where(kh, 0.0, dh), torch.where(kc, 0.0, dc)
            if g_cpre.numel():
                dc = dc + g_cpre[t]
            c = c_pre[t]
        else:
            dh_all, dc_all = dh, dc
            c = cells[n]
        c_prev = cells[p]
        if norm:  # h_t = o tanh(LN(C_t))
            y = chat[t] * g_c + b_c
            tc = torch.tanh(y)
            dy = dh * o * (1 - tc * tc)
            dy = dy if live is None else torch.where(live, dy, 0.0)
            sums[2] += (dy * chat[t]).sum(0)
            sums[3] += dy.sum(0)
            dC_h = _ln_back(dy, g_c, chat[t], crstd[t])
        else:
            tc = torch.tanh(c)
            dC_h = dh * o * (1 - tc * tc)
        da_o = (dh * tc + go) * o * (1 - o)
        dC = dc + dC_h
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
        if live is not None:
            d_a = d_a.masked_fill(~live, 0.0)
        d_u = d_a
        if norm:  # through LN(W_h h_{t-1}): ∂ of the raw GEMM output
            d_u = _ln_back(d_a, g_hh, uhat[t], urstd[t])
            sums[0] += (d_a * uhat[t]).sum(0)
            sums[1] += d_a.sum(0)
            if live is not None:
                d_u = d_u.masked_fill(~live, 0.0)
            dhh[t].copy_(d_u)
        rec = d_u @ w_hh
        d_prev = (rec * h_mask if h_mask.numel() else rec) + g_states[p]
        if live is not None:
            d_prev = torch.where(live, d_prev, dh_all + g_states[p])
            dc_prev = torch.where(live, dc_prev, dc_all)
        da[t].copy_(d_a)
        dh = d_prev + carry_h
        dc = dc_prev + carry_c + g_cells[p]
    dh0.copy_(dh)
    dc0.copy_(dc)
    if norm:
        for out, total in zip(dln, sums):
            out.copy_(total)


def gru_forward_loop(cell, xp, w_hh_t, b_hn, h_mask, mask, reverse, states, cells, gates, extra, threads, norm,
                     zone) -> None:
    """The GRU with its variants: ``forward_loop`` with recurrent dropout (``h_mask`` (B, H) or empty),
    layer norm (``norm``: empty, or [g_hh, b_hh (3H), uhat (T, B, W), urstd (T, B), nhat (T, B, H), nrstd (T, B)]:
    reset="after": LN of the GEMM's output over W = 3H; reset="before": LN over W = 2H of the z, r GEMM and
    LN over H of the candidate's W_hn (r h), gain and bias rows 2H:, whose values ``nhat``, ``nrstd`` keep;
    empty for "after") and zoneout (``zone`` (T, 1, B, H) keep masks of h, or empty)."""
    T, H = xp.shape[0], w_hh_t.shape[0]
    before = cell == GRU_BEFORE
    w_first = w_hh_t[:, : 2 * H] if before else w_hh_t  # W_hhᵀ (H, G·H)
    if norm:
        g_hh, b_hh, uhat, urstd, nhat, nrstd = norm
        W = 2 * H if before else 3 * H
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        h_prev = states[p]
        h_in = h_prev if not h_mask.numel() else h_prev * h_mask
        hh = h_in @ w_first  # (B, G·H); reset="before": (B, 2H)
        if norm:
            hh, uhat[t], urstd[t] = _ln(hh, g_hh[:W], b_hh[:W])
        a = xp[t]
        if before:
            z = torch.sigmoid(a[:, :H] + hh[:, :H])
            r = torch.sigmoid(a[:, H : 2 * H] + hh[:, H:])
            rh = r * h_in
            hn = rh @ w_hh_t[:, 2 * H :]
            if norm:
                hn, nhat[t], nrstd[t] = _ln(hn, g_hh[2 * H :], b_hh[2 * H :])
            nn_ = torch.tanh(a[:, 2 * H :] + hn)  # n = tanh(W_xn x + b_n + W_hn (r h)), or + LN(W_hn (r h))
            extra[t].copy_(rh)
        else:
            hn = hh[:, 2 * H :] if b_hn.numel() == 0 else hh[:, 2 * H :] + b_hn
            z = torch.sigmoid(a[:, :H] + hh[:, :H])
            r = torch.sigmoid(a[:, H : 2 * H] + hh[:, H : 2 * H])
            nn_ = torch.tanh(a[:, 2 * H :] + r * hn)  # n = tanh(W_xn x + b_n + r (W_hn h + b_hn))
            extra[t].copy_(hn)
        h = h_prev + z * (nn_ - h_prev)  # h_t = (1 - z) h_{t-1} + z n
        if zone.numel():
            (h,) = _zoneout_forward(zone, t, (h_prev,), (h,))
        gates[t].copy_(torch.cat((z, r, nn_), 1))
        states[n].copy_(h)
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)
            states[n].copy_(torch.where(dead, h_prev, states[n]))
            gates[t].masked_fill_(dead, 0.0)
            extra[t].masked_fill_(dead, 0.0)
            if norm:
                uhat[t].masked_fill_(dead, 0.0)
                urstd[t].masked_fill_(dead[:, 0], 0.0)
                if before:
                    nhat[t].masked_fill_(dead, 0.0)
                    nrstd[t].masked_fill_(dead[:, 0], 0.0)


def gru_backward_loop(cell, w_hh, h_mask, mask, reverse, states, cells, gates, extra, g_states, g_cells, g_gates, da,
                      dhn, dh0, dc0, threads, norm, zone) -> None:
    """The backward loop of ``gru_forward_loop``; with layer norm ``norm`` is the forward's six tensors and
    dhh (T, B, 3H), the gradient w.r.t. the raw GEMM outputs (h_{t-1} W_hhᵀ; "before": its z, r blocks, then
    W_hn (r h)) for ∂W_hh, and dg_hh, db_hh (3H), the gain's and bias's gradients."""
    T, H = gates.shape[0], w_hh.shape[1]
    before = cell == GRU_BEFORE
    if norm:
        g_hh, b_hh, uhat, urstd, nhat, nrstd, dhh, dg_hh, db_hh = norm
        W = 2 * H if before else 3 * H
        sum_g, sum_b = torch.zeros_like(dg_hh), torch.zeros_like(db_hh)  # Σ ∂y â, Σ ∂y
    last = 0 if reverse else T
    dh = g_states[last].clone()
    for s in reversed(range(T)):
        t, p, n = _slots(T, s, reverse)
        live = None if not mask.numel() else (mask[t] != 0).unsqueeze(1)
        h_prev, gate, gg = states[p], gates[t], g_gates[t]
        h_in = h_prev if not h_mask.numel() else h_prev * h_mask
        carry = 0.0
        dh_all = dh
        if zone.numel():
            kh = zone[t, 0] != 0
            if live is not None:
                kh = kh & live
            carry, dh = torch.where(kh, dh, 0.0), torch.where(kh, 0.0, dh)
        z, r, nn_ = gate.chunk(3, 1)
        gz, gr, gn = gg.chunk(3, 1)
        dz = (dh * (nn_ - h_prev) + gz) * z * (1 - z)
        dn = (dh * z + gn) * (1 - nn_ * nn_)
        direct = dh * (1 - z)
        if before:
            du_n = dn if not norm else _ln_back(dn, g_hh[2 * H :], nhat[t], nrstd[t])  # ∂ W_hn (r h)
            drh = du_n @ w_hh[2 * H :]  # ∂(r h_{t-1} · mask)
            dr = (drh * h_in + gr) * r * (1 - r)
            d_a = torch.cat((dz, dr, dn), 1)
            dy = d_a[:, : 2 * H]
            du = dy if not norm else _ln_back(dy, g_hh[:W], uhat[t], urstd[t])
            rec = drh * r + du @ w_hh[: 2 * H]
            if norm:
                d_raw = torch.cat((du, du_n), 1)
        else:
            dr = (dn * extra[t] + gr) * r * (1 - r)
            d_a = torch.cat((dz, dr, dn), 1)
            dy = torch.cat((dz, dr, dn * r), 1)
            du = dy if not norm else _ln_back(dy, g_hh, uhat[t], urstd[t])
            rec = du @ w_hh
            d_raw = du
        d_prev = direct + (rec if not h_mask.numel() else rec * h_mask) + g_states[p]
        if live is not None:
            d_a = d_a.masked_fill(~live, 0.0)
            d_prev = torch.where(live, d_prev, dh_all + g_states[p])
        da[t].copy_(d_a)
        if cell == GRU_AFTER:
            dhn[t].copy_(da[t, :, 2 * H :] * gate[:, H : 2 * H])
        if norm:
            dhh[t].copy_(d_raw if live is None else d_raw.masked_fill(~live, 0.0))
            dy, hat = ((dy, uhat[t]) if not before else (d_a, torch.cat((uhat[t], nhat[t]), 1)))
            dy = dy if live is None else dy.masked_fill(~live, 0.0)
            sum_g += (dy * hat).sum(0)
            sum_b += dy.sum(0)
        dh = d_prev + carry
    dh0.copy_(dh)
    if norm:
        dg_hh.copy_(sum_g)
        db_hh.copy_(sum_b)


def linear_states(a, b, h0, mask, reverse):
    """States (T+1, B, H) of h_t = a_t h_{t-1} + b_t (minGRU, minLSTM) for a, b (T, B, H), in differentiable
    torch operations (``mask`` (T, B) or None: a row past its end keeps its state); slots as ``forward_loop``'s."""
    T = a.shape[0]
    hs = [None] * (T + 1)
    hs[T if reverse else 0] = h0
    for s in range(T):
        t, p, n = _slots(T, s, reverse)
        h = a[t] * hs[p] + b[t]
        hs[n] = h if mask is None else torch.where((mask[t] == 0).unsqueeze(1), hs[p], h)
    return torch.stack(hs)


def linear_forward_loop(a, b, mask, reverse, states) -> None:
    """``linear_states`` into ``states`` (whose slot T (reverse) or 0 holds h_0)."""
    T = a.shape[0]
    states.copy_(linear_states(a, b, states[T if reverse else 0], mask if mask.numel() else None, reverse))


def linear_backward_loop(a, mask, reverse, states, g_states, da, db, dh0) -> None:
    """∂a_t = ∂h_t h_{t-1}, ∂b_t = ∂h_t, ∂h_{t-1} = a_t ∂h_t + the outputs' own gradient at h_{t-1}."""
    T = a.shape[0]
    dh = g_states[0 if reverse else T].clone()
    for s in reversed(range(T)):
        t, p, n = _slots(T, s, reverse)
        d_a, d_b, d_prev = dh * states[p], dh, a[t] * dh + g_states[p]
        if mask.numel():
            dead = (mask[t] == 0).unsqueeze(1)
            d_a, d_b = d_a.masked_fill(dead, 0.0), d_b.masked_fill(dead, 0.0)
            d_prev = torch.where(dead, dh + g_states[p], d_prev)
        da[t].copy_(d_a)
        db[t].copy_(d_b)
        dh = d_prev
    dh0.copy_(dh)
