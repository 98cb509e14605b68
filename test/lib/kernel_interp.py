"""A small SIMT interpreter of the output of convert-moe-to-gpu, to check what
its kernels compute on a machine without a GPU.

It reads a module printed in the generic form (`moe-opt ... --mlir-print-op-
generic`). `Interpreter(kernel).run(grid, block, args)` runs one `gpu.func`
over a grid: every thread of a block is a Python generator over the kernel's
ops (scf, arith, math, memref, vector, gpu ids, barriers and shuffles, the
LLVM/NVVM ops of the tensor-core GEMMs, and the ballots of dispatch). Threads
stop at `gpu.barrier` until every thread of the block is there, and at
`gpu.shuffle`, `nvgpu.ldmatrix`, `nvvm.mma.sync`, `nvvm.vote.sync` (ballot)
and `nvvm.bar.warp.sync` until all 32 lanes of the warp are
at the same one; anything else (a barrier that some thread of the block
never reaches, an mma that part of a warp skips) is an error, as it is
undefined on a GPU. `nvvm.mma.sync` (m16n8k16, row.col, f16/bf16
multiplicands, f32 accumulators) is emulated from the fragment layout of the
PTX ISA, written here independently of the kernel builder, and so is
`nvgpu.ldmatrix` (.x1/.x2/.x4, with and without .trans); cp.async
(`nvgpu.device_async_copy`) is a copy done at once, its groups and waits
no-ops. Loads and stores are bounds-checked, vector accesses checked against
their alignment attribute (buffers are 256-byte aligned unless a test moves
them); fresh workgroup and device memory hold NaN, so a read of an element
nobody wrote shows. `run_host` interprets a host function (allocations,
copies, launches) and `kernel_interp.py case DIR` runs a test/lib/moe_case.py
case, writing DIR/out.npy as moe-run would.

Values: index and integers are Python ints, f32 np.float32, f16 np.float16,
bf16 a Python float holding a bf16 value, vectors tuples.
"""

import math
import re

import numpy as np

# ---------------------------------------------------------------------------
# Parsing the generic form
# ---------------------------------------------------------------------------

_OP = re.compile(r'^(?:(%[\w.$-]+)(?::(\d+))? = )?"([\w.]+)"\((.*?)\)(.*)$')


class Op:
    __slots__ = ("name", "results", "operands", "props", "regions", "types",
                 "result_types", "attrs", "impl")

    def __init__(self, name, results, operands, props, regions, types, attrs):
        self.name = name
        self.results = results
        self.operands = operands
        self.props = props
        self.regions = regions
        self.types = types
        self.attrs = attrs
        self.result_types = _result_types(types)
        self.impl = None


class Block:
    __slots__ = ("args", "arg_types", "ops")

    def __init__(self):
        self.args, self.arg_types, self.ops = [], [], []


def _split_top(text, sep):
    """Splits `text` at `sep` outside any brackets."""
    depth, parts, start, i = 0, [], 0, 0
    while i < len(text):
        c = text[i]
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            if not (c == ">" and i > 0 and text[i - 1] == "-"):
                depth -= 1
        if depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _result_types(sig):
    if not sig or "->" not in sig:
        return []
    res = _split_top(sig, " -> ")[-1].strip()
    if res.startswith("(") and res.endswith(")"):
        res = res[1:-1]
    return [t.strip() for t in _split_top(res, ", ") if t.strip()]


def _trailer(rest):
    """Splits what follows the operands into properties, attributes and the
    type signature."""
    rest = rest.strip()
    props = attrs = ""
    if rest.startswith("<{"):
        depth = 0
        for i, c in enumerate(rest):
            if c in "{<":
                depth += 1
            elif c == "}" or (c == ">" and rest[i - 1] != "-"):
                depth -= 1
            if depth == 0:
                props, rest = rest[2:i - 1], rest[i + 1:].strip()
                break
    parts = _split_top(rest, " : ")
    if len(parts) > 1:
        head, sig = " : ".join(parts[:-1]).strip(), parts[-1].strip()
    elif rest.startswith(":"):
        head, sig = "", rest[1:].strip()
    else:
        head, sig = rest, ""
    if head.startswith("{"):
        attrs = head[1:-1]
    return props, attrs, sig


def _parse_op(lines, i):
    line = lines[i].strip()
    m = _OP.match(line)
    if not m:
        raise ValueError("cannot parse line %d: %s" % (i + 1, line))
    res, count, name, operands, rest = m.groups()
    results = []
    if res:
        n = int(count) if count else 1
        results = [res] if n == 1 else ["%s#%d" % (res, k) for k in range(n)]
    operands = [o.strip() for o in operands.split(",") if o.strip()]
    regions = []
    rest = rest.strip()
    if rest.endswith("({"):
        before = rest[:-2].strip()
        i += 1
        while True:
            region, i = _parse_region(lines, i)
            regions.append(region)
            closing = lines[i].strip()
            if closing == "}, {":
                i += 1
                continue
            assert closing.startswith("})"), closing
            rest = before + " " + closing[2:]
            break
    props, attrs, sig = _trailer(rest)
    return Op(name, results, operands, props, regions, sig, attrs), i + 1


def _parse_region(lines, i):
    blocks = [Block()]
    while True:
        line = lines[i].strip()
        if line.startswith("})") or line == "}, {":
            return blocks, i
        if line.startswith("^"):
            if blocks[-1].ops or blocks[-1].args:
                blocks.append(Block())
            inner = line[line.index("(") + 1:line.rindex(")")] if "(" in line else ""
            for a in _split_top(inner, ", "):
                if a.strip():
                    n, t = a.split(":", 1)
                    blocks[-1].args.append(n.strip())
                    blocks[-1].arg_types.append(t.strip())
            i += 1
            continue
        op, i = _parse_op(lines, i)
        blocks[-1].ops.append(op)


