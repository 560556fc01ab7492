"""The C loader's checks (runtime_c/src/loader.c and the op files' prepare), mirrored in Python for ``tsptq.tflite.reader``.

The Python reader refuses every file the C loader refuses (tests/test_readers_agree.py checks it on a seeded corpus
of mutated files). ``c_loader_checks`` reads the file the way loader.c does: the same flatbuffer bounds, vtable
and alignment checks on the same fields, under the same conditions; the same flexbuffer and metadata scans; the
same per-tensor limits (dtype, rank, dimensions, 2 GB per tensor, zero points in the range of the dtype, finite
positive scales), the same per-op checks (shapes, option ranges, requantization multipliers, int32 accumulators
that cannot overflow) and the same schedule checks. ``check_arena`` then applies the runtime's 2 GB arena limit
to the plan (tsptq.intmodel.planner, the C planner's twin). Only after that does the object API build the IntModel.

Where the two readers still differ, the Python reader is the stricter one, for these reasons only:
- it unpacks every table of the file with the schema's object API (signature defs, the description, buffer 0,
  fields the runtime never reads), so damage there is refused by Python alone;
- custom options are decoded as a whole flexbuffer map, keys the C runtime does not read included (softmax's float
  'beta'): the IntModel keeps every key, and writing it back (export) reproduces the file byte for byte;
- the 'tsptq' metadata JSON entry: the C loader does not parse it (it reads only the 8-byte 'tsptq_format' entry);
  Python needs it (method, config, calibration) and checks it: valid JSON, format "tsptq", the version of the
  'tsptq_format' entry, and a 'two_scale' map with exactly one entry per tensor with a two-scale code, each a
  well-formed description equal to the tensor's own CustomQuantization details;
- the CustomQuantization details themselves (the Python integer model decodes the codes with them; the C runtime
  takes its integers from the op options and checks only that a 'kind' is there): well formed, and for an O-2SF
  tensor equal to its scale vector (scale[c] = base_scale * 2^shifts[c]) and to the in_shift of the op it feeds;
and in one way it is less strict: TSPTQ_MAX_TENSORS / TSPTQ_MAX_OPS are the capacity of a C build (raise them),
not a property of the file, so Python does not refuse a file for its number of tensors or ops.
"""
from __future__ import annotations

import struct

import numpy as np
from ai_edge_litert import schema_py_generated as S

from tsptq.errors import ModelFileError, UnsupportedOpError
from tsptq.intmodel.fixedpoint import quantize_multiplier
from tsptq.intmodel.graph import IntModel
from tsptq.intmodel.kernels import LN_MAX_CHANNELS
from tsptq.intmodel.ops import BUILTIN_KINDS, BUILTIN_OPS, CUSTOM_OPS, OPS
from tsptq.tflite.writer import FORMAT_MAGIC, FORMAT_NAME, METADATA_NAME, METADATA_VERSION, SCHEMA_VERSION

TYPE_NAMES = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_")}
ALL_BUILTIN_NAMES = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
MAX_DIM = 1 << 24  # loader.c: every dimension

MAX_TENSOR_BYTES = 0x7FFFFFF0  # runtime.h TQ_MAX_TENSOR_BYTES: one tensor, the file, the persistent part
MAX_ARENA = 0x7FFFFFF0  # runtime.h TQ_MAX_ARENA: persistent + activation plan
ACC_LIMIT = 2**31 - 1
MAX_RANK, MAX_OP_INPUTS = 6, 6
_INT8, _UINT8, _INT32, _INT64 = S.TensorType.INT8, S.TensorType.UINT8, S.TensorType.INT32, S.TensorType.INT64
_ESIZE = {_INT8: 1, _UINT8: 1, _INT32: 4, _INT64: 8}
_NP = {_INT8: "<i1", _UINT8: "<u1", _INT32: "<i4", _INT64: "<i8"}
ZERO_POINT_RANGE = {_INT8: (-128, 127), _UINT8: (0, 255), _INT32: (0, 0), _INT64: (0, 0)}  # as loader.c load_quant
_UNIFORM, _CHANNEL_POW2, _TWO_SCALE, _SIGN_SPLIT, _LOG2 = 0, 1, 2, 3, 4


def _type_name(t: int) -> str:
    return TYPE_NAMES.get(t, "unknown")


def _le_u(b, p: int, w: int) -> int:
    return int.from_bytes(b[p:p + w], "little")


def _le_s(b, p: int, w: int) -> int:
    return int.from_bytes(b[p:p + w], "little", signed=True)


class _Tbl:
    __slots__ = ("pos", "vt", "vtsize", "objsize")

    def __init__(self, pos, vt, vtsize, objsize):
        self.pos, self.vt, self.vtsize, self.objsize = pos, vt, vtsize, objsize


