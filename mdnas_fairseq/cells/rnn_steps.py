"""One time step of the DARTS recurrent cell, written for speed (pure PyTorch).

The cell's Python loop over time steps calls one of these functions per step; everything that does
not depend on the previous state is done before the loop (see :class:`~.rnn.DartsRNNCell`):

* the input half of the first state's projection, ``x_t W_0x`` for all ``t``, is one matrix
  product over the whole sequence (as cuDNN's LSTM does); a step only adds ``h_{t-1} W_0h``;
* the K' candidate matrices of node ``j`` (``node_weights[j]``, (K', H, 2H)) are packed side by
  side into one (H, K' * 2H) matrix, so node ``j`` costs ONE matrix product of all its ``j``
  input states at once, ``(j * B, H) @ (H, K' * 2H)``, followed by elementwise work only
  (gate, activation, highway, weighting by softmax(alpha); :class:`MixedNode`, with a
  hand-written backward) and a LayerNorm, which ``torch.compile`` fuses into one kernel per node
  and direction;
* in the ``"node"`` layout (DARTS' one matrix per node), node ``j`` is ``(j * B, H) @ (H, 2H)``,
  each activation applied once to the stacked pre-activations and one weighted sum of the stacked
  activations and states (:class:`SharedMixedNode`);
* a derived (genotype) cell is a fixed chain of matrix products, one per node (eager: one per wave
  of nodes whose inputs are computed, :func:`wave_step`); a batch whose
  samples belong to D domains runs all D chains at once (:func:`domains_step`: the samples grouped
  by domain, each node one batched product of the domains' stacked matrices), not D loops.

The derived step takes the chain either as Python ints (eager: the chosen activation is called
directly) or as integer tensors (compiled: one graph serves every domain's chain; the activation
is selected with ``torch.where``, which is exact).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}

LN_EPS = 1e-5  # nn.LayerNorm's default, used by the cell since its first version


def _norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS)


def first_state(
    xw: Tensor, h: Tensor, w0h: Tensor, mask_h: Optional[Tensor], probe: Optional[Tensor]
):
    """``LN(h + sigmoid(c0) * (tanh(g0) - h))`` with ``[c0, g0] = x_t W_0x + (h * mask_h) W_0h``;
    returns it and the product's left factor ``h * mask_h``."""
    hm = h if mask_h is None else h * mask_h
    c0, g0 = torch.addmm(xw if probe is None else xw + probe, hm, w0h).chunk(2, dim=-1)
    return _norm(h + torch.sigmoid(c0) * (torch.tanh(g0) - h)), hm


def _product(a: Tensor, w: Tensor, probe: Optional[Tensor]) -> Tensor:
    z = torch.matmul(a, w)
    return z if probe is None else z + probe


def _derivative(op: str, v: Tensor, a: Tensor) -> Tensor:
    """d act / d v at ``v``, given ``a = act(v)``."""
    if op == "tanh":
        return 1 - a * a
    if op == "sigmoid":
        return a * (1 - a)
    if op == "relu":
        return (v > 0).to(v.dtype)
    return torch.ones_like(v)


def _activations(value: Tensor, ops: Sequence[str], with_grad: bool):
    """``act_k(value[..., k, :])`` stacked on axis 2, and (``with_grad``) their derivatives."""
    acts, grads = [], []
    for op, v in zip(ops, value.unbind(2)):
        a = ACTIVATIONS[op](v)
        acts.append(a)
        if with_grad:
            grads.append(_derivative(op, v, a))
    return torch.stack(acts, 2), (torch.stack(grads, 2) if with_grad else None)


def _weights(mix: Tensor) -> Tensor:
    """Mixing weights (j, K') or (B, j, K') as a (j, 1 or B, K', 1) factor of (j, B, K', H)."""
    return mix[:, None, :, None] if mix.dim() == 2 else mix.permute(1, 0, 2).unsqueeze(-1)