def parse_module(text):
    lines = [l for l in text.splitlines() if l.strip() and not l.strip().startswith("//")]
    op, _ = _parse_op(lines, 0)
    return op


def find_kernels(module):
    """The gpu.func ops of a parsed module, by name."""
    found = {}

    def walk(op):
        if op.name == "gpu.func":
            m = re.search(r'sym_name = "([^"]+)"', op.attrs + " " + op.props)
            found[m.group(1)] = op
        for region in op.regions:
            for block in region:
                for o in block.ops:
                    walk(o)

    walk(module)
    return found


# ---------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------


def _bf16_bits(x):
    b = int(np.array(np.float32(x)).view(np.uint32))
    if math.isnan(x):
        return 0x7FC0
    # Round to nearest even on the 16 dropped bits.
    b += 0x7FFF + ((b >> 16) & 1)
    return (b >> 16) & 0xFFFF


def _bf16_from_bits(h):
    return float(np.array(np.uint32(h << 16)).view(np.float32))


def to_bf16(x):
    return _bf16_from_bits(_bf16_bits(float(x)))


def _elem(t):
    """Element type of a memref/tensor/vector type string, or the type."""
    m = re.match(r"(?:memref|vector|tensor)<(.*)>$", t)
    if not m:
        return t
    inner = _split_top(m.group(1), ", ")[0]
    return inner.split("x")[-1]


def _convert(v, t):
    if t == "f32":
        return np.float32(v)
    if t == "f16":
        return np.float16(v)
    if t == "bf16":
        return to_bf16(v)
    if t == "f64":
        return np.float64(v)
    raise ValueError("no float type " + t)


_WIDTH = {"i1": 1, "i8": 8, "i16": 16, "i32": 32, "i64": 64, "index": 64}


def _wrap(v, t):
    w = _WIDTH[t]
    v &= (1 << w) - 1
    return v - (1 << w) if v >> (w - 1) and w > 1 else v


def _unsigned(v, t):
    return v & ((1 << _WIDTH[t]) - 1)


def _parse_constant(props, t):
    m = re.match(r"value = dense<([^>]*)> : vector<(\d+)x(\w+)>$", props.strip())
    if m:
        # Splats only.
        return tuple(_parse_constant("value = %s : %s" % (m.group(1), m.group(3)), m.group(3))
                     for _ in range(int(m.group(2))))
    m = re.search(r"value = (.*?)(?: : ([\w]+))?$", props)
    text = m.group(1).strip()
    if text in ("true", "false"):
        return text == "true"
    if t in _WIDTH:
        return _wrap(int(text, 0), t)
    if text.startswith("0x"):
        bits = int(text, 16)
        if t == "f32":
            return np.array(np.uint32(bits)).view(np.float32)[()]
        if t == "f16":
            return np.array(np.uint16(bits)).view(np.float16)[()]
        if t == "bf16":
            return _bf16_from_bits(bits)
        if t == "f64":
            return np.array(np.uint64(bits)).view(np.float64)[()]
    return _convert(float(text), t)


_CMPI = {0: lambda a, b: a == b, 1: lambda a, b: a != b, 2: lambda a, b: a < b,
         3: lambda a, b: a <= b, 4: lambda a, b: a > b, 5: lambda a, b: a >= b}
_CMPI_U = {6: lambda a, b: a < b, 7: lambda a, b: a <= b, 8: lambda a, b: a > b,
           9: lambda a, b: a >= b}


def _cmpf(p, a, b):
    a, b = float(a), float(b)
    unordered = math.isnan(a) or math.isnan(b)
    table = {0: False, 1: not unordered and a == b, 2: not unordered and a > b,
             3: not unordered and a >= b, 4: not unordered and a < b,
             5: not unordered and a <= b, 6: not unordered and a != b,
             7: not unordered, 8: unordered or a == b, 9: unordered or a > b,
             10: unordered or a >= b, 11: unordered or a < b, 12: unordered or a <= b,
             13: unordered or a != b, 14: unordered, 15: True}
    return table[p]


def _maximumf(a, b):
    if math.isnan(float(a)) or math.isnan(float(b)):
        return type(a)(float("nan"))
    return a if a >= b else b


def _minimumf(a, b):
    if math.isnan(float(a)) or math.isnan(float(b)):
        return type(a)(float("nan"))
    return a if a <= b else b


def _f32(fn):
    return lambda x: type(x)(fn(float(x)))


_MATH = {
    "math.exp": _f32(math.exp), "math.tanh": _f32(math.tanh), "math.erf": _f32(math.erf),
    "math.sqrt": _f32(math.sqrt), "math.log": _f32(math.log), "math.ceil": _f32(math.ceil),
    "math.floor": _f32(math.floor), "math.absf": _f32(abs),
    "math.rsqrt": _f32(lambda x: 1.0 / math.sqrt(x)),
}
# Two operands (the region experts' and other tensor compute's kernels).
_MATH2 = {"math.powf": lambda x, y: float(x) ** float(y)}

# ---------------------------------------------------------------------------
# mma.sync m16n8k16, from the PTX ISA's fragment layout
# ---------------------------------------------------------------------------


def _halves(v, ptx):
    """The two elements (low, high) of a fragment register."""
    if ptx == "bf16":
        return (_bf16_from_bits(v & 0xFFFF), _bf16_from_bits((v >> 16) & 0xFFFF))
    return (float(v[0]), float(v[1]))


