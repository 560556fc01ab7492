"""The NPU variant's CPU part on a Cortex-M55, counted under QEMU (issue 18's whole-model estimate; npu.py uses it).

Vela times only what it compiles for the Ethos-U55. The variant's other ops are tsptq custom ops that run on the
Cortex-M55 beside it: the C runtime's kernels (runtime_c/src/ops) plus the variant-only steps of
runtime_c/tflm/variant_kernels.h, as runtime_c/tflm/tflm_ops.c composes them for TFLite Micro. Their instruction
counts come from QEMU's mps3-an547 (the Cortex-M55 with Helium that targets/corstone-300 runs, under the target's
``-icount shift=0``: **instructions, not cycles**):

- **shared kernels**: the default tsptq file of the same quantization, run by the C runtime's firmware and profiled
  per op (what ``tsptq profile`` reads). Each variant CPU op is matched with the default op that writes the tensor of
  the same name (both lowerings name their tensors alike), which must be of the kind ``PARTS`` gives;
- **variant-only steps**: benchmarks/npu_cpu_steps.c on the same board, each step on the variant's own tensors of
  one image (the integer model's), its output checked byte for byte against them.
"""
from __future__ import annotations

import re
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsptq.errors import TsptqError

ROOT = Path(__file__).resolve().parents[1]
BOARD = "mps3-an547"
# the steps program: the board's start-up, SysTick and fault reports, and the steps (no UART, no runtime); the steps
# are runtime_c/tflm/variant_kernels.h's functions (a static inline header: STEPS_INCLUDE is added to the include path)
# and, for an int16-input LayerNorm, the C runtime's tq_layernorm_2s_x16 (its one source file; the linker's
# --gc-sections drops the op table entry it also defines)
STEPS_SOURCES = ("targets/mps3-an547/startup.c", "targets/common/cortex_m.c", "targets/common/qemu_fault.c",
                 "runtime_c/src/ops/layernorm_2s.c", "benchmarks/npu_cpu_steps.c")
STEPS_INCLUDE = "runtime_c/tflm"
STEPS_FILE = "npu-cpu-steps.bin"  # npu_cpu_steps.c's STEPS_FILE, read from QEMU's working folder
STEP_ARGS, STEP_DATA = 12, 3      # npu_cpu_steps.c's STEP_ARGS, STEP_DATA
QEMU_TIMEOUT_S = 1800            # one run of the steps program under QEMU
STEP_KINDS = {"ln_tail": 1, "add_sat": 2, "gelu16": 3, "plane": 4, "pv_sum": 5, "token_mean16": 6, "ln16": 7,
              "ln_neg_mean": 8, "ln_rstd": 9}

# What runs for each variant CPU op (its cost key): (the default file's op kind whose kernel it shares, found by the
# output tensor's name; the variant-only step of npu_cpu_steps.c). TSPTQ_GELU_2S with an 8-bit table (a uniform GELU
# output) is the default op itself; with an int16 table (a V-2SF output, decoded) it is a loop of its own.
# TSPTQ_LAYERNORM_2S_I16 on an int16 x (the int16 residual stream) has no default-file counterpart: the whole op is a
# step (tq_layernorm_2s_x16, then the tail). The LayerNorm on the NPU (``layernorm_npu``) leaves only its two row
# statistics on the CPU, each a step of its own.
PARTS = {
    "TSPTQ_LAYERNORM_2S_I16": ("TSPTQ_LAYERNORM_2S", "ln_tail"),  # tq_layernorm_2s, then (y - zp) << k to int16
    "TSPTQ_LAYERNORM_2S_I16 x16": (None, "ln16"),                 # an int16 x: tq_layernorm_2s_x16, then the tail
    "TSPTQ_ADD_2S_I16": ("TSPTQ_ADD_2S", "add_sat"),              # sat8(branch + zp), then tq_add
    "TSPTQ_ADD_2S": ("TSPTQ_ADD_2S", None),                       # the position embedding: the same op
    "TSPTQ_SOFTMAX_2S": ("TSPTQ_SOFTMAX_2S", None),               # unchanged
    "TSPTQ_BMM_2S": ("TSPTQ_BMM_2S", None),                       # --pv-on-cpu: unchanged
    "TSPTQ_GELU_2S": ("TSPTQ_GELU_2S", None),
    "TSPTQ_GELU_2S int16": (None, "gelu16"),
    "TSPTQ_PLANE_2S": (None, "plane"),                            # no C runtime kernel
    "TSPTQ_PV_SUM_2S": (None, "pv_sum"),                          # no C runtime kernel
    "TSPTQ_TOKEN_MEAN_I16": (None, "token_mean16"),               # no C runtime kernel
    "TSPTQ_LN_NEG_MEAN": (None, "ln_neg_mean"),                   # no C runtime kernel
    "TSPTQ_LN_RSTD": (None, "ln_rstd"),                           # no C runtime kernel
}