class MixedNode(torch.autograd.Function):
    """``sum_{i,k} w_ik * (s_i + sigmoid(c_ik) * (act_k(g_ik) - s_i))`` from the node's matrix
    product ``z`` = [c | g] (j, B, K', 2, H) and its input states ``s`` (j, B, H).

    A hand-written backward recomputes the gates and activations from ``z`` instead of storing
    them: the forward writes only its (B, H) result, and compiled, each direction is one fused
    pass over ``z``.
    """

    @staticmethod
    def forward(ctx, z: Tensor, s: Tensor, mix: Tensor, ops: Sequence[str]) -> Tensor:
        ctx.save_for_backward(z, s, mix)
        ctx.ops = ops
        gate, value = z.unbind(3)
        act, _ = _activations(value, ops, with_grad=False)
        si = s.unsqueeze(2)
        return ((si + torch.sigmoid(gate) * (act - si)) * _weights(mix)).sum((0, 2))

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, s, mix = ctx.saved_tensors
        gate, value = z.unbind(3)
        c = torch.sigmoid(gate)
        act, d_act = _activations(value, ctx.ops, with_grad=True)
        si = s.unsqueeze(2)
        g = grad.unsqueeze(0).unsqueeze(2)  # (1, B, 1, H)
        d_out = _weights(mix) * g  # (j, B, K', H)
        d_z = torch.stack([d_out * (act - si) * c * (1 - c), d_out * c * d_act], dim=3)
        d_s = (d_out * (1 - c)).sum(2)
        d_mix = None
        if ctx.needs_input_grad[2]:  # the architecture step; not the weight step
            out_g = (si + c * (act - si)) * g
            d_mix = out_g.sum((1, 3)) if mix.dim() == 2 else out_g.sum(3).permute(1, 0, 2)
        return d_z, d_s, d_mix, None


def node_mixing_weights(mix: Tensor, nodes: int) -> Tuple[Tensor, ...]:
    """The ``"node"`` layout's per-node mixing factors, made once per sequence (the time loop then
    slices nothing and sums nothing over the operations): node ``j``'s (j, 1 or B, K' + 1, 1) tensor
    ``[w_i1 .. w_iK', -P_i]`` with ``P_i = sum_k w_ik``, from ``mix`` (E, K') or (B, E, K')."""
    out, start = [], 0
    for j in range(1, nodes + 1):
        w = _weights(mix[..., start : start + j, :])  # (j, 1 or B, K', 1)
        start += j
        out.append(torch.cat([w, -w.sum(2, keepdim=True)], 2))
    return tuple(out)


def _act_backward(op: str, grad: Tensor, value: Tensor, act: Optional[Tensor]) -> Tensor:
    """``grad * act'(value)`` (``act`` = ``ACTIVATIONS[op](value)``, needed for tanh and sigmoid)."""
    if op == "tanh":
        return torch.ops.aten.tanh_backward(grad, act)
    if op == "sigmoid":
        return torch.ops.aten.sigmoid_backward(grad, act)
    if op == "relu":
        return torch.ops.aten.threshold_backward(grad, value, 0)
    return grad