def mma_m16n8k16(lanes, ptx):
    """`lanes[l]` = (a regs[4], b regs[2], c[4]) of lane l; returns d[4] per
    lane. groupID = lane >> 2, threadID_in_group = lane % 4; A (16 x 16, row):
    a0,a1 row g cols 2t,2t+1; a2,a3 row g+8; a4..a7 the same 8 columns
    further. B (16 x 8, col): b0,b1 rows 2t,2t+1 col g; b2,b3 rows 2t+8,
    2t+9. C/D (16 x 8): c0,c1 row g cols 2t,2t+1; c2,c3 row g+8."""
    A = np.zeros((16, 16))
    B = np.zeros((16, 8))
    C = np.zeros((16, 8))
    for lane, (a, b, c) in enumerate(lanes):
        g, t = lane >> 2, lane % 4
        elems = [x for reg in a for x in _halves(reg, ptx)]
        for i, x in enumerate(elems):
            row = g if (i < 2 or 4 <= i < 6) else g + 8
            col = t * 2 + (i & 1) + (8 if i >= 4 else 0)
            A[row, col] = x
        elems = [x for reg in b for x in _halves(reg, ptx)]
        for i, x in enumerate(elems):
            B[t * 2 + (i & 1) + (8 if i >= 2 else 0), g] = x
        for i, x in enumerate(c):
            C[g + (8 if i >= 2 else 0), t * 2 + (i & 1)] = float(x)
    D = A @ B + C
    return [[np.float32(D[(lane >> 2) + (8 if i >= 2 else 0), (lane % 4) * 2 + (i & 1)])
             for i in range(4)] for lane in range(32)]


def ldmatrix(lanes, spec):
    """`lanes[l]` = (memref, indices) of lane l; returns each lane's fragment
    (a tuple of `num` element pairs). Matrix m (8 x 8, 16-bit) has the rows
    of 8 elements that lanes 8m..8m+7 address (16-byte aligned); lane
    (g = l >> 2, t = l % 4) gets row g, columns 2t and 2t + 1 of each, or with
    .trans rows 2t and 2t + 1 of column g."""
    transpose, num = spec
    mats = []
    for m in range(num):
        rows = []
        for i in range(8):
            mem, idx = lanes[m * 8 + i]
            head, last = mem.vector_index(idx, 8, 16)
            rows.append([mem.load(head + (last + j,)) for j in range(8)])
        mats.append(rows)
    out = []
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        out.append(tuple((M[2 * t][g], M[2 * t + 1][g]) if transpose
                         else (M[g][2 * t], M[g][2 * t + 1]) for M in mats))
    return out


# ---------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------


class KernelError(Exception):
    pass


_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "i32": 4, "i64": 8, "i16": 2, "i8": 1,
          "i1": 1}


class Memref:
    """A buffer: a numpy array, the element type of the memref and the address
    of its first element (256-byte aligned unless a test says otherwise)."""

    def __init__(self, array, elem, base=256):
        self.array = array
        self.elem = elem
        self.base = base

    def vector_index(self, idx, n, alignment):
        """The indices of `n` elements from `idx` along the last dimension;
        checks bounds and that the first one's address is aligned."""
        idx = list(idx)
        last = idx[-1]
        for j in (0, n - 1):
            idx[-1] = last + j
            self.check(idx)
        idx[-1] = last
        flat = int(np.ravel_multi_index(tuple(idx), self.array.shape))
        address = self.base + flat * _BYTES[self.elem]
        if alignment and address % alignment:
            raise KernelError("vector access at %s of %s: address %d not %d-byte aligned"
                              % (idx, self.array.shape, address, alignment))
        return tuple(idx[:-1]), last

    def check(self, idx):
        for i, d in zip(idx, self.array.shape):
            if not 0 <= i < d:
                raise KernelError("index %s out of bounds of %s" % (idx, self.array.shape))
        return tuple(idx)

    def load(self, idx):
        v = self.array[self.check(idx)]
        if self.elem in _WIDTH:
            return int(v)
        if self.elem == "bf16":
            return float(v)
        return v[()] if hasattr(v, "shape") else v

    def store(self, v, idx):
        self.array[self.check(idx)] = v


def _numpy_dtype(elem):
    return {"f32": np.float32, "f16": np.float16, "bf16": np.float64, "f64": np.float64,
            "i32": np.int64, "i64": np.int64, "i16": np.int64, "i8": np.int64,
            "i1": np.int64}[elem]


def _workgroup(t):
    """A block's workgroup buffer, filled with values that show when read
    before written: NaN for floats, and for integers NaN halves in every
    32-bit word (the packed f16/bf16 pairs of the tensor-core tiles)."""
    m = re.match(r"memref<(.*)x(\w+), #gpu.address_space<workgroup>>$", t)
    shape = [int(d) for d in m.group(1).split("x")]
    elem = m.group(2)
    if elem in _WIDTH:
        return Memref(np.full(shape, 0x7FC07FC0, dtype=np.int64), elem)
    return Memref(np.full(shape, np.nan, dtype=_numpy_dtype(elem)), elem)