def cost_key(kind: str, out_dtype: str, in_dtype: str | None = None) -> str:
    """What runs for an op: its kind, for GELU whether its table is int16 (a loop of its own), for the int16
    LayerNorm whether its input ``in_dtype`` is int16 (no default-file counterpart)."""
    if kind == "TSPTQ_GELU_2S" and out_dtype == "int16":
        return f"{kind} int16"
    if kind == "TSPTQ_LAYERNORM_2S_I16" and in_dtype == "int16":
        return f"{kind} x16"
    return kind


def parts_of(key: str) -> tuple[str | None, str | None]:
    """What runs for the cost key ``key``: (the default file's op kind whose kernel it shares, the variant-only step
    of npu_cpu_steps.c), either None where there is none; an op without an entry in PARTS is refused."""
    if key not in PARTS:
        raise TsptqError(f"{key}: no measured CPU kernel for this op (benchmarks/npu_cpu.py PARTS)")
    return PARTS[key]


def op_key(im, i: int) -> str:
    op = im.ops[i]
    return cost_key(op.kind, im.tensors[op.outputs[0]].dtype, im.tensors[op.inputs[0]].dtype)


def elements(im, i: int) -> int:
    """The size of the op's largest activation (input or output, constants left out): what its work scales with."""
    op = im.ops[i]
    return max(int(np.prod(im.tensors[t].shape)) for t in [*op.inputs, *op.outputs] if im.tensors[t].data is None)


def cpu_ops(im, vela_cpu: dict) -> list[int]:
    """The variant's ops that run on the CPU: its TSPTQ_* custom ops, which must be what Vela left there (``vela_cpu``:
    Vela's CPU ops by kind); a builtin Vela left on the CPU would not be timed."""
    idx = [i for i, op in enumerate(im.ops) if op.kind.startswith("TSPTQ_")]
    custom = Counter(im.ops[i].kind for i in idx)
    if custom != Counter(vela_cpu):
        raise TsptqError(f"Vela's CPU ops {dict(sorted(vela_cpu.items()))} are not the file's custom ops "
                         f"{dict(sorted(custom.items()))}: the estimate times the custom ops only")
    return idx


def shared_counterparts(default, variant, idx: list[int]) -> dict[int, int]:
    """Variant op -> the default file's op that runs its shared kernel: the one writing the tensor of the same name."""
    writer = {default.tensors[op.outputs[0]].name: j for j, op in enumerate(default.ops)}
    out = {}
    for i in idx:
        want, _ = parts_of(op_key(variant, i))
        if want is None:
            continue
        name = variant.tensors[variant.ops[i].outputs[0]].name
        j = writer.get(name)
        found = default.ops[j].kind if j is not None else "no op"
        if found != want:
            raise TsptqError(f"{name}: the default file writes it with {found}, not {want}")
        out[i] = j
    return out


# ---- the default file on the board --------------------------------------------------------------------------------

@dataclass
class Profile:
    """The default file on mps3-an547: each op's instructions (the median over the images) and each image's total."""
    per_op: np.ndarray
    totals: np.ndarray
    images: int