class SharedMixedNode(torch.autograd.Function):
    """DARTS' mixed node, one matrix per node shared by the candidate activations (``search_weights
    = "node"``): ``sum_{i,k} w_ik * (s_i + c_i * (act_k(g_i) - s_i))`` with ``[c_i | g_i] = z_i``
    (j, B, 2, H), one pre-activation per input state ``s_i`` (j, B, H), written as
    ``sum_i (P_i s_i + c_i Z_i)`` with ``Z_i = sum_k w_ik act_k(g_i) - P_i s_i``: ONE weighted sum of
    the stacked activations and the state (``wp`` from :func:`node_mixing_weights`), so that each
    activation is applied once to the stack of inputs. The backward keeps ``c`` and ``Z`` from the
    forward, recomputes the activations from ``z``, and computes the mixing weights' gradient only
    when they need one (the architecture step, not the weight step).
    """

    @staticmethod
    def forward(ctx, z: Tensor, s: Tensor, wp: Tensor, ops: Sequence[str]) -> Tensor:
        gate, value = z.unbind(2)
        c = torch.sigmoid(gate)
        stacked = torch.stack([ACTIVATIONS[op](value) for op in ops] + [s], 2)
        mixed = (stacked * wp).sum(2)  # Z_i
        ctx.save_for_backward(z, s, wp, c, mixed)
        ctx.ops = ops
        return torch.addcmul(c * mixed, wp[:, :, -1], s, value=-1).sum(0)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, s, wp, c, mixed = ctx.saved_tensors
        value = z[:, :, 1]
        g = grad.unsqueeze(0)  # (1, B, H)
        d_mixed = c * g
        d_gate = torch.ops.aten.sigmoid_backward(mixed * g, c)
        acts = [ACTIVATIONS[op](value) if op in ("tanh", "sigmoid") else None for op in ctx.ops]
        d_value = None
        for k, (op, act) in enumerate(zip(ctx.ops, acts)):
            term = _act_backward(op, d_mixed * wp[:, :, k], value, act)
            d_value = term if d_value is None else d_value + term
        rest = d_mixed - g  # d/d s_i of c_i Z_i + P_i s_i, over -P_i: (c_i - 1) g
        d_s = rest * wp[:, :, -1]
        d_wp = None
        if ctx.needs_input_grad[2]:
            # d w_ik = sum_h g c_i act_k(g_i); d (-P_i) = sum_h g (c_i - 1) s_i
            stacked = torch.stack(
                [a if a is not None else ACTIVATIONS[op](value) for op, a in zip(ctx.ops, acts)], 2
            )
            d_wp = torch.cat(
                [
                    (stacked * d_mixed.unsqueeze(2)).sum(3, keepdim=True),
                    (s * rest).sum(2, keepdim=True).unsqueeze(2),
                ],
                2,
            )
            if wp.shape[1] == 1:
                d_wp = d_wp.sum(1, keepdim=True)
        return torch.stack([d_gate, d_value], 2), d_s, d_wp, None


def search_step(
    xw: Tensor,
    h: Tensor,
    w0h: Tensor,
    node_mats: Sequence[Tensor],
    mix: Tensor,
    mask_h: Optional[Tensor],
    ops: Sequence[str],
    probes: Optional[Sequence[Tensor]] = None,
) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """One step of the mixed cell; returns ``h_t`` and the left factors of its N + 1 products.

    Args:
        xw: (B, 2H) the input projection ``x_t W_0x`` of this step.
        h: (B, H) the previous state. w0h: (H, 2H) the state half of ``W_0``.
        node_mats: N matrices (H, K' * 2H), node ``n``'s candidate matrices side by side, column
            blocks ordered (operation, [gate | value], H) (``search_weights="op"``); or N matrices
            (H, 2H), one per node shared by its candidate activations (``"node"``, DARTS).
            (Separate tensors, not one stacked tensor: the backward then writes each node's
            gradient once, with no scatter.)
        mix: mixing weights of the K' weighted operations, (E, K') for the whole batch or
            (B, E, K') per sample, edges grouped by node as in :class:`SearchSpace`; in the
            ``"node"`` layout, the per-node factors of :func:`node_mixing_weights` (a tuple).
        mask_h: (B, H) variational dropout mask on states entering a matrix, or None.
        ops: the K' operation names.
        probes: zeros added to the N + 1 products (see :mod:`.deferred`), or None.
    """
    hidden = h.shape[-1]
    k = len(ops)
    # "node" layout (DARTS): node matrices (H, 2H), mix per node (node_mixing_weights)
    shared = isinstance(mix, (tuple, list))
    s0, hm = first_state(xw, h, w0h, mask_h, None if probes is None else probes[0])
    # the states so far, (j, B, H), grown by one per node (as DARTS' cell does): the backward then
    # adds each state's gradients once per node, where stacking the list anew at every node would
    # add them once per (node, later node)
    prev, lefts = s0.unsqueeze(0), [hm]
    start = 0
    for n in range(len(node_mats)):
        j = n + 1
        src = (prev if mask_h is None else prev * mask_h).reshape(-1, hidden)
        z = _product(src, node_mats[n], None if probes is None else probes[j])
        if shared:
            node = SharedMixedNode.apply(z.view(j, -1, 2, hidden), prev, mix[n], ops)
        else:
            w = mix[..., start : start + j, :]
            start += j
            node = MixedNode.apply(z.view(j, -1, k, 2, hidden), prev, w, ops)
        prev = torch.cat([prev, _norm(node).unsqueeze(0)])
        lefts.append(src)
    return prev[1:].mean(0), tuple(lefts)