class _Reader:
    """flatbuffer.c's reader: every offset, length and index checked before it is read."""

    def __init__(self, b: bytes):
        self.b, self.n = b, len(b)

    def corrupt(self, what: str):
        raise ModelFileError(f"corrupted or truncated file: {what} is out of bounds (file of {self.n} bytes)")

    def table(self, pos: int, what: str) -> _Tbl:
        b, n = self.b, self.n
        if pos > n - 4 or pos & 3:
            self.corrupt(what)
        vt = pos - _le_s(b, pos, 4)
        if vt < 0 or vt > n - 4 or vt & 1:
            self.corrupt(what)
        vtsize, objsize = _le_u(b, vt, 2), _le_u(b, vt + 2, 2)
        if vtsize < 4 or vtsize & 1 or vt + vtsize > n or objsize < 4 or objsize > n - pos:
            self.corrupt(what)
        return _Tbl(pos, vt, vtsize, objsize)

    def fpos(self, t: _Tbl | None, fid: int, size: int, what: str) -> int:
        if t is None:
            return 0
        slot = 4 + 2 * fid
        if slot + 2 > t.vtsize:
            return 0
        fo = _le_u(self.b, t.vt + slot, 2)
        if not fo:
            return 0
        if fo < 4 or fo + size > t.objsize:
            self.corrupt(what)
        return t.pos + fo

    def f_uint(self, t, fid: int, size: int, default: int, what: str) -> int:
        p = self.fpos(t, fid, size, what)
        return _le_u(self.b, p, size) if p else default

    def f_int(self, t, fid: int, size: int, default: int, what: str) -> int:
        p = self.fpos(t, fid, size, what)
        return _le_s(self.b, p, size) if p else default

    def deref(self, p: int, what: str) -> int:
        tgt = p + _le_u(self.b, p, 4)
        if tgt > self.n - 4:
            self.corrupt(what)
        return tgt

    def f_vec(self, t, fid: int, esize: int, what: str) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        p = self.fpos(t, fid, 4, what)
        if not p:
            return 0, 0
        tgt = self.deref(p, what)
        length, start = _le_u(self.b, tgt, 4), tgt + 4
        if length * esize > self.n - start:
            self.corrupt(what)
        return start, length

    def f_table(self, t, fid: int, what: str) -> _Tbl | None:
        p = self.fpos(t, fid, 4, what)
        return self.table(self.deref(p, what), what) if p else None

    def vec_table(self, v: tuple[int, int], i: int, what: str) -> _Tbl:
        return self.table(self.deref(v[0] + 4 * i, what), what)

    def vec_i32(self, v: tuple[int, int], i: int) -> int:
        return _le_s(self.b, v[0] + 4 * i, 4)

    def raw(self, v: tuple[int, int], esize: int = 1) -> bytes:
        return self.b[v[0]:v[0] + v[1] * esize]


class _FxMap:
    """flexbuffer.c's map reader (the root of custom options and of custom quantization details)."""

    def __init__(self, b: bytes):
        self.ok = False
        n = len(b)
        if n < 3:
            return
        pw = b[n - 1]
        if pw not in (1, 2, 4, 8) or b[n - 2] >> 2 != 9 or n < 2 + pw:  # 9: MAP
            return
        bw = 1 << (b[n - 2] & 3)
        root = n - 2 - pw
        off = _le_u(b, root, pw)
        if off > root or root - off < 3 * bw:
            return
        pos = root - off
        size, kw, koff = _le_u(b, pos - bw, bw), _le_u(b, pos - 2 * bw, bw), _le_u(b, pos - 3 * bw, bw)
        if kw not in (1, 2, 4, 8) or size > (n - pos) // (bw + 1) or koff > pos - 3 * bw:
            return
        kv = pos - 3 * bw - koff
        if kv < kw or kv + size * kw > n or _le_u(b, kv - kw, kw) != size:
            return
        self.b, self.n, self.pos, self.width, self.size, self.keys, self.key_width = b, n, pos, bw, size, kv, kw
        self.ok = True

    def find(self, key: str) -> int:
        k = key.encode()
        for i in range(self.size):
            e = self.keys + i * self.key_width
            off = _le_u(self.b, e, self.key_width)
            if off > e:
                continue
            kp = e - off
            if kp + len(k) + 1 > self.n:
                continue
            if self.b[kp:kp + len(k)] == k and self.b[kp + len(k)] == 0:
                return i
        return -1

    def integer(self, i: int) -> int | None:
        b, vp = self.b, self.pos + i * self.width
        packed = b[self.pos + self.size * self.width + i]
        typ, w = packed >> 2, 1 << (packed & 3)
        if typ == 1:  # INT
            return _le_s(b, vp, self.width)
        if typ in (2, 26):  # UINT, BOOL
            u = _le_u(b, vp, self.width)
            return None if u >> 63 else u
        if typ in (6, 7):  # INDIRECT_INT, INDIRECT_UINT
            off = _le_u(b, vp, self.width)
            if off > vp:
                return None
            tp = vp - off
            if tp + w > self.n:
                return None
            if typ == 6:
                return _le_s(b, tp, w)
            u = _le_u(b, tp, w)
            return None if u >> 63 else u
        return None


class _T:
    """A tensor as loader.c holds it."""
    __slots__ = ("index", "raw_name", "name", "type", "shape", "nbytes", "data", "has_quant", "scales", "zp",
                 "quant_axis")

    def __init__(self, index: int, name: bytes):
        self.index, self.raw_name, self.name = index, name, name.decode(errors="replace")
        self.type, self.shape, self.nbytes, self.data = 0, (), 0, None
        self.has_quant, self.scales, self.zp, self.quant_axis = False, None, 0, 0

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def n_scales(self) -> int:
        return len(self.scales) if self.scales is not None else 0

    def dim(self, i: int) -> int:
        """shape[i] as the C struct holds it: 0 past the rank (negative i counts from the rank, as shape[rank + i])."""
        if i < 0:
            i += self.rank
        return self.shape[i] if 0 <= i < self.rank else 0

    def scale(self, i: int = 0) -> float:
        if self.scales is None or not len(self.scales):
            return 0.0
        return float(self.scales[i if i < len(self.scales) else 0])

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __str__(self) -> str:
        return f"tensor {self.index} ({self.name[:64]})"


def _in_range(v: int, lo: int, hi: int) -> bool:
    return lo <= v <= hi


def _max_operand(kind: int, m: int, shift: int) -> int:
    if kind == _UNIFORM:
        return 255
    if kind == _CHANNEL_POW2:
        return 255 << shift
    if kind == _TWO_SCALE:
        return 127 << m
    return 127


def _acc_fits(w: _T, rows: int, cols: int, maxd) -> bool:
    """sum_i maxd_i * |w[o, i]| < 2^31 for every output o (maxd: a number, or one per input)."""
    a = np.abs(w.data.reshape(rows, cols).astype(np.int64))
    return bool(np.all((a * np.asarray(maxd, np.int64)).sum(axis=1) <= ACC_LIMIT))


def _multiplier_ok(real: float, max_shift: int = 31) -> bool:
    mult, shift = quantize_multiplier(real)
    return mult >= 0 and -31 <= shift <= max_shift


