"""ZeRO stage 1: each process keeps and updates only its slice of AdamW's moments (llm.c's ``-z 1``).

The gradients are averaged into ``GradientReducer``'s flat buffer as usual (every process holds all of
them). The buffer is cut into ``world_size`` equal slices; process r keeps m and v for slice r alone (its
share of the 2 x 4 bytes per parameter that AdamW needs), applies the AdamW update to the parameters of
that slice, and an in-place Allgather then gives every process every updated parameter. The arithmetic per
element is ``F.adamw_update_``'s, as in ``AdamW``: the same update, a 1/world_size share of the memory.

A checkpoint holds the ordinary per-parameter AdamW state (the slices gathered), so a run saved with ZeRO
resumes with or without it.
"""
from __future__ import annotations

from tinygrad_llm import backend
from tinygrad_llm.functional import adamw_update_


class ZeroAdamW:
    """Wraps an ``AdamW`` (its parameter groups and hyperparameters) and a ``GradientReducer`` built on the
    same parameters in the same order; ``step()`` after ``reducer.reduce()``."""

    def __init__(self, adamw, reducer):
        self.inner, self.reducer, self.comm = adamw, reducer, reducer.comm
        self.param_groups = adamw.param_groups  # the trainer sets the learning rate here
        order = [p for g in adamw.param_groups for p in g["params"] if p.requires_grad]
        if [id(p) for p in order] != [id(p) for p in reducer.params]:
            raise ValueError("ZeroAdamW: the reducer must hold the optimizer's trainable parameters, in order")
        flat = reducer.flat
        xp = backend.get_array_module(flat)
        self.shard = flat.size // self.comm.world_size
        self.lo = self.comm.rank * self.shard
        hi = self.lo + self.shard
        # the pieces of this process's slice: (start, end, parameter group), each inside one group
        group_of = {id(p): g for g in adamw.param_groups for p in g["params"]}
        self.pieces = []
        for p, offset in zip(reducer.params, reducer.offsets):
            start, end = max(offset, self.lo), min(offset + p.data.size, hi)
            if start < end:
                self.pieces.append((start, end, group_of[id(p)]))
        self.params_flat = xp.zeros_like(flat)
        self.exp_avg = xp.zeros(self.shard, dtype=flat.dtype)
        self.exp_avg_sq = xp.zeros(self.shard, dtype=flat.dtype)
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none)

    def step(self) -> None:
        """Update this process's slice, then gather every slice into every process's parameters."""
        reducer, flat_p = self.reducer, self.params_flat
        for p, offset in zip(reducer.params, reducer.offsets):
            flat_p[offset:offset + p.data.size] = p.data.reshape(-1)
        self.steps += 1
        for start, end, group in self.pieces:
            beta1, beta2 = group["betas"]
            s, e = start - self.lo, end - self.lo
            adamw_update_(flat_p[start:end], reducer.flat[start:end], self.exp_avg[s:e], self.exp_avg_sq[s:e],
                          lr=float(group["lr"]), beta1=beta1, beta2=beta2, eps=group["eps"],
                          weight_decay=group["weight_decay"], step=self.steps)
        self.comm.allgather_(flat_p)
        for p, offset in zip(reducer.params, reducer.offsets):
            p.data[...] = flat_p[offset:offset + p.data.size].reshape(p.data.shape)

    def _gathered(self, shard):
        full = backend.get_array_module(shard).zeros_like(self.params_flat)
        full[self.lo:self.lo + self.shard] = shard
        return self.comm.allgather_(full)

    def state_dict(self) -> dict:
        """``AdamW.state_dict()``'s layout, with every slice gathered (a collective: call on every process)."""
        m, v = self._gathered(self.exp_avg), self._gathered(self.exp_avg_sq)
        if self.steps:
            for p, offset in zip(self.reducer.params, self.reducer.offsets):
                n = p.data.size
                self.inner.state[p] = {"step": self.steps, "exp_avg": m[offset:offset + n].reshape(p.data.shape),
                                       "exp_avg_sq": v[offset:offset + n].reshape(p.data.shape)}
        try:
            return self.inner.state_dict()
        finally:
            self.inner.state = {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take this process's slice of a full AdamW state (saved with or without ZeRO)."""
        self.inner.load_state_dict(state_dict)  # checks groups and shapes, copies onto the device
        state, self.inner.state = self.inner.state, {}
        m, v = self.params_flat.copy(), self.params_flat.copy()
        m[...] = 0
        v[...] = 0
        steps = 0
        for p, offset in zip(self.reducer.params, self.reducer.offsets):
            entry = state.get(p)
            if entry is not None:
                n = p.data.size
                m[offset:offset + n] = entry["exp_avg"].reshape(-1)
                v[offset:offset + n] = entry["exp_avg_sq"].reshape(-1)
                steps = max(steps, int(entry["step"]))
        self.exp_avg[...] = m[self.lo:self.lo + self.shard]
        self.exp_avg_sq[...] = v[self.lo:self.lo + self.shard]
        self.steps = steps

    def moment_bytes(self) -> int:
        """Bytes of AdamW state this process holds (the full optimizer would hold world_size times as much)."""
        return self.exp_avg.nbytes + self.exp_avg_sq.nbytes