Index = Union[int, Tensor]


def _apply_op(value: Tensor, op: Index, ops: Sequence[str]) -> Tensor:
    """``act(value)`` for the operation ``ops[op]``; ``op`` an int, or a 0-d integer tensor (then
    every candidate is computed and ``torch.where`` picks, exactly)."""
    if isinstance(op, int):
        return ACTIVATIONS[ops[op]](value)
    out = ACTIVATIONS[ops[-1]](value)
    for code in range(len(ops) - 2, -1, -1):
        out = torch.where(op == code, ACTIVATIONS[ops[code]](value), out)
    return out


def derived_step(
    xw: Tensor,
    h: Tensor,
    w0h: Tensor,
    node_mats: Sequence[Tensor],
    inputs: Union[Sequence[int], Tensor],
    op_codes: Union[Sequence[int], Tensor],
    mask_h: Optional[Tensor],
    ops: Sequence[str],
    probes: Optional[Sequence[Tensor]] = None,
) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """One step of a derived cell: node ``n`` applies operation ``ops[op_codes[n]]`` with matrix
    ``node_mats[n]`` (H, 2H) to state ``inputs[n]``. ``inputs`` / ``op_codes``: Python ints or (N,)
    integer tensors (then the chain is data, so one compiled graph serves every domain). Returns
    ``h_t`` and the left factors of its N + 1 products, as :func:`search_step`."""
    s0, hm = first_state(xw, h, w0h, mask_h, None if probes is None else probes[0])
    states, lefts = [s0], [hm]
    for n in range(len(node_mats)):
        i = inputs[n]
        # a tensor index stays on the device: index_select, never an implicit .item()
        s = (
            states[i]
            if isinstance(i, int)
            else torch.stack(states).index_select(0, inputs[n : n + 1])[0]
        )
        src = s if mask_h is None else s * mask_h
        gate, value = _product(src, node_mats[n], None if probes is None else probes[n + 1]).chunk(
            2, dim=-1
        )
        act = _apply_op(value, op_codes[n], ops)
        states.append(_norm(s + torch.sigmoid(gate) * (act - s)))
        lefts.append(src)
    return torch.stack(states[1:]).mean(0), tuple(lefts)


Wave = Tuple[Tuple[int, ...], Union[int, Tuple[int, ...]], Tuple[Tuple[int, int], ...]]


def chain_waves(inputs: Sequence[int], codes: Sequence[int]) -> Tuple[Wave, ...]:
    """A derived chain (node ``n``'s input state ``inputs[n]`` and operation code ``codes[n]``,
    nodes numbered from 1, state 0 the first state) as waves of nodes whose inputs are all
    computed before them: node ``j`` is in wave ``wave(inputs[j]) + 1``, the first state in wave 0.
    A wave is (its nodes, ordered by operation code; their input state if they all read the same
    one, else the input of each; (code, count) runs of its operations)."""
    level = [0]
    for i in inputs:
        level.append(level[i] + 1)
    waves = []
    for w in range(1, max(level) + 1):
        nodes = tuple(
            sorted(
                (j for j in range(1, len(level)) if level[j] == w), key=lambda j: (codes[j - 1], j)
            )
        )
        ins = tuple(inputs[j - 1] for j in nodes)
        runs: list = []
        for j in nodes:
            if runs and runs[-1][0] == codes[j - 1]:
                runs[-1][1] += 1
            else:
                runs.append([codes[j - 1], 1])
        waves.append((nodes, ins[0] if len(set(ins)) == 1 else ins, tuple(map(tuple, runs))))
    return tuple(waves)