def profile_default(default, codes: np.ndarray) -> Profile:
    """Run the default file on mps3-an547 (the C runtime's firmware, the model baked in) on ``codes`` (int8 NHWC
    images, one at a time) and read its per-op ticks; every output must equal the integer model's."""
    from tsptq.deploy.pipeline import BoardOptions, board_session, device_program
    from tsptq.deploy.targets import load_target
    from tsptq.tflite.writer import to_tflite

    target = load_target(BOARD)
    model = to_tflite(default)
    opts = BoardOptions(target=BOARD, quiet=True)
    program = device_program(target, model, opts)
    kinds = [op.kind for op in default.ops]
    ticks = []
    with board_session(target, program, opts) as (board, _, info, port):
        if info.model_size != len(model):
            raise TsptqError(f"{port}: the firmware holds a {info.model_size:,} B model, not the {len(model):,} B one")
        for q in codes:
            got = board.infer(q.tobytes()).output
            if got != default.run(q[None]).tobytes():
                raise TsptqError(f"{BOARD}: the default file's output differs from its integer model's")
            prof = board.profile()
            if [name for name, _ in prof] != kinds:
                raise TsptqError(f"{BOARD}: the profile's ops are not the file's ops")
            ticks.append([t for _, t in prof])
    per_tick = float(target.instructions_per_tick)
    t = np.asarray(ticks, np.float64) * per_tick
    return Profile(np.median(t, axis=0), t.sum(axis=1), len(codes))


# ---- the variant-only steps ---------------------------------------------------------------------------------------

