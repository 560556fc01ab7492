"""The C runtime's static arena plan, computed in Python (the same algorithm as ``runtime_c/src/planner.c``).

The arena is ``[persistent | activations]``. The persistent part holds the per-channel multipliers the builtin
CONV_2D / FULLY_CONNECTED ops derive from their scales, and TSPTQ_BMM_HEADS's per head (8 bytes per channel, each
op's block 16-byte aligned). The activation part is planned over the op schedule:

- buffers: every activation tensor except aliases (a RESHAPE of an activation shares its input's bytes), live from
  the op that writes it (op 0 for the graph input) to the last op reading it or one of its aliases (the last op for
  the graph output); plus the kernels' scratch (softmax / FC_2S / BMM_2S: 4 bytes per element of the input's last
  axis; BMM_HEADS: 4 bytes per head), live during its op only;
- which ops alias, and each op's scratch and persistent bytes, are its entry in the op table (tsptq.intmodel.ops);
- sizes rounded up to 16 bytes; each buffer in turn goes to the lowest offset where it overlaps no placed buffer
  whose lifetime overlaps its own (TFLM's greedy-by-size planner), in two orders: largest first, and larger
  power-of-two size class first then longer lifetime first; ties by index (tensors, then scratch). The smaller plan
  wins (the first on a tie);
- ``lower_bound``: the largest total (unaligned) size of the buffers live during one op. No plan can use less.

Like the C runtime, ``plan`` refuses a model whose arena would exceed ``MAX_ARENA`` (TQ_MAX_ARENA, just under 2 GB):
the C loader does not load it, so no size is reported for it.

``tests/test_c_runtime.py`` checks that both implementations give the same sizes on every exported method.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tsptq.errors import ModelFileError
from tsptq.intmodel.graph import IntModel
from tsptq.intmodel.ops import ALL_OPS  # the C runtime's op table and the NPU variant's ops

ALIGN = 16
MAX_ARENA = 0x7FFFFFF0  # runtime_c/src/runtime.h TQ_MAX_ARENA: persistent + activations


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Plan:
    persistent_size: int
    activation_size: int
    lower_bound: int
    tensor_offsets: dict[int, int] = field(default_factory=dict)  # every activation tensor (aliases included)
    scratch_offsets: dict[int, int] = field(default_factory=dict)  # op index -> offset of its scratch
    lifetimes: dict[int, tuple[int, int]] = field(default_factory=dict)  # buffer roots: (first op, last op)

    @property
    def arena_size(self) -> int:
        return self.persistent_size + self.activation_size

    @property
    def overhead(self) -> float:
        """Activation plan over the lower bound, minus 1 (0.05 = 5% above the bound)."""
        return self.activation_size / self.lower_bound - 1 if self.lower_bound else 0.0

    def to_dict(self) -> dict:
        return {"arena_bytes": self.arena_size, "persistent_bytes": self.persistent_size,
                "activation_bytes": self.activation_size, "activation_lower_bound": self.lower_bound,
                "overhead_vs_lower_bound": round(self.overhead, 4)}


def scratch_bytes(model: IntModel, op) -> int:
    size = ALL_OPS[op.kind].scratch
    return size([model.tensors[i] for i in op.inputs]) if size else 0


def persistent_bytes(model: IntModel, op) -> int:
    size = ALL_OPS[op.kind].persistent
    return size([model.tensors[i] for i in op.inputs]) if size else 0


def _aliases(model: IntModel, op, const: list[bool]) -> bool:
    """The op's output shares its input's bytes (a RESHAPE of an activation)."""
    return ALL_OPS[op.kind].alias and not const[op.inputs[0]]


def persistent_params(model: IntModel) -> bytes:
    """The persistent region as tsptq_prepare fills it: per op (CONV_2D: every output channel; FULLY_CONNECTED: one
    pair per weight scale; TSPTQ_BMM_HEADS: one per head) int32 multipliers then int32 shifts, TFLite's Prepare from
    the float32 scales, each op's block 16-byte aligned (zero padded). `tsptq emit-c` stores it as constant data."""
    import numpy as np

    out = bytearray()
    for op in model.ops:
        n = persistent_bytes(model, op) // 8
        if not n:
            continue
        mult, shift = ALL_OPS[op.kind].multipliers(model, op)
        idx = np.arange(n) % len(mult)
        out += np.concatenate([mult[idx], shift[idx]]).astype("<i4").tobytes()
        out += bytes(_align(len(out)) - len(out))
    return bytes(out)