def wave_step(
    xw: Tensor,
    h: Tensor,
    w0h: Tensor,
    wave_mats: Sequence[Tensor],
    waves: Sequence[Wave],
    mask_h: Optional[Tensor],
    ops: Sequence[str],
    probes: Optional[Sequence[Tensor]] = None,
) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """One step of a derived cell with its edges batched (:func:`chain_waves`): the ``m`` nodes of a
    wave cost ONE product, ``(B, H) @ (H, m * 2H)`` when they read the same state (``wave_mats[w]``
    their matrices side by side) or ``(m, B, H) @ (m, H, 2H)`` (stacked) when they read different
    ones, then each activation once on its run of nodes and the highway and normalisation once on
    the (m, B, H) stack. Computes what :func:`derived_step` computes; returns ``h_t`` and the left
    factors of the wave products (one per wave)."""
    hidden = h.shape[-1]
    s0, hm = first_state(xw, h, w0h, mask_h, None if probes is None else probes[0])
    states = [s0] + [s0] * sum(len(w[0]) for w in waves)
    lefts = [hm]
    total = None
    for w, (nodes, inputs, runs) in enumerate(waves):
        probe = None if probes is None else probes[w + 1]
        if isinstance(inputs, int):
            s = states[inputs]
            src = s if mask_h is None else s * mask_h
            z = _product(src, wave_mats[w], probe).view(-1, len(nodes), 2, hidden).transpose(0, 1)
            s = s.unsqueeze(0)
        else:
            s = torch.stack([states[i] for i in inputs])
            src = s if mask_h is None else s * mask_h
            z = _product(src, wave_mats[w], probe).view(len(nodes), -1, 2, hidden)
        gate, value = z.unbind(2)
        if len(runs) == 1:
            act = ACTIVATIONS[ops[runs[0][0]]](value)
        else:
            starts = [0]
            for _, count in runs:
                starts.append(starts[-1] + count)
            act = torch.cat(
                [ACTIVATIONS[ops[c]](value[a:b]) for (c, _), a, b in zip(runs, starts, starts[1:])]
            )
        new = _norm(s + torch.sigmoid(gate) * (act - s))
        for r, j in enumerate(nodes):
            states[j] = new[r]
        total = new.sum(0) if total is None else total + new.sum(0)
        lefts.append(src)
    return total / (len(states) - 1), tuple(lefts)


def domains_step(
    xw: Tensor,
    h: Tensor,
    w0h: Tensor,
    node_mats: Sequence[Tensor],
    inputs: Tensor,
    op_codes: Tensor,
    chain: Tuple[Tuple[Optional[int], Tuple[int, ...]], ...],
    mask_h: Optional[Tensor],
    ops: Sequence[str],
    probes: Optional[Sequence[Tensor]] = None,
) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """One step of D derived cells at once, a batch whose samples belong to several domains.

    The rows of ``xw`` (D * B, 2H), ``h`` and ``mask_h`` (D * B, H) are grouped by domain, B rows
    each; node ``n``'s matrices are stacked, ``node_mats[n]`` (D, H, 2H) (domain ``d``'s own choice),
    so a node costs one batched product whatever D. ``inputs`` (N, D): the input state of node ``n``
    in domain ``d``; ``op_codes`` (N, D, 1, 1): its operation. ``chain`` (Python, one entry per
    node): the input state if every domain uses the same one, else None, and the distinct operation
    codes the domains use (only those activations are computed; ``torch.where`` picks, exactly).
    Returns ``h_t`` (D * B, H) and the left factors of the N + 1 products, as :func:`derived_step`.
    """
    hidden = h.shape[-1]
    s0, hm = first_state(xw, h, w0h, mask_h, None if probes is None else probes[0])
    domains = node_mats[0].shape[0]
    states, lefts = [s0.view(domains, -1, hidden)], [hm]
    mh = None if mask_h is None else mask_h.view(domains, -1, hidden)
    index = torch.arange(domains, device=h.device)
    for n, (same_input, used) in enumerate(chain):
        s = states[same_input] if same_input is not None else torch.stack(states)[inputs[n], index]
        src = s if mh is None else s * mh
        z = torch.bmm(src, node_mats[n])
        if probes is not None:
            z = z + probes[n + 1]
        gate, value = z.chunk(2, dim=-1)
        act = ACTIVATIONS[ops[used[-1]]](value)
        for code in reversed(used[:-1]):
            act = torch.where(op_codes[n] == code, ACTIVATIONS[ops[code]](value), act)
        states.append(_norm(s + torch.sigmoid(gate) * (act - s)))
        lefts.append(src)
    return torch.stack(states[1:]).mean(0).reshape(-1, hidden), tuple(lefts)