class Interpreter:
    """Runs one kernel (a parsed gpu.func)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def run(self, grid, block, args):
        """Runs every block of `grid` (2 or 3 sizes) in order with `block`
        threads; `args` are the kernel's arguments (Memref or Python
        scalars); each block gets fresh workgroup memory."""
        body = self.kernel.regions[0][0]
        nargs = len(args)
        workgroup_types = body.arg_types[nargs:]
        for bz in range(grid[2] if len(grid) > 2 else 1):
            for by in range(grid[1]):
                for bx in range(grid[0]):
                    wg = [_workgroup(t) for t in workgroup_types]
                    self._run_block((bx, by, bz), block, list(args) + wg, body)

    def _run_block(self, block_id, block_dim, values, body):
        nthreads = block_dim[0] * block_dim[1] * block_dim[2]
        gens, waits = [], []
        for t in range(nthreads):
            tid = (t % block_dim[0], (t // block_dim[0]) % block_dim[1], 0)
            env = dict(zip(body.args, values))
            gens.append(self._exec(body.ops, env, tid, block_id))
            waits.append(None)
        sends = [None] * nthreads
        done = [False] * nthreads
        while True:
            for t in range(nthreads):
                if done[t] or waits[t] is not None:
                    continue
                try:
                    waits[t] = gens[t].send(sends[t])
                except StopIteration:
                    done[t] = True
                sends[t] = None
            if all(done):
                return
            progressed = False
            # Warp collectives (shuffle, mma.sync, bar.warp.sync): every lane
            # of the warp at the same op.
            for w in range(0, nthreads, 32):
                lanes = range(w, min(w + 32, nthreads))
                at = [waits[l] for l in lanes]
                kinds = {x[0] if x is not None else "done" for x in at}
                if not kinds & {"mma", "warp", "shuffle", "ldmatrix", "ballot"}:
                    continue
                if len(kinds) != 1 or len({id(x[1]) for x in at}) != 1:
                    raise KernelError("a warp collective (mma.sync, ldmatrix, bar.warp.sync, "
                                      "vote.sync or gpu.shuffle) not reached by every lane of warp %d "
                                      "together" % (w // 32))
                if at[0][0] == "mma":
                    d = mma_m16n8k16([x[2] for x in at], at[0][3])
                elif at[0][0] == "ldmatrix":
                    d = ldmatrix([x[2] for x in at], at[0][3])
                elif at[0][0] == "shuffle":
                    d = shuffle([x[2] for x in at], at[0][3])
                elif at[0][0] == "ballot":
                    if len(at) != 32:
                        raise KernelError("vote.sync.ballot in a partial warp")
                    bits = sum(1 << l for l, x in enumerate(at) if x[2])
                    d = [_wrap(bits, "i32")] * len(at)
                else:
                    d = [None] * len(at)
                for l, r in zip(lanes, d):
                    sends[l], waits[l] = r, None
                progressed = True
            if progressed:
                continue
            live = [t for t in range(nthreads) if not done[t]]
            if all(waits[t] is not None and waits[t][0] == "barrier" for t in range(nthreads)):
                ids = {id(waits[t][1]) for t in range(nthreads)}
                if len(ids) != 1:
                    raise KernelError("threads of block %s at different barriers" % (block_id,))
                for t in range(nthreads):
                    waits[t] = None
                continue
            raise KernelError("block %s: %d threads finished, %d wait at a barrier: a "
                              "barrier is not reached by every thread"
                              % (block_id, nthreads - len(live), len(live)))

    def _exec(self, ops, env, tid, bid):
        get = env.__getitem__
        for op in ops:
            name = op.name
            if name == "scf.for":
                lb, ub, step = get(op.operands[0]), get(op.operands[1]), get(op.operands[2])
                carried = [get(o) for o in op.operands[3:]]
                blk = op.regions[0][0]
                iv = lb
                while iv < ub:
                    inner = dict(env)
                    inner[blk.args[0]] = iv
                    for a, v in zip(blk.args[1:], carried):
                        inner[a] = v
                    carried = yield from self._exec(blk.ops, inner, tid, bid)
                    iv += step
                for r, v in zip(op.results, carried):
                    env[r] = v
            elif name == "scf.if":
                region = op.regions[0] if get(op.operands[0]) else op.regions[1]
                out = []
                if region:
                    out = yield from self._exec(region[0].ops, dict(env), tid, bid)
                for r, v in zip(op.results, out):
                    env[r] = v
            elif name == "scf.yield":
                return [get(o) for o in op.operands]
            elif name in ("gpu.return", "func.return"):
                return []
            elif name == "gpu.barrier":
                yield ("barrier", op)
            elif name == "nvvm.bar.warp.sync":
                if get(op.operands[0]) & 0xFFFFFFFF != 0xFFFFFFFF:
                    raise KernelError("bar.warp.sync with a partial mask")
                yield ("warp", op, None, None)
            elif name == "gpu.shuffle":
                mode = re.search(r"shuffle_mode\s*<?\s*(\w+)", op.props + " " + str(op.attrs))
                value, offset, width = (get(o) for o in op.operands)
                got = yield ("shuffle", op, (value, offset, width), mode.group(1) if mode else "")
                env[op.results[0]] = got[0]
                if len(op.results) > 1:
                    env[op.results[1]] = got[1]
            elif name == "nvgpu.ldmatrix":
                vals = [get(o) for o in op.operands]
                spec = ("transpose = true" in op.props,
                        int(re.search(r"numTiles = (\d+)", op.props).group(1)))
                env[op.results[0]] = yield ("ldmatrix", op, (vals[0], vals[1:]), spec)
            elif name == "nvvm.vote.sync":
                if "ballot" not in op.props:
                    raise KernelError("vote.sync other than ballot: %s" % op.props)
                if get(op.operands[0]) & 0xFFFFFFFF != 0xFFFFFFFF:
                    raise KernelError("vote.sync with a partial mask")
                got = yield ("ballot", op, bool(get(op.operands[1])), None)
                env[op.results[0]] = got
            elif name == "nvvm.mma.sync":
                vals = [get(o) for o in op.operands]
                a, b, c = vals[:4], vals[4:6], vals[6:10]
                ptx = "bf16" if "mma_type<bf16>" in op.props else "f16"
                d = yield ("mma", op, (a, b, c), ptx)
                env[op.results[0]] = d
            else:
                env_vals = [get(o) for o in op.operands]
                out = self._scalar(op, env_vals, tid, bid)
                if op.results:
                    env[op.results[0]] = out
        return []

    def _scalar(self, op, v, tid, bid):
        name = op.name
        rt = op.result_types[0] if op.result_types else None
        if name == "arith.constant":
            if op.impl is None:
                op.impl = _parse_constant(op.props, rt)
            return op.impl
        if name == "gpu.thread_id" or name == "gpu.block_id":
            d = "xyz".index(re.search(r"dim (\w)", op.props).group(1))
            return (tid if name == "gpu.thread_id" else bid)[d]
        if name in ("arith.addi", "arith.subi", "arith.muli"):
            r = v[0] + v[1] if name == "arith.addi" else (
                v[0] - v[1] if name == "arith.subi" else v[0] * v[1])
            return _wrap(r, rt)
        if name == "arith.divui":
            return _unsigned(v[0], rt) // _unsigned(v[1], rt)
        if name == "arith.remui":
            return _unsigned(v[0], rt) % _unsigned(v[1], rt)
        if name == "arith.ceildivui":
            a, b = _unsigned(v[0], rt), _unsigned(v[1], rt)
            return -(-a // b)
        if name == "arith.divsi":
            q = abs(v[0]) // abs(v[1])
            return q if (v[0] >= 0) == (v[1] >= 0) else -q
        if name == "arith.minsi":
            return min(v)
        if name == "arith.maxsi":
            return max(v)
        if name == "arith.cmpi":
            p = int(re.search(r"predicate = (\d+)", op.props).group(1))
            if p in _CMPI:
                return _CMPI[p](v[0], v[1])
            t = op.types.split("(")[1].split(",")[0].strip()
            return _CMPI_U[p](_unsigned(v[0], t), _unsigned(v[1], t))
        if name == "arith.andi":
            if rt == "i1":
                return bool(v[0]) and bool(v[1])
            return _wrap(v[0] & v[1], rt)
        if name == "arith.ori":
            if rt == "i1":
                return bool(v[0]) or bool(v[1])
            return _wrap(v[0] | v[1], rt)
        if name == "arith.xori":
            if rt == "i1":
                return bool(v[0]) != bool(v[1])
            return _wrap(v[0] ^ v[1], rt)
        if name == "arith.shli":
            return _wrap(v[0] << v[1], rt)
        if name == "arith.shrui":
            return _wrap(_unsigned(v[0], rt) >> v[1], rt)
        if name == "arith.shrsi":
            return _wrap(v[0] >> v[1], rt)
        if name == "arith.select":
            return v[1] if v[0] else v[2]
        if name in ("arith.index_cast", "arith.extsi"):
            return _wrap(int(v[0]), rt)
        if name == "arith.index_castui":
            src = op.types.split("(")[1].split(")")[0].strip()
            return _wrap(_unsigned(int(v[0]), src), rt)
        if name == "arith.extui":
            src = op.types.split("(")[1].split(")")[0].strip()
            return _unsigned(int(v[0]), src)
        if name == "arith.trunci":
            return _wrap(int(v[0]), rt)
        if name == "arith.bitcast":
            src = op.types.split("(")[1].split(")")[0].strip()
            if src == "f16" and rt == "i16":
                return int(np.array(np.float16(v[0])).view(np.uint16))
            if src == "bf16" and rt == "i16":
                return _bf16_bits(float(v[0]))
            if src == "f32" and rt == "i32":
                return _wrap(int(np.array(np.float32(v[0])).view(np.uint32)), "i32")
            raise KernelError("bitcast %s -> %s" % (src, rt))
        if name == "llvm.bitcast":
            # i32 -> vector<2xf16>: element 0 is the low half.
            assert rt == "vector<2xf16>", rt
            bits = v[0] & 0xFFFFFFFF
            lo = np.array(np.uint16(bits & 0xFFFF)).view(np.float16)[()]
            hi = np.array(np.uint16(bits >> 16)).view(np.float16)[()]
            return (lo, hi)
        if name == "llvm.extractvalue":
            pos = int(re.search(r"position = array<i64: (\d+)>", op.props).group(1))
            return v[0][pos]
        if name == "arith.addf":
            return v[0] + v[1]
        if name == "arith.subf":
            return v[0] - v[1]
        if name == "arith.mulf":
            return v[0] * v[1]
        if name == "arith.divf":
            with np.errstate(all="ignore"):
                return v[0] / v[1]
        if name == "arith.negf":
            return -v[0]
        if name == "arith.maximumf":
            return _maximumf(v[0], v[1])
        if name == "arith.minimumf":
            return _minimumf(v[0], v[1])
        if name == "arith.cmpf":
            p = int(re.search(r"predicate = (\d+)", op.props).group(1))
            return _cmpf(p, v[0], v[1])
        if name in ("arith.extf", "arith.truncf"):
            return _convert(float(v[0]), rt)
        if name == "arith.sitofp":
            return _convert(float(v[0]), rt)
        if name == "arith.uitofp":
            src = op.types.split("(")[1].split(")")[0].strip()
            return _convert(float(_unsigned(v[0], src)), rt)
        if name in ("arith.fptosi", "arith.fptoui"):
            # Truncation toward zero; out of range is poison in MLIR.
            f = float(v[0])
            if math.isnan(f) or math.isinf(f):
                raise KernelError("%s of %s" % (name, f))
            return _wrap(int(f), rt)
        if name == "llvm.intr.ctpop":
            return bin(_unsigned(v[0], rt)).count("1")
        if name == "math.fma":
            return _convert(float(v[0]) * float(v[1]) + float(v[2]), rt)
        if name in _MATH:
            with np.errstate(all="ignore"):
                return _MATH[name](v[0])
        if name in _MATH2:
            return _convert(_MATH2[name](v[0], v[1]), rt)
        if name == "memref.load":
            return v[0].load(v[1:])
        if name == "memref.store":
            v[1].store(v[0], v[2:])
            return None
        if name == "nvgpu.device_async_copy":
            # Modelled as a copy done at once (the pipelining is not): the
            # first srcElements elements of the source row, zeros up to
            # dstElements; 16-byte copies must be 16-byte aligned at both ends.
            sizes = _segments(op.props)
            dst, pos = v[0], 1
            dst_idx = v[pos:pos + sizes[1]]
            pos += sizes[1]
            src = v[pos]
            src_idx = v[pos + 1:pos + 1 + sizes[3]]
            pos += 1 + sizes[3]
            n = int(re.search(r"dstElements = (\d+)", op.props).group(1))
            count = v[pos] if sizes[4] else n
            if not 0 <= count <= n:
                raise KernelError("device_async_copy of %d of %d elements" % (count, n))
            align = n * _BYTES[dst.elem]
            dhead, dlast = dst.vector_index(dst_idx, n, align)
            shead, slast = src.vector_index(src_idx, n, align) if count else (None, None)
            for j in range(n):
                x = src.load(shead + (slast + j,)) if j < count else 0.0
                dst.store(x, dhead + (dlast + j,))
            return None
        if name in ("nvgpu.device_async_create_group", "nvgpu.device_async_wait"):
            return None
        if name == "memref.dim":
            return v[0].array.shape[v[1]]
        if name == "memref.extract_aligned_pointer_as_index":
            return v[0].base
        if name in ("vector.load", "vector.store"):
            m = re.search(r"alignment = (\d+)", op.props)
            alignment = int(m.group(1)) if m else 0
            mem = v[0] if name == "vector.load" else v[1]
            idx = v[1:] if name == "vector.load" else v[2:]
            n = int(re.match(r"vector<(\d+)x", rt if name == "vector.load" else
                             op.types.split("(")[1]).group(1))
            head, last = mem.vector_index(idx, n, alignment)
            if name == "vector.load":
                return tuple(mem.load(head + (last + j,)) for j in range(n))
            for j in range(n):
                mem.store(v[0][j], head + (last + j,))
            return None
        if name == "vector.from_elements":
            return tuple(v)
        if name == "vector.extract":
            pos = int(re.search(r"static_position = array<i64: (\d+)>", op.props).group(1))
            return v[0][pos]
        if name == "vector.interleave":
            return tuple(x for pair in zip(v[0], v[1]) for x in pair)
        if name == "vector.shuffle":
            mask = [int(x) for x in re.search(r"mask = array<i64: ([^>]*)>", op.props)
                    .group(1).split(",")]
            both = tuple(v[0]) + tuple(v[1])
            return tuple(both[i] for i in mask)
        if name == "vector.bitcast":
            src = _elem(op.types.split("(")[1].split(")")[0].strip())
            dst = _elem(rt)
            if src in ("f16", "bf16") and dst == "i32":
                bits = [int(np.array(np.float16(x)).view(np.uint16)) if src == "f16"
                        else _bf16_bits(float(x)) for x in v[0]]
                return tuple(_wrap(bits[2 * j] | bits[2 * j + 1] << 16, "i32")
                             for j in range(len(bits) // 2))
            raise KernelError("vector.bitcast %s -> %s" % (src, dst))
        raise KernelError("op %s is not interpreted" % name)


def buffer(array, elem=None):
    """A kernel argument for a numpy array (bf16: float64 values, rounded)."""
    if elem is None:
        elem = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16",
                np.dtype(np.float64): "f64", np.dtype(np.int32): "i32",
                np.dtype(np.int64): "i64"}[array.dtype]
    if elem in ("i32", "i64"):
        array = array.astype(np.int64)
    if elem == "bf16":
        array = np.vectorize(to_bf16)(array).astype(np.float64)
    return Memref(array.copy(), elem)


# ---------------------------------------------------------------------------
# Host functions: the launches of convert-moe-to-gpu's output
# ---------------------------------------------------------------------------


def _shape(t):
    m = re.match(r"(?:memref|tensor)<(.*)>$", t)
    dims = _split_top(m.group(1), ", ")[0].split("x")[:-1]
    return [None if d == "?" else int(d) for d in dims]


def _garbage(shape, elem):
    """A fresh device buffer: NaN (floats) or a large negative value
    (integers), so that a read of an element nobody wrote shows."""
    if elem in _WIDTH:
        return Memref(np.full(shape, -(1 << 40), dtype=np.int64), elem)
    return Memref(np.full(shape, np.nan, dtype=_numpy_dtype(elem)), elem)


def _dense_tensor(props, t):
    """A `dense<"0x...">` (raw little-endian data) or splat tensor constant."""
    shape, elem = _shape(t), _elem(t)
    m = re.search(r'dense<"0x([0-9A-Fa-f]*)">', props)
    if m:
        dtype = {"f16": "<f2", "f32": "<f4", "f64": "<f8", "i32": "<i4",
                 "i64": "<i8", "i8": "<i1"}[elem]
        array = np.frombuffer(bytes.fromhex(m.group(1)), dtype=dtype)
        if array.size == 1:
            array = np.full(shape, array[0])
        return buffer(array.reshape(shape).copy(), elem)
    m = re.search(r"dense<([^>\"]*)>", props)
    text = m.group(1).replace("[", " ").replace("]", " ")
    values = [_parse_constant("value = %s : %s" % (v.strip(), elem), elem)
              for v in text.split(",")]
    if len(values) == 1:
        return buffer(np.full(shape, values[0], dtype=_numpy_dtype(elem)), elem)
    return buffer(np.array(values, dtype=_numpy_dtype(elem)).reshape(shape), elem)


def shuffle(lanes, mode):
    """gpu.shuffle over the 32 lanes of a warp: lane i gets the value of lane
    i ^ offset (xor), i + offset (down), i - offset (up) or offset (idx)
    within its segment of `width` lanes, and whether that lane exists."""
    if len(lanes) != 32:
        raise KernelError("gpu.shuffle in a partial warp")
    out = []
    for i, (value, offset, width) in enumerate(lanes):
        base = i - i % width
        src = {"xor": i ^ offset, "down": i + offset, "up": i - offset,
               "idx": base + offset}.get(mode)
        if src is None:
            raise KernelError("gpu.shuffle mode %r is not interpreted" % mode)
        valid = base <= src < base + width
        out.append((lanes[src][0] if valid else value, 1 if valid else 0))
    return out


def run_host(module, inputs, func_name=None, log=None, bases=None, hooks=None):
    """Runs the host function `func_name` (the only func.func by default) of
    a module after convert-moe-to-gpu (before bufferization) on `inputs`
    (numpy arrays; bf16 as float64 holding bf16 values), launching its
    kernels on the interpreter; returns the results as numpy arrays.
    `bases` maps argument positions to the address of their buffer (256 by
    default), to test misaligned buffers. Host loops and branches (the
    expert loop of moe.generic_experts) run here too, and so do the views
    the host takes of tensors (slices, reshapes). An input that is already a
    Memref is used as it is (the caller sees what the code writes to it).
    `hooks` maps the names of the runtime functions the host code calls
    (func.call of moe_rt_expert_acquire, ...) to Python functions."""
    funcs, kernels = {}, find_kernels(module)
    for region in module.regions:
        for block in region:
            for op in block.ops:
                if op.name == "func.func":
                    funcs[re.search(r'sym_name = "([^"]+)"', op.props).group(1)] = op
    func = funcs[func_name] if func_name else next(iter(funcs.values()))
    body = func.regions[0][0]
    env = {}
    for i, (name, t, a) in enumerate(zip(body.args, body.arg_types, inputs)):
        if isinstance(a, Memref):
            env[name] = a
            continue
        env[name] = buffer(np.asarray(a), _elem(t))
        env[name].base = (bases or {}).get(i, 256)
    host = _Host(kernels, log, hooks)
    out = host.run(body.ops, env)
    if out is None:
        raise KernelError("no func.return")
    return [v.array for v in out]


_DYNAMIC = -9223372036854775808


def _static_list(props, name):
    m = re.search(name + r" = array<i64(?:: ([^>]*))?>", props)
    return [int(x) for x in m.group(1).split(",")] if m and m.group(1) else []


def _segments(props):
    return [int(x) for x in re.search(r"operandSegmentSizes = array<i32: ([^>]*)>",
                                      props).group(1).split(",")]


class _Host:
    """The host side of a lowered module: buffers are Memrefs (device and
    host memory alike), tensors the Memrefs they were made from."""

    def __init__(self, kernels, log, hooks=None):
        self.kernels = kernels
        self.log = log
        self.hooks = hooks or {}
        self.interp = Interpreter(None)
        self.views = {}

    def run(self, ops, env):
        """Runs `ops`; returns the values of a func.return or scf.yield, or
        None at the end of the ops."""
        get = env.__getitem__
        for op in ops:
            name = op.name
            if name in ("bufferization.to_buffer", "bufferization.to_tensor", "memref.cast",
                        "tensor.cast"):
                env[op.results[0]] = get(op.operands[0])
            elif name in ("tensor.dim", "memref.dim"):
                env[op.results[0]] = get(op.operands[0]).array.shape[get(op.operands[1])]
            elif name in ("gpu.alloc", "tensor.empty", "memref.alloc"):
                t = op.result_types[0]
                dyn = iter(get(o) for o in op.operands)
                shape = [next(dyn) if d is None else d for d in _shape(t)]
                env[op.results[0]] = _garbage(shape, _elem(t))
            elif name == "gpu.memcpy":
                dst, src = get(op.operands[-2]), get(op.operands[-1])
                dst.array[...] = src.array
            elif name == "memref.view":
                env[op.results[0]] = self._view(op, get)
            elif name in ("gpu.dealloc", "memref.dealloc"):
                pass
            elif name == "cf.assert":
                # A run-time check of the host code (the ONNX importer's shape
                # checks; compiled for CUDA, a failed one aborts).
                if not get(op.operands[0]):
                    msg = re.search(r'msg = "((?:[^"\\]|\\.)*)"', op.props)
                    raise KernelError("run-time check failed: %s" % (msg.group(1) if msg else "?"))
            elif name == "gpu.launch_func":
                sizes = _segments(op.props)
                vals = [get(o) for o in op.operands]
                pos = sizes[0]
                grid = vals[pos:pos + 3]
                block = vals[pos + 3:pos + 6]
                args = vals[sum(sizes[:11]):sum(sizes[:12])]
                kname = re.search(r"kernel = @\w+::@(\w+)", op.props).group(1)
                if self.log is not None:
                    self.log.append((kname, tuple(grid), tuple(block)))
                if 0 in grid:
                    continue
                Interpreter(self.kernels[kname]).run(grid, block, args)
            elif name in ("func.return", "scf.yield", "scf.condition"):
                return [get(o) for o in op.operands]
            elif name == "func.call":
                callee = re.search(r"callee = @(\w+)", op.props).group(1)
                if callee not in self.hooks:
                    raise KernelError("call of %s, which the test does not define" % callee)
                out = self.hooks[callee](*[get(o) for o in op.operands])
                if op.results:
                    env[op.results[0]] = out
            elif name == "scf.while":
                carried = [get(o) for o in op.operands]
                before, after = op.regions[0][0], op.regions[1][0]
                while True:
                    inner = dict(env)
                    inner.update(zip(before.args, carried))
                    cond, *values = self.run(before.ops, inner)
                    if not cond:
                        break
                    inner = dict(env)
                    inner.update(zip(after.args, values))
                    carried = self.run(after.ops, inner)
                env.update(zip(op.results, values))
            elif name == "scf.for":
                lb, ub, step = get(op.operands[0]), get(op.operands[1]), get(op.operands[2])
                carried = [get(o) for o in op.operands[3:]]
                blk = op.regions[0][0]
                iv = lb
                while iv < ub:
                    inner = dict(env)
                    inner[blk.args[0]] = iv
                    inner.update(zip(blk.args[1:], carried))
                    carried = self.run(blk.ops, inner) or []
                    iv += step
                env.update(zip(op.results, carried))
            elif name == "scf.if":
                region = op.regions[0] if get(op.operands[0]) else op.regions[1]
                out = self.run(region[0].ops, dict(env)) if region else []
                env.update(zip(op.results, out or []))
            elif name == "tensor.extract_slice":
                env[op.results[0]] = self._slice(op, get)
            elif name in ("tensor.expand_shape", "tensor.collapse_shape"):
                src = get(op.operands[0])
                shape = _shape(op.result_types[0])
                if name == "tensor.expand_shape":
                    dyn = iter(get(o) for o in op.operands[1:])
                    shape = [next(dyn) if d is None else d for d in shape]
                else:
                    groups = re.search(r"reassociation = (\[\[.*?\]\])", op.props).group(1)
                    groups = [[int(x) for x in g.split(",")]
                              for g in re.findall(r"\[([\d, ]+)\]", groups)]
                    shape = [int(np.prod([src.array.shape[i] for i in g])) for g in groups]
                env[op.results[0]] = Memref(src.array.reshape(shape), src.elem, src.base)
            elif name == "tensor.from_elements":
                t = op.result_types[0]
                arr = np.array([get(o) for o in op.operands]).reshape(_shape(t))
                env[op.results[0]] = buffer(arr.astype(_numpy_dtype(_elem(t))), _elem(t))
            elif name == "tensor.reshape":
                src, shape = get(op.operands[0]), get(op.operands[1])
                env[op.results[0]] = Memref(src.array.reshape([int(d) for d in shape.array]),
                                            src.elem, src.base)
            elif name == "arith.constant" and op.result_types[0].startswith("tensor<"):
                env[op.results[0]] = _dense_tensor(op.props, op.result_types[0])
            else:
                vals = [get(o) for o in op.operands]
                out = self.interp._scalar(op, vals, (0, 0, 0), (0, 0, 0))
                if op.results:
                    env[op.results[0]] = out
        return None

    def _view(self, op, get):
        # A typed view of an i8 buffer: its own array here, checked to lie
        # in the buffer and not to overlap another view of it.
        src, shift = get(op.operands[0]), get(op.operands[1])
        t = op.result_types[0]
        dyn = iter(get(o) for o in op.operands[2:])
        shape = [next(dyn) if d is None else d for d in _shape(t)]
        view = _garbage(shape, _elem(t))
        size = int(np.prod(shape)) * _BYTES[_elem(t)]
        ranges = self.views.setdefault(id(src), [])
        if shift < 0 or shift + size > src.array.size or any(
                size and a < shift + size and shift < b for a, b in ranges):
            raise KernelError("memref.view [%d, %d) of a %d-byte buffer, views %s"
                              % (shift, shift + size, src.array.size, ranges))
        ranges.append((shift, shift + size))
        view.base = src.base + shift
        return view

    def _slice(self, op, get):
        """tensor.extract_slice: a numpy view, then the result's shape (a
        rank-reducing slice drops unit dimensions)."""
        src = get(op.operands[0])
        dyn = iter(get(o) for o in op.operands[1:])
        parts = []
        for key in ("static_offsets", "static_sizes", "static_strides"):
            vals = [next(dyn) if v == _DYNAMIC else v for v in _static_list(op.props, key)]
            parts.append(vals)
        offsets, sizes, strides = parts
        index = tuple(slice(o, o + s * st, st) for o, s, st in zip(offsets, sizes, strides))
        view = src.array[index]
        rank = len(_shape(op.result_types[0]))
        shape = list(sizes)
        while len(shape) > rank:
            shape.remove(1)
        if view.shape != tuple(shape):
            view = view.reshape(shape)
        return Memref(view, src.elem, src.base)


# ---------------------------------------------------------------------------
# Command line: a test/lib/moe_case.py case on the interpreter
# ---------------------------------------------------------------------------


def run_case(directory, moe_opt="moe-opt"):
    """Lowers DIR/model.mlir with convert-moe-to-gpu, runs it on DIR's inputs
    and writes DIR/out.npy (what moe-run writes for a compiled model). DIR is
    a test/lib/moe_case.py case, one of the generators of
    test/Integration/CPU/Inputs or any model.mlir beside in0.npy, in1.npy,
    ... (e.g. an imported ONNX model)."""
    import json
    import os
    import subprocess

    lowered = subprocess.run(
        [moe_opt, os.path.join(directory, "model.mlir"), "--moe-expand", "--moe-fuse-gating",
         "--convert-moe-to-gpu=allow-host-constants", "--canonicalize", "--cse",
         "--mlir-print-op-generic"],
        capture_output=True, text=True)
    if lowered.returncode:
        raise SystemExit(lowered.stderr)
    case = {}
    if os.path.exists(os.path.join(directory, "case.json")):
        with open(os.path.join(directory, "case.json")) as f:
            case = json.load(f)
    # moe_case.py records the input count; the other generators write in0.npy, in1.npy, ...
    count = case.get("inputs")
    if count is None:
        count = 0
        while os.path.exists(os.path.join(directory, "in%d.npy" % count)):
            count += 1
    inputs = [np.load(os.path.join(directory, "in%d.npy" % i)) for i in range(count)]
    log = []
    out = run_host(parse_module(lowered.stdout), inputs, log=log)
    # The input's float type (bf16 results are float64 here); a model whose
    # first input is integer (token ids) keeps its result's type.
    dtype = inputs[0].dtype if inputs[0].dtype.kind == "f" else out[0].dtype
    np.save(os.path.join(directory, "out.npy"), out[0].astype(dtype))
    return log


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("case", help="run a moe_case.py case directory, write DIR/out.npy")
    c.add_argument("dir")
    c.add_argument("--moe-opt", default="moe-opt")
    args = ap.parse_args()
    for kernel, grid, block in run_case(args.dir, args.moe_opt):
        print("kernel_interp: %s grid %s block %s" % (kernel, grid, block))


if __name__ == "__main__":
    main()