def _in_shift_problem(x: _T, ish: _T, D: int) -> str | None:
    """op_util.h tq_in_shift_agrees: the in_shift input (each in 0..7, checked before) agrees with the scale vector of
    the op's input x (one source of truth per two-scale tensor). None when it does, else the message (after "bad
    quantization: ")."""
    sh = ish.data
    if x.n_scales <= 1:
        for c in range(D):
            if sh[c] != 0:
                return f"input '{x.name[:64]}' has a per-tensor code, but in_shift shifts its channel {c}"
        return None
    if x.n_scales != D or x.quant_axis + 1 != x.rank:
        return f"input '{x.name[:64]}' has {x.n_scales} scales, not one per channel of its last axis"
    base = 0.0
    for c in range(D):
        v = float(x.scales[c]) * float(1 << (7 - int(sh[c])))  # exact in double, as in C
        if c == 0:
            base = v
        elif v != base:
            return f"in_shift disagrees with the scales of input '{x.name[:64]}' at channel {c}"
    return None


class _CLoaderChecks:
    def __init__(self, data: bytes):
        self.r = _Reader(data)
        self.tensors: list[_T] = []

    def run(self) -> None:
        r = self.r
        if r.n > MAX_TENSOR_BYTES:
            raise ModelFileError("file larger than 2 GB")
        root = _le_u(r.b, 0, 4)
        if root > r.n - 4:
            raise ModelFileError("corrupted or truncated file: the root table lies past the end")
        model = r.table(root, "the root table")
        version = r.f_uint(model, 0, 4, 0, "the schema version")
        if version > SCHEMA_VERSION:
            raise ModelFileError(f"TFLite schema version {version} is newer than this tsptq reads ({SCHEMA_VERSION})")
        self.buffers = r.f_vec(model, 4, 4, "the buffer list")
        self._metadata(model)
        subgraphs = r.f_vec(model, 2, 4, "the subgraph list")
        if subgraphs[1] != 1:
            raise ModelFileError(f"expected one subgraph, found {subgraphs[1]}")
        sub = r.vec_table(subgraphs, 0, "the subgraph")
        tensors = r.f_vec(sub, 0, 4, "the tensor list")
        gin, gout = r.f_vec(sub, 1, 4, "the graph inputs"), r.f_vec(sub, 2, 4, "the graph outputs")
        ops = r.f_vec(sub, 3, 4, "the operator list")
        codes = r.f_vec(model, 1, 4, "the operator codes")
        for i in range(tensors[1]):
            self.tensors.append(self._tensor(i, r.vec_table(tensors, i, "a tensor")))
        n = len(self.tensors)
        self.ops = []
        for k in range(ops[1]):
            ot = r.vec_table(ops, k, "an operator")
            oin = r.f_vec(ot, 1, 4, "an operator's inputs")
            oout = r.f_vec(ot, 2, 4, "an operator's outputs")
            idx = r.f_uint(ot, 0, 4, 0, "an opcode index")
            if idx >= codes[1]:
                raise ModelFileError(f"corrupted file: op {k}: opcode index {idx} out of range ({codes[1]} codes)")
            if oout[1] != 1:
                raise UnsupportedOpError(f"op {k}: {oout[1]} outputs, tsptq ops have one")
            if oin[1] > MAX_OP_INPUTS:
                raise ModelFileError(f"op {k}: {oin[1]} inputs, at most {MAX_OP_INPUTS}")
            ins = [r.vec_i32(oin, i) for i in range(oin[1])]
            out = r.vec_i32(oout, 0)
            for i, t in enumerate(ins + [out]):
                if not 0 <= t < n:
                    raise ModelFileError(f"corrupted file: op {k} {'input' if i < len(ins) else 'output'} refers to "
                                         f"tensor {t}, but the graph has {n} tensors")
            kind = self._op_kind(k, r.vec_table(codes, idx, "an operator code"))
            opt = self._custom_options(k, kind, ot) if OPS[kind].custom else self._builtin_options(k, kind, ot)
            self._check_op(k, kind, ins, out, opt)
            self.ops.append((kind, ins, out))
        if gin[1] != 1 or gout[1] != 1:
            raise ModelFileError(f"expected one input and one output, found {gin[1]} and {gout[1]}")
        self.input, self.output = r.vec_i32(gin, 0), r.vec_i32(gout, 0)
        if not (0 <= self.input < n and 0 <= self.output < n):
            raise ModelFileError(f"corrupted file: graph input/output refers to a tensor out of range ({n} tensors)")
        self._schedule()

    # -- metadata, buffers, tensors --

    def _buffer_data(self, index: int, what: str) -> tuple[int, int]:
        r = self.r
        bt = r.vec_table(self.buffers, index, what)
        data = r.f_vec(bt, 0, 1, what)
        if r.f_uint(bt, 1, 8, 0, what) > 1:
            raise UnsupportedOpError(f"buffer {index}: external buffer data (offset/size) is not supported")
        return data

    def _metadata(self, model: _Tbl) -> None:
        """The 'tsptq_format' entry (loader.c load_metadata); the 'tsptq' JSON entry only noticed."""
        r = self.r
        meta = r.f_vec(model, 6, 4, "the metadata list")
        found, json, buf = False, False, 0
        for i in range(meta[1]):
            e = r.vec_table(meta, i, "a metadata entry")
            name = r.raw(r.f_vec(e, 0, 1, "a metadata name"))
            if name == FORMAT_NAME.encode():
                found, buf = True, r.f_uint(e, 1, 4, 0, "a metadata entry")
                break
            if name == METADATA_NAME.encode():
                json = True
        if not found:
            raise ModelFileError("no 'tsptq_format' metadata entry: " + (
                "written by an older tsptq, re-export it" if json else "not a file written by tsptq export"))
        data = self._buffer_data(buf, "the metadata buffer") if buf < self.buffers[1] else (0, 0)
        if not data[1]:
            raise ModelFileError(f"the 'tsptq_format' metadata points to buffer {buf}, which does not exist or is "
                                 "empty")
        raw = r.raw(data)
        if len(raw) < 8:
            raise ModelFileError(f"the 'tsptq_format' metadata holds {len(raw)} bytes, expected 8")
        if raw[:4] != FORMAT_MAGIC:
            raise ModelFileError(f"the 'tsptq_format' metadata does not start with '{FORMAT_MAGIC.decode()}'")
        version = _le_u(raw, 4, 4)
        if version > METADATA_VERSION:
            raise ModelFileError(f"the file's tsptq format is version {version}; this tsptq reads up to version "
                                 f"{METADATA_VERSION}: upgrade tsptq")
        if version < 1:
            raise ModelFileError(f"unknown tsptq format version {version}")
        if len(raw) != 8:
            raise ModelFileError(f"the 'tsptq_format' metadata holds {len(raw)} bytes, expected 8")
        self.format_version = version

    def _tensor(self, i: int, tt: _Tbl) -> _T:
        r = self.r
        name = r.f_vec(tt, 3, 1, "a tensor name")
        shape = r.f_vec(tt, 0, 4, "a tensor shape")
        t = _T(i, r.raw(name))
        typ = r.f_uint(tt, 1, 1, 0, "a tensor type")
        buf = r.f_uint(tt, 2, 4, 0, "a tensor buffer index")
        if typ not in _ESIZE:
            raise UnsupportedOpError(f"{t}: dtype {_type_name(typ)} is not used by tsptq models")
        t.type, esize = typ, _ESIZE[typ]
        if shape[1] > MAX_RANK:
            raise ModelFileError(f"{t}: rank {shape[1]} is more than {MAX_RANK}")
        dims, nbytes = [], 1
        for d in range(shape[1]):
            s = r.vec_i32(shape, d)
            if not 0 < s <= MAX_DIM:
                raise ModelFileError(f"{t}: invalid dimension {s}")
            dims.append(s)
            nbytes *= s
        t.shape = tuple(dims)
        if nbytes * esize > MAX_TENSOR_BYTES:
            raise ModelFileError(f"{t}: {nbytes * esize:,} bytes, more than the runtime's 2 GB tensor limit")
        t.nbytes = nbytes * esize
        if buf >= max(self.buffers[1], 1):
            raise ModelFileError(f"corrupted file: {t} refers to buffer {buf}, but the file has {self.buffers[1]} "
                                 "buffers")
        if buf:
            data = self._buffer_data(buf, "a tensor's buffer")
            if data[1]:
                if data[1] != t.nbytes:
                    raise ModelFileError(f"{t}: buffer holds {data[1]} bytes, its shape needs {t.nbytes}")
                if data[0] % esize:
                    raise ModelFileError(f"{t}: its data is not {esize}-byte aligned in the file (the runtime reads "
                                         "weights in place)")
                t.data = np.frombuffer(r.b, _NP[typ], t.nbytes // esize, data[0])
        self._quant(t, tt)
        return t

    def _quant(self, t: _T, tt: _Tbl) -> None:
        r = self.r
        q = r.f_table(tt, 4, "a tensor's quantization")
        if q is None:
            return
        scale = r.f_vec(q, 2, 4, "a quantization scale vector")
        zp = r.f_vec(q, 3, 8, "a quantization zero point vector")
        details_type = r.f_uint(q, 4, 1, 0, "quantization details")
        axis = r.f_int(q, 6, 4, 0, "quantized_dimension")
        if not scale[1]:
            return  # no scales: not quantized
        if zp[1] and zp[1] != scale[1]:
            raise ModelFileError(f"{t}: bad quantization: {scale[1]} scales but {zp[1]} zero points")
        bits = np.frombuffer(r.b, "<u4", scale[1], scale[0])
        bad = (bits >> 31 != 0) | ((bits >> 23) & 0xFF == 0xFF) | (bits == 0)
        if bad.any():
            raise ModelFileError(f"{t}: bad quantization: scale {int(np.argmax(bad))} is not finite and > 0")
        lo, hi = ZERO_POINT_RANGE[t.type]
        zps = [_le_s(r.b, zp[0] + 8 * c, 8) for c in range(zp[1])]
        for z in zps:
            if not lo <= z <= hi:
                raise ModelFileError(f"{t}: bad quantization: zero point {z} out of range for {_type_name(t.type)} "
                                     f"({lo}..{hi})")
        if scale[1] > 1 and (not 0 <= axis < t.rank or t.shape[axis] != scale[1]):
            raise ModelFileError(f"{t}: bad quantization: {scale[1]} per-channel scales do not match axis {axis} of "
                                 f"its shape")
        if details_type == 1:  # CustomQuantization: a flexbuffer map with a 'kind'
            d = r.f_table(q, 5, "quantization details")
            if d is not None:
                custom = r.f_vec(d, 0, 1, "custom quantization bytes")
                fm = _FxMap(r.raw(custom))
                if not fm.ok or fm.find("kind") < 0:
                    raise ModelFileError(f"{t}: bad quantization: custom quantization details unreadable or without a "
                                         "'kind'")
        elif details_type != 0:
            raise UnsupportedOpError(f"{t}: quantization details type {details_type} is not supported")
        t.has_quant = True
        t.scales = bits.view("<f4")
        t.quant_axis = axis if scale[1] > 1 else 0
        t.zp = zps[0] if zps else 0

    # -- ops --

    def _op_kind(self, k: int, code: _Tbl) -> str:
        r = self.r
        dep, bc = r.f_int(code, 0, 1, 0, "an operator code"), r.f_int(code, 3, 4, 0, "an operator code")
        builtin = max(dep, bc)
        if builtin == S.BuiltinOperator.CUSTOM:
            name = r.raw(r.f_vec(code, 1, 1, "a custom op name"))
            for c in CUSTOM_OPS:
                if name == c.encode():
                    return c
            raise UnsupportedOpError(f"op {k}: custom op {name[:48].decode(errors='replace')!r} is not a tsptq op "
                                     f"(known: {', '.join(CUSTOM_OPS)})")
        if builtin not in BUILTIN_KINDS:
            raise UnsupportedOpError(f"op {k}: builtin {ALL_BUILTIN_NAMES.get(builtin, 'unknown')} (code {builtin}) is "
                                     f"not supported by the tsptq integer model (supported: {', '.join(BUILTIN_OPS)})")
        return BUILTIN_KINDS[builtin]

    def _builtin_options(self, k: int, kind: str, ot: _Tbl) -> dict:
        r = self.r
        typ = r.f_uint(ot, 3, 1, 0, "builtin options")
        o = r.f_table(ot, 4, "builtin options")
        if kind == "CONV_2D":
            if o is None or typ != S.BuiltinOptions.Conv2DOptions:
                raise UnsupportedOpError(f"op {k} (CONV_2D): only VALID padding with equal strides (the patch "
                                         "embedding)")
            w = "Conv2DOptions"
            pad, sw, sh = r.f_int(o, 0, 1, 0, w), r.f_int(o, 1, 4, 0, w), r.f_int(o, 2, 4, 0, w)
            act, dw, dh = r.f_int(o, 3, 1, 0, w), r.f_int(o, 4, 4, 1, w), r.f_int(o, 5, 4, 1, w)
            if pad != S.Padding.VALID or sw != sh or not 1 <= sh <= MAX_DIM:
                raise UnsupportedOpError(f"op {k} (CONV_2D): only VALID padding with equal strides (the patch "
                                         "embedding)")
            if act != 0 or dw != 1 or dh != 1:
                raise UnsupportedOpError(f"op {k} (CONV_2D): fused activations and dilation are not supported")
            return {"stride": sh}
        expected = OPS[kind].options_type
        if o is not None and typ != expected:
            raise ModelFileError(f"op {k} ({kind}): builtin options of type {typ}, expected {expected}")
        w = f"{kind} options"
        if kind == "FULLY_CONNECTED":
            if o is not None and (r.f_int(o, 0, 1, 0, w) or r.f_int(o, 1, 1, 0, w)):
                raise UnsupportedOpError(f"op {k} (FULLY_CONNECTED): fused activations and shuffled weights are not "
                                         "supported")
        elif kind == "BATCH_MATMUL":
            if o is not None and r.f_int(o, 0, 1, 0, w):
                raise UnsupportedOpError(f"op {k} (BATCH_MATMUL): adj_x is not supported")
            return {"adj_y": o is not None and r.f_int(o, 1, 1, 0, w) != 0}
        elif kind == "CONCATENATION":
            axis = r.f_int(o, 0, 4, 0, w) if o is not None else 0
            if o is not None and r.f_int(o, 1, 1, 0, w):
                raise UnsupportedOpError(f"op {k} (CONCATENATION): fused activations are not supported")
            return {"axis": axis}
        elif kind == "ADD":
            if o is not None and r.f_int(o, 0, 1, 0, w):
                raise UnsupportedOpError(f"op {k} (ADD): fused activations are not supported")
        elif kind == "STRIDED_SLICE":
            for f in range(6 if o is not None else 0):
                if r.f_int(o, f, 4 if f < 5 else 1, 0, w):
                    raise UnsupportedOpError(f"op {k} (STRIDED_SLICE): masks and offset are not supported")
        return {}

    def _custom_options(self, k: int, kind: str, ot: _Tbl) -> dict:
        r = self.r
        opts = r.f_vec(ot, 5, 1, "custom options")
        if r.f_int(ot, 6, 1, 0, "custom options format") != 0:
            raise UnsupportedOpError(f"op {k} ({kind}): custom options are not a flexbuffer")
        fm = _FxMap(r.raw(opts))
        if not fm.ok:
            raise ModelFileError(f"op {k} ({kind}): custom options are not a readable flexbuffer map")
        out = {}
        for key in OPS[kind].option_keys:
            i = fm.find(key)
            v = fm.integer(i) if i >= 0 else None
            if v is None:
                raise ModelFileError(f"op {k} ({kind}): custom options miss the integer field {key}")
            out[key] = v
        return out

    def _check_op(self, k: int, kind: str, ins: list[int], out_i: int, o: dict) -> None:
        T = self.tensors
        x = [T[i] for i in ins]
        out = T[out_i]
        where = f"op {k} ({kind})"

        def bad(msg: str):
            raise ModelFileError(f"{where}: {msg}")

        def badq(msg: str):
            raise ModelFileError(f"{where}: bad quantization: {msg}")

        def unsupported(msg: str):
            raise UnsupportedOpError(f"{where}: {msg}")

        spec = OPS[kind]
        if problem := spec.input_count_problem(len(x)):
            bad(problem)
        if out.is_const:
            bad(f"writes into constant tensor {out.name!r}")
        if not out.has_quant and spec.quantized_output:
            bad(f"output {out.name!r} has no quantization parameters")
        if spec.params_from is not None:
            for t in x[spec.params_from:]:
                if not t.is_const:
                    bad(f"parameter tensor {t.name!r} must be constant")
        if spec.elementwise and x[0].shape != out.shape:
            bad("the output's shape differs from the input's (an elementwise op)")
        if spec.check is not None:  # the op's own checks, kept in its table entry (loader.c: its prepare)
            problem = spec.check(x, out, o)
            if problem:
                bad(problem)
        is_byte = lambda t: t.type in (_INT8, _UINT8)  # noqa: E731
        const_of = lambda t, typ: t.is_const and t.type == typ  # noqa: E731
        same_shape = lambda a, b: a.shape == b.shape  # noqa: E731

        if kind == "CONV_2D":
            xx, w, b = x
            p = o["stride"]
            if not const_of(w, _INT8) or not w.has_quant or not const_of(b, _INT32):
                bad("needs constant int8 weights and int32 bias")
            if not xx.has_quant or xx.type != _INT8:
                bad("input must be a quantized int8 tensor")
            O = w.dim(0)
            if (xx.rank != 4 or w.rank != 4 or out.rank != 4 or out.type != _INT8 or w.dim(1) != p or w.dim(2) != p
                    or w.dim(3) != xx.dim(3) or b.rank != 1 or b.dim(0) != O or out.dim(0) != xx.dim(0)
                    or out.dim(1) != xx.dim(1) // p or out.dim(2) != xx.dim(2) // p or out.dim(3) != O):
                bad("only the patch embedding (kernel == stride, VALID, NHWC int8) fits; shapes do not")
            if len(w.scales) not in (1, O):
                bad(f"weights need 1 or {O} scales")
            for c in range(O):
                if not _multiplier_ok(xx.scale() * w.scale(c) / out.scale()):
                    badq(f"requantization multiplier of channel {c} out of range")
            if not _acc_fits(w, O, p * p * xx.dim(3), 255):
                bad("the int32 accumulator could overflow")
        elif kind == "FULLY_CONNECTED":
            xx, w, b = x
            if not const_of(w, _INT8) or not w.has_quant or not const_of(b, _INT32):
                bad("needs constant int8 weights and int32 bias")
            if not xx.has_quant or xx.type != _INT8:
                bad("input must be a quantized int8 tensor")
            if w.rank != 2 or xx.rank < 1 or out.rank < 1 or out.type != _INT8:
                bad("shapes do not fit")
            I, O = w.dim(1), w.dim(0)
            if (xx.dim(-1) != I or out.dim(-1) != O or b.rank != 1 or b.dim(0) != O
                    or xx.numel() // I != out.numel() // O):
                bad("shapes do not fit")
            if len(w.scales) not in (1, O):
                bad(f"weights need 1 or {O} scales")
            for c in range(len(w.scales)):
                if not _multiplier_ok(xx.scale() * w.scale(c) / out.scale(), 30 if len(w.scales) > 1 else 31):
                    badq(f"requantization multiplier of channel {c} out of range")
            if not _acc_fits(w, O, I, 255):
                bad("the int32 accumulator could overflow")
        elif kind == "BATCH_MATMUL":
            a, b = x
            R, adj = a.rank, o["adj_y"]
            if not a.has_quant or not b.has_quant or a.type != _INT8 or b.type != _INT8 or out.type != _INT8:
                bad("operands must be quantized int8 tensors")
            if R < 2 or b.rank != R or out.rank != R:
                bad("operand ranks do not fit")
            if any(b.dim(i) != a.dim(i) or out.dim(i) != a.dim(i) for i in range(R - 2)):
                bad("batch dimensions differ (broadcasting is not supported)")
            if (b.dim(R - (1 if adj else 2)) != a.dim(R - 1) or out.dim(R - 2) != a.dim(R - 2)
                    or out.dim(R - 1) != b.dim(R - (2 if adj else 1))):
                bad("shapes do not fit")
            if a.dim(R - 1) * 255 * 255 > ACC_LIMIT:
                bad("the int32 accumulator could overflow")
            if not _multiplier_ok(a.scale() * b.scale() / out.scale()):
                badq("requantization multiplier out of range")
        elif kind == "ADD":
            a, b = x
            if not a.has_quant or not b.has_quant or a.type != _INT8 or b.type != _INT8 or out.type != _INT8:
                bad("operands must be quantized int8 tensors")
            if not same_shape(a, out) or not same_shape(b, out) or out.rank < 1:
                bad("operand shapes differ (broadcasting is not supported)")
            sa, sb, so = a.scale(), b.scale(), out.scale()
            twice = 2.0 * max(sa, sb)
            for i, real in enumerate((sa / twice, sb / twice, twice / (float(1 << 20) * so))):
                if not _multiplier_ok(real, 0 if i < 2 else 31):
                    badq("rescaling multiplier out of range")
        elif kind == "RESHAPE":
            if x[0].numel() != out.numel() or x[0].type != out.type:
                bad(f"cannot reshape {x[0].name!r} into {out.name!r}")
        elif kind == "TRANSPOSE":
            xx, perm = x
            if not is_byte(xx) or out.type != xx.type or out.rank != xx.rank:
                bad("only int8/uint8 tensors, same rank in and out")
            if perm.type != _INT32 or perm.rank != 1 or perm.dim(0) != xx.rank:
                bad(f"permutation does not fit rank {xx.rank}")
            seen = 0
            for i in range(xx.rank):
                p = int(perm.data[i])
                if not 0 <= p < xx.rank or (seen >> p) & 1:
                    bad(f"permutation does not fit rank {xx.rank}")
                seen |= 1 << p
                if out.dim(i) != xx.dim(p):
                    bad("output shape does not fit the permutation")
        elif kind == "CONCATENATION":
            R, axis = out.rank, o["axis"]
            if axis < 0:
                axis += R
            if R < 1 or not 0 <= axis < R:
                bad(f"axis {o['axis']} does not fit rank {R}")
            if not is_byte(out):
                bad("only int8/uint8 tensors")
            total = 0
            for t in x:
                if t.type != out.type or t.rank != R:
                    bad("inputs do not fit")
                for d in range(R):
                    if d != axis and t.dim(d) != out.dim(d) and not (d == 0 and t.dim(0) == 1):
                        bad("input shapes do not fit")
                total += t.dim(axis)
            if total != out.dim(axis):
                bad("output shape does not fit")
            if axis != 0 and max([1] + [t.dim(0) for t in x]) != out.dim(0):
                bad("output batch does not fit")
        elif kind == "STRIDED_SLICE":
            xx = x[0]
            if not is_byte(xx) or out.type != xx.type or out.rank != xx.rank or xx.rank < 1:
                bad("only int8/uint8 tensors, same rank in and out")
            for t in x[1:]:
                if t.type != _INT32 or t.rank != 1 or t.dim(0) != xx.rank:
                    bad(f"begin/end/strides need {xx.rank} int32 entries")
            if out.dim(0) != xx.dim(0):
                bad("the batch axis must be kept whole")
            for i in range(1, xx.rank):
                b, e, s = (int(t.data[i]) for t in x[1:])
                if s < 1 or b < 0 or b >= e or e > xx.dim(i):
                    unsupported("only in-range slices with positive strides are supported")
                if out.dim(i) != (e - b + s - 1) // s:
                    bad("output shape does not fit")
        elif kind == "TSPTQ_LAYERNORM_2S":
            xx = x[0]
            D = xx.dim(-1) if xx.rank else 0
            if xx.type != _INT8 or out.type != _INT8 or not same_shape(xx, out) or D < 1:
                bad("input and output must be int8 of the same shape")
            if D > LN_MAX_CHANNELS:
                bad(f"{D} channels, at most {LN_MAX_CHANNELS}")
            if any(t.rank != 1 or t.dim(0) != D for t in x[1:]):
                bad(f"per-channel parameters must have {D} entries")
            if x[1].type != _INT8 or x[2].type != _INT32 or x[3].type != _INT64:
                bad("parameters must be int8, int32 and int64")
            beta = x[3].data  # int64: compared, not np.abs'ed (|-2^63| overflows)
            if np.any((x[1].data < 0) | (x[1].data > 7)) or np.any((beta < -(1 << 62)) | (beta > (1 << 62))):
                badq("channel shift or beta out of range")
            problem = _in_shift_problem(xx, x[1], D)
            if problem:
                badq(problem)
            if (not _in_range(o["in_zp"], -128, 127) or not _in_range(o["out_zp"], -128, 127)
                    or not _in_range(o["eps"], 0, 1 << 62) or not _in_range(o["out_shift"], 0, 62)):
                badq("options out of range")
        elif kind == "TSPTQ_SOFTMAX_2S":
            xx, lut = x
            N = xx.dim(-1) if xx.rank else 0
            L = xx.dim(-3) if xx.rank >= 3 else 1  # one exp table, or one per head (x (..., L, R, N))
            out_kind = o["out_kind"]
            if xx.type != _INT8 or not same_shape(xx, out) or N < 1:
                bad("input must be int8, output of the same shape")
            if N > 2047:
                bad(f"{N} tokens, at most 2047")
            if lut.rank != 1 or lut.type != _INT32 or lut.dim(0) not in (256, 256 * L):
                if L == 1:
                    bad("the lookup table must have 256 int32 entries")
                bad(f"the lookup table must have 256 or {256 * L} int32 entries (one table, or one per head)")
            if out_kind not in (_UNIFORM, _TWO_SCALE, _LOG2):
                unsupported(f"output code kind {out_kind}")
            if out.type != (_INT8 if out_kind == _UNIFORM else _UINT8):
                bad("output dtype does not fit the code kind")
            tables = lut.dim(0) // 256
            for h in range(tables):
                if int(lut.data[256 * h]) != 1 << 20:
                    badq("exp table must start at 2^20" if tables == 1 else f"the exp table of head {h} must start "
                         "at 2^20")
            if np.any((lut.data < 0) | (lut.data > (1 << 20))):
                badq(f"exp table entry {int(np.argmax((lut.data < 0) | (lut.data > (1 << 20))))} out of range")
            if (not _in_range(o["mult"], 0, ACC_LIMIT) or not _in_range(o["shift"], 0, 62)
                    or not _in_range(o["out_zp"], -128, 127) or not _in_range(o["bits"], 2, 8)
                    or not _in_range(o["ratio_log2"], 0, 8) or not _in_range(o["signed_fine"], 0, 1)):
                badq("options out of range")
        elif kind == "TSPTQ_GELU_2S":
            xx, lut = x[:2]
            levels = 1
            if (not is_byte(xx) or lut.rank != 1 or not is_byte(lut) or out.type != lut.type
                    or not same_shape(xx, out) or xx.rank < 1):
                bad("needs a byte input, a byte table and an output of the table's type")
            if len(x) == 3:
                ish, D = x[2], xx.dim(-1)
                if D < 1 or ish.type != _INT8 or ish.rank != 1 or ish.dim(0) != D:
                    bad(f"in_shift must be int8 with one entry per input channel ({D})")
                if np.any((ish.data < 0) | (ish.data > 7)):
                    bad("in_shift entries must be in 0..7")
                levels = int(ish.data.max()) + 1
                problem = _in_shift_problem(xx, ish, D)
                if problem:
                    badq(problem)
            elif xx.n_scales > 1:
                bad("a per-channel input code needs the in_shift input")
            if lut.dim(0) != 256 * levels:
                bad(f"the lookup table must have {256 * levels} entries (256 per shift level)")
        elif kind == "TSPTQ_FC_2S":
            xx, w, b, mu, sh, ish = x
            I, O, in_kind = (xx.dim(-1) if xx.rank else 0), w.dim(0), o["in_kind"]
            if (not is_byte(xx) or w.type != _INT8 or w.rank != 2 or w.dim(1) != I or out.type != _INT8
                    or out.rank < 1 or out.dim(-1) != O or xx.numel() // (I or 1) != out.numel() // O):
                bad("shapes do not fit")
            if (b.type != _INT32 or mu.type != _INT32 or sh.type != _INT32 or ish.type != _INT8 or b.rank != 1
                    or mu.rank != 1 or sh.rank != 1 or ish.rank != 1 or b.dim(0) != O or mu.dim(0) != O
                    or sh.dim(0) != O or ish.dim(0) != I):
                bad("parameter tensors do not fit")
            if not _UNIFORM <= in_kind <= _SIGN_SPLIT:
                unsupported(f"input code kind {in_kind}")
            if in_kind <= _CHANNEL_POW2 and xx.type != _INT8:
                bad("an affine input code must be int8")
            if (not _in_range(o["in_zp"], -128, 127) or not _in_range(o["bits"], 2, 8)
                    or not _in_range(o["ratio_log2"], 0, 8) or not _in_range(o["signed_fine"], 0, 1)
                    or not _in_range(o["neg_mult"], 0, ACC_LIMIT) or not _in_range(o["neg_shift"], -31, 31)
                    or not _in_range(o["out_zp"], -128, 127)):
                badq("options out of range")
            if np.any((mu.data < 0) | (sh.data < -31) | (sh.data > 31)):
                badq("output multiplier of a channel out of range")
            if np.any((ish.data < 0) | (ish.data > 7)):
                badq("input channel shift out of range")
            if in_kind != _CHANNEL_POW2 and xx.n_scales > 1:
                badq(f"input '{xx.name[:64]}' has per-channel scales, but in_kind {in_kind} is not channel_pow2")
            problem = _in_shift_problem(xx, ish, I)
            if problem:
                badq(problem)
            if in_kind == _CHANNEL_POW2:
                maxd = np.int64(255) << ish.data.astype(np.int64)
            else:
                maxd = _max_operand(in_kind, o["ratio_log2"], 0)
            if not _acc_fits(w, O, I, maxd):
                bad("the int32 accumulator could overflow")
        elif kind == "TSPTQ_BMM_2S":
            a, b = x
            R, a_kind = a.rank, o["a_kind"]
            if not is_byte(a) or b.type != _INT8 or out.type != _INT8 or R < 2 or b.rank != R or out.rank != R:
                bad("operands do not fit")
            if any(b.dim(i) != a.dim(i) or out.dim(i) != a.dim(i) for i in range(R - 2)):
                bad("batch dimensions differ")
            N = a.dim(R - 1)
            if a.dim(R - 2) != N or b.dim(R - 2) != N or out.dim(R - 2) != N or out.dim(R - 1) != b.dim(R - 1):
                bad("shapes do not fit (a must be (..., N, N), b (..., N, M))")
            if a_kind not in (_TWO_SCALE, _LOG2):
                unsupported(f"probability code kind {a_kind}")
            if (not _in_range(o["bits"], 2, 8) or not _in_range(o["ratio_log2"], 0, 8)
                    or not _in_range(o["signed_fine"], 0, 1) or not _in_range(o["log2_frac"], 0, 30)
                    or not _in_range(o["b_zp"], -128, 127) or not _in_range(o["mult"], 0, ACC_LIMIT)
                    or not _in_range(o["shift"], -31, 31) or not _in_range(o["out_zp"], -128, 127)):
                badq("options out of range")
            maxd = 1 << o["log2_frac"] if a_kind == _LOG2 else 127 << o["ratio_log2"]
            if N * maxd * 255 > ACC_LIMIT:
                bad("the int32 accumulator could overflow")
        elif kind == "TSPTQ_ADD_2S":
            a, b, p = x
            C = out.dim(-1) if out.rank else 0
            if (a.type != _INT8 or b.type != _INT8 or out.type != _INT8 or not same_shape(a, out)
                    or not same_shape(b, out) or C < 1):
                bad("operands must be int8 of the same shape")
            if p.type != _INT32 or p.rank != 2 or p.dim(0) != 6 or p.dim(1) not in (C, 1):
                bad(f"parameters must be int32 (6, {C})")
            pp = p.data.reshape(6, p.dim(1)).astype(np.int64)
            if np.any((pp[0] < 0) | (pp[2] < 0) | (pp[4] < 0) | (pp[1] < -31) | (pp[1] > 0) | (pp[3] < -31)
                      | (pp[3] > 0) | (pp[5] < -31) | (pp[5] > 31)):
                badq("rescaling parameters of a channel out of range")
            if not all(_in_range(o[key], -128, 127) for key in ("a_zp", "b_zp", "out_zp")):
                badq("zero points out of range")

    # -- schedule --

    def _schedule(self) -> None:
        T = self.tensors
        x, y = T[self.input], T[self.output]
        if x.is_const or x.type != _INT8 or not x.has_quant or x.rank != 4:
            raise ModelFileError("the graph input must be a quantized int8 NHWC image")
        written = {self.input}
        for k, (kind, ins, out) in enumerate(self.ops):
            for i in ins:
                if not T[i].is_const and i not in written:
                    raise ModelFileError(f"op {k} ({kind}) reads tensor {i} ({T[i].name!r}) before any op writes it")
            if out in written:
                raise ModelFileError(f"op {k} ({kind}) writes tensor {out} ({T[out].name!r}), which is already "
                                     "written")
            written.add(out)
        if y.is_const or self.output not in written or self.output == self.input:
            raise ModelFileError("no op writes the graph output")
        total = 0
        for k, (kind, ins, out) in enumerate(self.ops):
            spec, op_ins = OPS[kind], [T[i] for i in ins]  # the op's checks passed: the dims these sizes read exist
            params = spec.persistent(op_ins) if spec.persistent else 0
            scratch = spec.scratch(op_ins) if spec.scratch else 0
            if params > MAX_TENSOR_BYTES or scratch > MAX_TENSOR_BYTES:
                raise ModelFileError(f"op {k} ({kind}): its parameters or scratch need more than 2 GB")
            total += (params + 15) // 16 * 16
            if total > MAX_TENSOR_BYTES:
                raise ModelFileError("the model needs more than 2 GB")


def c_loader_checks(data: bytes) -> _CLoaderChecks:
    """Every check of the C loader (tsptq_load) on these bytes; the checker (its format_version) when they pass."""
    chk = _CLoaderChecks(bytes(data))
    try:
        chk.run()
    except (IndexError, ValueError, OverflowError, struct.error) as e:  # a safety net: the reads are bounds-checked
        raise ModelFileError(f"corrupted or truncated file ({type(e).__name__}: {e})") from None
    return chk


def check_arena(model: IntModel) -> None:
    """The C runtime refuses a model whose arena (persistent + activation plan) exceeds TQ_MAX_ARENA: so does this
    reader. The plan is only computed when a cheap upper bound (every buffer at its own offset) exceeds the limit."""
    from tsptq.intmodel.planner import arena_upper_bound, plan

    if arena_upper_bound(model) > MAX_ARENA:
        plan(model)  # raises ModelFileError past the limit