@dataclass
class Step:
    """One run of a step of npu_cpu_steps.c: its op, inputs and expected output bytes."""
    op: int
    name: str
    args: list[int]
    data: list[np.ndarray]
    expected: bytes

    @property
    def file_bytes(self) -> int:
        """What it takes of the steps' file."""
        return 4 * (STEP_ARGS + STEP_DATA) + sum(-(-d.nbytes // 4) * 4 for d in self.data)


@dataclass
class StepInputs:
    """What the steps read: the variant, its tensors on one image, and the default file's (the LayerNorm codes)."""
    variant: object
    vals: dict
    default: object
    default_vals: dict
    counterpart: dict = field(default_factory=dict)

    def value(self, t: int) -> np.ndarray:
        return self.vals[t] if t in self.vals else self.variant.tensors[t].data

    def out(self, i: int) -> np.ndarray:
        return self.vals[self.variant.ops[i].outputs[0]]


def _rows(x: np.ndarray) -> tuple[int, int]:
    return x.size // x.shape[-1], x.shape[-1]


def step_ln_tail(s: StepInputs, i: int) -> Step:
    op = s.variant.ops[i]
    codes = s.default_vals[s.default.ops[s.counterpart[i]].outputs[0]]  # TSPTQ_LAYERNORM_2S's int8 code
    rows, D = _rows(codes)
    return Step(i, "ln_tail", [rows, D, op.options["out_zp"]], [codes.astype(np.int8), s.value(op.inputs[4])],
                s.out(i).astype(np.int16).tobytes())


def step_ln16(s: StepInputs, i: int) -> Step:
    """TSPTQ_LAYERNORM_2S_I16 on an int16 x, the whole op: integers rows, D, eps (low, high words), out_zp, out_shift;
    arrays x, gamma_mul (int32) then beta_bias (int64) as one, out_ch_shift."""
    op = s.variant.ops[i]
    x, in_shift, gamma, beta, out_ch_shift = (s.value(t) for t in op.inputs)
    o = op.options
    if o["in_zp"] != 0 or np.any(np.asarray(in_shift) != 0):
        raise TsptqError(f"op {i} (TSPTQ_LAYERNORM_2S_I16): an int16 x takes in_zp 0 and every in_shift 0")
    rows, D = _rows(x)
    eps_lo, eps_hi = (int(w) for w in np.array([o["eps"]], "<i8").view("<i4"))
    params = np.concatenate([np.asarray(gamma, np.int32).view(np.uint8), np.asarray(beta, np.int64).view(np.uint8)])
    return Step(i, "ln16", [rows, D, eps_lo, eps_hi, o["out_zp"], o["out_shift"]],
                [x.astype(np.int16), params, np.asarray(out_ch_shift, np.int8)], s.out(i).astype(np.int16).tobytes())


def step_add_sat(s: StepInputs, i: int) -> Step:
    from tsptq.intmodel import kernels as K

    op = s.variant.ops[i]
    branch = s.value(op.inputs[1]).astype(np.int16)
    rows, C = _rows(branch)
    b_zp = op.options["b_zp"]
    return Step(i, "add_sat", [rows, C, b_zp], [branch], K.saturate(branch.astype(np.int64) + b_zp, np.int8).tobytes())


def step_gelu16(s: StepInputs, i: int) -> Step:
    op = s.variant.ops[i]
    x = s.value(op.inputs[0])
    return Step(i, "gelu16", [x.size, int(x.dtype == np.int8)], [x, s.value(op.inputs[1]).astype(np.int16)],
                s.out(i).astype(np.int16).tobytes())


def step_plane(s: StepInputs, i: int) -> Step:
    op = s.variant.ops[i]
    x = s.value(op.inputs[0])
    o = op.options
    return Step(i, "plane", [x.size, o["plane"], o["bits"], o["signed_fine"]], [x.astype(np.uint8)],
                s.out(i).astype(np.int8).tobytes())


def step_pv_sum(s: StepInputs, i: int) -> Step:
    op = s.variant.ops[i]
    fine, coarse, code = (s.value(t) for t in op.inputs)
    rows, N = _rows(code)
    o = op.options
    args = [rows, N, fine.shape[-1], o["bits"], o["ratio_log2"], o["signed_fine"], o["b_zp"], o["mult"], o["shift"],
            o["out_zp"]]
    return Step(i, "pv_sum", args, [fine.astype(np.int32), coarse.astype(np.int32), code.astype(np.uint8)],
                s.out(i).astype(np.int8).tobytes())


def step_token_mean16(s: StepInputs, i: int) -> Step:
    op = s.variant.ops[i]
    x, shift = s.value(op.inputs[0]), s.value(op.inputs[1])
    B, T, D = x.shape
    return Step(i, "token_mean16", [B, T, D, op.options["first"]], [x.astype(np.int16), shift.astype(np.int8)],
                s.out(i).astype(np.int16).tobytes())


def step_ln_neg_mean(s: StepInputs, i: int) -> Step:
    """TSPTQ_LN_NEG_MEAN, the whole op: integers rows, D; array x (int16)."""
    x = s.value(s.variant.ops[i].inputs[0])
    rows, D = _rows(x)
    return Step(i, "ln_neg_mean", [rows, D], [x.astype(np.int16)], s.out(i).astype(np.int16).tobytes())


def step_ln_rstd(s: StepInputs, i: int) -> Step:
    """TSPTQ_LN_RSTD, the whole op: integers rows, D, eps (low, high words), c; array x (int16)."""
    op = s.variant.ops[i]
    x = s.value(op.inputs[0])
    rows, D = _rows(x)
    eps_lo, eps_hi = (int(w) for w in np.array([op.options["eps"]], "<i8").view("<i4"))
    return Step(i, "ln_rstd", [rows, D, eps_lo, eps_hi, op.options["c"]], [x.astype(np.int16)],
                s.out(i).astype(np.int16).tobytes())


STEP_BUILDERS = {"ln_tail": step_ln_tail, "ln16": step_ln16, "add_sat": step_add_sat, "gelu16": step_gelu16,
                 "plane": step_plane, "pv_sum": step_pv_sum, "token_mean16": step_token_mean16,
                 "ln_neg_mean": step_ln_neg_mean, "ln_rstd": step_ln_rstd}


def steps_for(s: StepInputs, idx: list[int]) -> list[Step]:
    """The variant-only steps of the variant's CPU ops ``idx``, in file order."""
    out = []
    for i in idx:
        step = parts_of(op_key(s.variant, i))[1]
        if step:
            out.append(STEP_BUILDERS[step](s, i))
    return out


def steps_file(steps: list[Step]) -> bytes:
    """npu_cpu_steps.c's input: the count, then per step its kind and integers (STEP_ARGS words), its arrays' byte
    lengths (STEP_DATA words) and the arrays, each padded to 4 bytes."""
    out = [struct.pack("<i", len(steps))]
    for st in steps:
        if len(st.args) + 1 > STEP_ARGS or len(st.data) > STEP_DATA:
            raise TsptqError(f"step {st.name}: too many integers or arrays for npu_cpu_steps.c")
        args = [STEP_KINDS[st.name], *st.args] + [0] * (STEP_ARGS - 1 - len(st.args))
        blobs = [np.ascontiguousarray(d).tobytes() for d in st.data] + [b""] * (STEP_DATA - len(st.data))
        out.append(struct.pack(f"<{STEP_ARGS}i{STEP_DATA}i", *args, *(len(b) for b in blobs)))
        out += [b + b"\0" * (-len(b) % 4) for b in blobs]
    return b"".join(out)


LINE = re.compile(r"^(empty|step) (\d+) ticks (\d+) crc (\d+)$")


def parse_steps_output(text: str, steps: list[Step], instructions_per_tick: float) -> list[float]:
    """Each step's instructions from npu_cpu_steps.c's lines, less what the timing itself costs; every output's CRC
    must be the expected bytes'."""
    lines = [m.groups() for m in map(LINE.match, text.splitlines()) if m]
    if not lines or lines[0][0] != "empty" or len(lines) != len(steps) + 1:
        raise TsptqError(f"npu_cpu_steps: expected {len(steps)} steps, got: {text.strip()[-300:]!r}")
    empty = int(lines[0][2])
    out = []
    for st, (_, k, ticks, crc) in zip(steps, lines[1:]):
        if int(crc) != zlib.crc32(st.expected):
            raise TsptqError(f"npu_cpu_steps: step {k} ({st.name}) does not compute the integer model's bytes")
        out.append(max(int(ticks) - empty, 0) * instructions_per_tick)
    return out


def batches(steps: list[Step], capacity: int, arena: int) -> list[list[Step]]:
    """``steps`` in order, in runs whose steps' file fits the board's buffer of ``capacity`` bytes; each step's output
    (written into the board's arena) must fit its ``arena`` bytes."""
    out: list[list[Step]] = []
    size = capacity
    for st in steps:
        if len(st.expected) > arena:
            raise TsptqError(f"step {st.name} of op {st.op} writes {len(st.expected):,} B, more than the {arena:,} B "
                             f"arena of {BOARD}")
        if 4 + st.file_bytes > capacity:
            raise TsptqError(f"step {st.name} of op {st.op} needs {4 + st.file_bytes:,} B, more than the "
                             f"{capacity:,} B the board reads")
        if size + st.file_bytes > capacity:
            out.append([])
            size = 4
        out[-1].append(st)
        size += st.file_bytes
    return out


def steps_program():
    """The board's target and npu_cpu_steps.c built for it (cached by the sources and flags)."""
    from tsptq.deploy.targets import compile_program, load_target

    target = load_target(BOARD)
    return target, compile_program(target, [ROOT / p for p in STEPS_SOURCES], "npu-cpu-steps.elf",
                                   extra_flags=("-I", str(ROOT / STEPS_INCLUDE)))


def run_steps(steps: list[Step]) -> list[float]:
    """Build npu_cpu_steps.c for mps3-an547 and run ``steps`` under QEMU (as many runs as its upload buffer needs):
    each one's instructions."""
    target, program = steps_program()
    out: list[float] = []
    for run in batches(steps, target.model_capacity, target.arena_capacity):
        text = run_program(target.qemu, program, steps_file(run))
        out += parse_steps_output(text, run, float(target.instructions_per_tick))
    return out


def run_program(qemu, program: Path, blob: bytes, timeout: float = QEMU_TIMEOUT_S) -> str:
    """Run the steps program ``program`` under ``qemu`` (the target's command line) on the steps' file ``blob``: its
    output (QEMU writes semihosting's console to its stderr). A failure or a run past ``timeout`` seconds is a
    one-line error."""
    with tempfile.TemporaryDirectory(prefix="tsptq-npu-cpu-") as tmp:
        (Path(tmp) / STEPS_FILE).write_bytes(blob)
        try:
            proc = subprocess.run([*qemu, "-serial", "null", "-kernel", str(program)], cwd=tmp,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TsptqError(f"npu_cpu_steps on {BOARD}: {qemu[0]} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        raise TsptqError(f"npu_cpu_steps on {BOARD} failed (exit {proc.returncode}): {last[0]}")
    return proc.stdout + proc.stderr


def icount(qemu) -> str:
    """The target's ``-icount`` setting (``-icount shift=0``): without it QEMU's SysTick counts time, not
    instructions, and the counts mean nothing, so its absence is a one-line error."""
    qemu = list(qemu)
    if "-icount" not in qemu or qemu.index("-icount") + 1 >= len(qemu):
        raise TsptqError(f"target {BOARD}: its qemu command line has no `-icount shift=0`: the CPU part counts "
                         "instructions only under -icount")
    i = qemu.index("-icount")
    return f"-icount {qemu[i + 1]}"


def tool_versions() -> dict:
    """The board and the tools the counts depend on: QEMU's version, the compiler's and its flags."""
    from tsptq.deploy.targets import load_target

    target = load_target(BOARD)

    def first_line(cmd: list[str]) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return (proc.stdout.strip().splitlines() or ["unknown"])[0]

    return {"board": BOARD, "qemu": first_line([target.qemu[0], "--version"]),
            "icount": icount(target.qemu),
            "compiler": f"{target.cc} {first_line([target.cc, '-dumpversion'])}", "cflags": " ".join(target.cflags[:4]),
            "instructions_per_tick": float(target.instructions_per_tick)}


# ---- the sums -----------------------------------------------------------------------------------------------------

def by_key(variant, idx: list[int], shared: dict[int, float], step: dict[int, float]) -> dict:
    """Per cost key: ops, elements, the shared kernels' and the variant-only steps' instructions, and their sum."""
    out: dict[str, dict] = {}
    for i in idx:
        row = out.setdefault(op_key(variant, i), {"ops": 0, "elements": 0, "shared_kernel": 0.0, "variant_step": 0.0})
        row["ops"] += 1
        row["elements"] += elements(variant, i)
        row["shared_kernel"] += shared.get(i, 0.0)
        row["variant_step"] += step.get(i, 0.0)
    for row in out.values():
        row["instructions"] = row["shared_kernel"] + row["variant_step"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["instructions"]))


def whole_model(npu_s: float, cpu_instructions: float, clock_hz: float, stock_s: float | None) -> dict:
    """Vela's NPU estimate plus the CPU part at ``clock_hz`` and one instruction per cycle, against the stock file's
    estimate."""
    cpu_s = cpu_instructions / clock_hz
    total = npu_s + cpu_s
    out = {"npu_s": npu_s, "cpu_instructions": cpu_instructions, "cpu_s": cpu_s, "total_s": total}
    if stock_s:
        out.update(stock_s=stock_s, met=total <= stock_s, ratio=total / stock_s, over_s=total - stock_s)
    return out


def missing_tools() -> str | None:
    """Why the CPU part cannot be measured here (QEMU or the Arm compiler missing, with the apt line), or None."""
    from tsptq.deploy.targets import TargetError, load_target

    try:
        load_target(BOARD).check_tools()
    except TargetError as e:
        return str(e)
    return None


def measure(default, variants: dict, codes: np.ndarray, vela_cpu: dict) -> dict:
    """The CPU part of each variant file (label -> IntModel, Vela's CPU ops by kind under ``vela_cpu[label]``),
    measured on mps3-an547: the default file profiled on ``codes``, the steps on the first image."""
    from tsptq.deploy.targets import load_target

    icount(load_target(BOARD).qemu)  # instructions only under -icount: refused before anything runs
    prof = profile_default(default, codes)
    _, default_vals = default.run(codes[:1], keep=True)
    out = {"default_file": {"instructions_median": float(np.median(prof.totals)),
                            "instructions_min": float(prof.totals.min()), "instructions_max": float(prof.totals.max()),
                            "images": prof.images}}
    for label, variant in variants.items():
        idx = cpu_ops(variant, vela_cpu[label])
        counterpart = shared_counterparts(default, variant, idx)
        _, vals = variant.run(codes[:1], keep=True)
        steps = steps_for(StepInputs(variant, vals, default, default_vals, counterpart), idx)
        step = dict(zip((st.op for st in steps), run_steps(steps)))
        shared = {i: float(prof.per_op[j]) for i, j in counterpart.items()}
        out[label] = {"by_kind": by_key(variant, idx, shared, step),
                      "cpu_instructions": sum(shared.values()) + sum(step.values())}
    return out