def arena_upper_bound(model: IntModel) -> int:
    """Persistent part + every activation buffer and scratch at its own offset: no plan is larger (cheap: no
    placement)."""
    const = [t.data is not None for t in model.tensors]
    roots = {model.inputs[0]} | {op.outputs[0] for op in model.ops}
    for op in model.ops:
        if _aliases(model, op, const):
            roots.discard(op.outputs[0])
    return (sum(_align(persistent_bytes(model, op)) + _align(scratch_bytes(model, op)) for op in model.ops)
            + sum(_align(model.tensors[i].nbytes) for i in roots))


def plan(model: IntModel) -> Plan:
    n_t, n_ops = len(model.tensors), len(model.ops)
    const = [t.data is not None for t in model.tensors]
    first: dict[int, int] = {model.inputs[0]: 0}
    for k, op in enumerate(model.ops):
        first[op.outputs[0]] = k
    last = {i: f for i, f in first.items()}
    for k, op in enumerate(model.ops):
        for i in op.inputs:
            if i in last:
                last[i] = k
    last[model.outputs[0]] = n_ops - 1
    root = {i: i for i in first}
    for op in model.ops:
        if _aliases(model, op, const):
            root[op.outputs[0]] = root[op.inputs[0]]
    for i in first:
        if root[i] != i:
            last[root[i]] = max(last[root[i]], last[i])

    persistent = sum(_align(persistent_bytes(model, op)) for op in model.ops)
    # items: (raw size, first, last), keyed by the C planner's item index
    items: dict[int, tuple[int, int, int]] = {}
    for i in sorted(first):
        if root[i] == i:
            items[i] = (model.tensors[i].nbytes, first[i], last[i])
    for k, op in enumerate(model.ops):
        s = scratch_bytes(model, op)
        if s:
            items[n_t + k] = (s, k, k)

    def place(key) -> tuple[int, dict[int, int]]:
        offsets: dict[int, int] = {}
        end = 0
        for i in sorted(items, key=key):
            raw, f, l = items[i]
            size = _align(raw)
            live = sorted((offsets[j], _align(items[j][0])) for j in offsets
                          if not (items[j][2] < f or items[j][1] > l))
            off = 0
            for o_off, o_size in live:
                if o_off >= off + size:
                    break
                off = max(off, o_off + o_size)
            offsets[i] = off
            end = max(end, off + size)
        return end, offsets

    by_size = place(lambda i: (-_align(items[i][0]), i))
    by_class = place(lambda i: (-_align(items[i][0]).bit_length(), -(items[i][2] - items[i][1]), -_align(items[i][0]), i))
    end, offsets = by_class if by_class[0] < by_size[0] else by_size

    if persistent + end > MAX_ARENA:
        raise ModelFileError(f"the model needs an arena of {persistent + end:,} bytes (multipliers {persistent:,} + "
                             f"activations {end:,}), more than the C runtime's limit of {MAX_ARENA:,} bytes")
    bound = max((sum(raw for raw, f, l in items.values() if f <= k <= l) for k in range(n_ops)), default=0)
    return Plan(persistent, end, bound,
                tensor_offsets={i: offsets[root[i]] for i in first},
                scratch_offsets={i - n_t: o for i, o in offsets.items() if i >= n_t},
                lifetimes={i: (items[i][1], items[i][2]) for i in items if i < n_t})


def describe(p: Plan) -> str:
    """One line for `tsptq inspect`."""
    return (f"C runtime arena {p.arena_size:,} B = multipliers {p.persistent_size:,} B + activations "
            f"{p.activation_size:,} B (lower bound {p.lower_bound:,} B, +{p.overhead * 100:.1f}%)")
