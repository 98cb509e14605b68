"""The runtime half of moe_mlir: loads and runs compiled models.

A ctypes binding of the runtime's C API (runtime/include/moe/runtime/runtime.h)
in ``libmoe_runtime.so`` beside this file: no MLIR, no LLVM and no compiled
Python extension, so ``moe_mlir.load`` and ``run`` work with any Python 3 that
has numpy, on a machine that has the compiled model and this package but no
MLIR installed (a GPU server). ctypes releases the GIL during every call into
the runtime.
"""

import ctypes
import os

import numpy as np

from ._errors import ModelError

_c_int64_p = ctypes.POINTER(ctypes.c_int64)

# moe_dtype_t, in the order of runtime.h.
(F32, F64, F16, BF16, I8, I16, I32, I64, U8, I1, DTYPE_COUNT) = range(11)
_TO_NUMPY = {F32: "float32", F64: "float64", F16: "float16", BF16: "uint16", I8: "int8",
             I16: "int16", I32: "int32", I64: "int64", U8: "uint8", I1: "bool"}
DYNAMIC_DIM = -1

_MODES = {"ondemand": 0, "lru": 1, "prefetch": 2}


class _CacheStats(ctypes.Structure):
    """moe_cache_stats_t."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "acquires", "hits", "misses", "stall_ns", "demand_loads", "prefetch_loads",
        "prefetch_used", "predictions", "bytes_read", "evictions", "read_ns",
        "slot_bytes", "pinned")] + [("direct_io", ctypes.c_int)]


def _load_library():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libmoe_runtime.so")
    lib = ctypes.CDLL(path)
    p, s, i, d, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_double, ctypes.c_int64
    cstr = ctypes.c_char_p
    pp = ctypes.POINTER(ctypes.c_void_p)
    for name, restype, argtypes in (
            ("moe_status_message", cstr, [p]),
            ("moe_status_free", None, [p]),
            ("moe_dtype_name", cstr, [i]),
            ("moe_tensor_wrap", p, [p, i, s, _c_int64_p, i, pp]),
            ("moe_tensor_wrap_device", p, [p, i, s, _c_int64_p, p, p, pp]),
            ("moe_tensor_free", None, [p]),
            ("moe_tensor_data", p, [p]),
            ("moe_tensor_dtype", i, [p]),
            ("moe_tensor_rank", s, [p]),
            ("moe_tensor_shape", _c_int64_p, [p]),
            ("moe_tensor_byte_size", s, [p]),
            ("moe_model_load", p, [cstr, cstr, pp]),
            ("moe_model_free", None, [p]),
            ("moe_model_last_device_ms", d, [p]),
            ("moe_model_signature_text", cstr, [p]),
            ("moe_model_weights_path", cstr, [p]),
            ("moe_model_num_inputs", s, [p]),
            ("moe_model_input_name", cstr, [p, s]),
            ("moe_model_input_dtype", i, [p, s]),
            ("moe_model_input_rank", s, [p, s]),
            ("moe_model_input_dims", _c_int64_p, [p, s]),
            ("moe_model_num_outputs", s, [p]),
            ("moe_model_output_name", cstr, [p, s]),
            ("moe_model_output_dtype", i, [p, s]),
            ("moe_model_output_rank", s, [p, s]),
            ("moe_model_invoke", p, [p, pp, s, pp, s]),
            ("moe_model_has_device", i, [p]),
            ("moe_model_invoke_device", p, [p, pp, s, pp, s]),
            ("moe_model_tensor_to_device", p, [p, p, pp]),
            ("moe_model_tensor_to_host", p, [p, p, pp]),
            ("moe_parse_expert_budget", i, [cstr, _c_int64_p, ctypes.POINTER(d)]),
            ("moe_model_has_cache", i, [p]),
            ("moe_model_configure_cache", p, [p, i64, d, i]),
            ("moe_model_cache_stats", None, [p, ctypes.POINTER(_CacheStats)]),
            ("moe_model_reset_cache_stats", None, [p]),
            ("moe_model_write_profile", p, [p, cstr])):
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


_lib = _load_library()


def _check(status):
    """Raises ModelError with the message of a non-null moe_status_t."""
    if status:
        message = _lib.moe_status_message(status).decode("utf-8", "replace")
        _lib.moe_status_free(status)
        raise ModelError(message)


def _str(raw):
    return None if raw is None else raw.decode("utf-8", "replace")


def _to_numpy(dtype):
    if dtype not in _TO_NUMPY:
        raise ModelError("invalid element type %d" % dtype)
    return np.dtype(_TO_NUMPY[dtype])


# (numpy kind, item size) -> moe_dtype_t; uint16 is bf16 where bf16 is
# expected (_from_numpy).
_FROM_NUMPY = {("f", 4): F32, ("f", 8): F64, ("f", 2): F16, ("i", 1): I8, ("i", 2): I16,
               ("i", 4): I32, ("i", 8): I64, ("u", 1): U8, ("b", 1): I1}


def _from_numpy(dtype, expected):
    """The element type of numpy `dtype`, given that the model expects
    `expected` (uint16 is bf16 only where bf16 is expected), or None."""
    if dtype.kind == "u" and dtype.itemsize == 2 and expected == BF16:
        return BF16
    return _FROM_NUMPY.get((dtype.kind, dtype.itemsize))


def _shape_tuple(dims, rank):
    return tuple(None if dims[i] == DYNAMIC_DIM else int(dims[i]) for i in range(rank))


def _tensor_shape(tensor):
    rank = _lib.moe_tensor_rank(tensor)
    dims = _lib.moe_tensor_shape(tensor)
    return tuple(int(dims[i]) for i in range(rank))


def _row_major(shape, itemsize):
    strides, stride = [0] * len(shape), itemsize
    for i in reversed(range(len(shape))):
        strides[i] = stride
        stride *= max(shape[i], 1)
    return strides


def parse_expert_budget(text):
    """(bytes, -1.0) or (-1, percent) for an expert budget as moe-run's
    --expert-budget takes it, or None."""
    nbytes, percent = ctypes.c_int64(-1), ctypes.c_double(-1)
    if not _lib.moe_parse_expert_budget(text.encode(), ctypes.byref(nbytes),
                                        ctypes.byref(percent)):
        return None
    return (nbytes.value, percent.value)


class _Owned:
    """Owns a runtime object: `free(raw)` when dropped (the function is kept
    here, so that it is still there while the interpreter shuts down)."""

    def __init__(self, raw, free):
        self.raw = raw
        self._free = free

    def __del__(self):
        if self.raw:
            self._free(self.raw)
            self.raw = None


def _model_handle(raw):
    """A loaded model, freed once the Model and every DeviceArray it made are
    gone."""
    return _Owned(raw, _lib.moe_model_free)


def _owned_tensor(raw):
    """A runtime tensor, freed (with its data if it owns it) when dropped."""
    return _Owned(raw, _lib.moe_tensor_free)


class _HostResult:
    """The buffer of a host result tensor, exposed to numpy (its base): the
    tensor is freed when numpy releases the array."""

    def __init__(self, tensor, dtype, shape):
        self._tensor = tensor
        self.__array_interface__ = dict(
            shape=shape, typestr=dtype.str, version=3,
            data=(_lib.moe_tensor_data(tensor.raw) or 0, False),
            strides=tuple(_row_major(shape, dtype.itemsize)))


class DeviceArray:
    """A tensor in the device memory of a ``target="cuda"`` model: a result of
    ``run(..., device=True)`` or of ``to_device``. Owns the memory (freed
    with the object, through the model's CUDA runtime) and keeps the model
    loaded. Exports ``__cuda_array_interface__`` (version 3)."""

    def __init__(self, tensor, model):
        self._tensor = tensor
        self._model = model

    @property
    def shape(self):
        return _tensor_shape(self._tensor.raw)

    @property
    def dtype(self):
        return _to_numpy(_lib.moe_tensor_dtype(self._tensor.raw))

    @property
    def pointer(self):
        return _lib.moe_tensor_data(self._tensor.raw) or 0

    def numpy(self):
        """Copies the tensor into a new numpy array."""
        host = ctypes.c_void_p()
        _check(_lib.moe_model_tensor_to_host(self._model.raw, self._tensor.raw,
                                             ctypes.byref(host)))
        owned = _owned_tensor(host.value)
        result = np.empty(_tensor_shape(owned.raw), self.dtype)
        size = _lib.moe_tensor_byte_size(owned.raw)
        if size:
            ctypes.memmove(result.ctypes.data, _lib.moe_tensor_data(owned.raw), size)
        return result

    @property
    def __cuda_array_interface__(self):
        """Row-major (no strides), complete when it is read (no stream to
        wait on), writable."""
        return dict(shape=self.shape, typestr=self.dtype.str, data=(self.pointer, False),
                    strides=None, stream=None, version=3)


class Model:
    """A loaded model of the runtime C API."""

    def __init__(self, library, weights=None):
        raw = ctypes.c_void_p()
        _check(_lib.moe_model_load(os.fsencode(library),
                                   None if weights is None else os.fsencode(weights),
                                   ctypes.byref(raw)))
        self._handle = _model_handle(raw.value)

    @property
    def _raw(self):
        return self._handle.raw

    @property
    def signature(self):
        return _str(_lib.moe_model_signature_text(self._raw))

    @property
    def weights_path(self):
        return _str(_lib.moe_model_weights_path(self._raw))

    @property
    def inputs(self):
        """[(name, element type, numpy dtype, shape)] with None for `?`."""
        specs = []
        for i in range(_lib.moe_model_num_inputs(self._raw)):
            dtype = _lib.moe_model_input_dtype(self._raw, i)
            specs.append((_str(_lib.moe_model_input_name(self._raw, i)),
                          _str(_lib.moe_dtype_name(dtype)), _to_numpy(dtype),
                          _shape_tuple(_lib.moe_model_input_dims(self._raw, i),
                                       _lib.moe_model_input_rank(self._raw, i))))
        return specs

    @property
    def outputs(self):
        """[(name, element type, numpy dtype, shape)]; the signature gives
        only the rank of a result, so every extent is None."""
        specs = []
        for i in range(_lib.moe_model_num_outputs(self._raw)):
            dtype = _lib.moe_model_output_dtype(self._raw, i)
            rank = _lib.moe_model_output_rank(self._raw, i)
            specs.append((_str(_lib.moe_model_output_name(self._raw, i)),
                          _str(_lib.moe_dtype_name(dtype)), _to_numpy(dtype),
                          (None,) * rank))
        return specs

    @property
    def has_device(self):
        return _lib.moe_model_has_device(self._raw) != 0

    def _require_device(self, what):
        if not self.has_device:
            raise ModelError('%s needs a model compiled with target="cuda" (moe-compile '
                             '--target=cuda); this one runs on the CPU' % what)

    def _describe(self, index):
        if index is None:
            return "the array"
        return "input %d ('%s')" % (index, _str(_lib.moe_model_input_name(self._raw, index)))

    def _element_type(self, index, dtype):
        expected = DTYPE_COUNT if index is None else _lib.moe_model_input_dtype(self._raw, index)
        element = _from_numpy(dtype, expected)
        if element is None:
            raise ModelError("%s: numpy dtype %s has no moe-mlir element type%s" % (
                self._describe(index), dtype,
                "" if index is None else " (expected %s)" % _str(_lib.moe_dtype_name(expected))))
        return element

    def _wrap_host(self, index, arg, keep_alive):
        """A host tensor over `arg` as a numpy array (zero-copy when the array
        is dense, aligned and native-endian; else a contiguous copy)."""
        array = np.asarray(arg)
        element = self._element_type(index, array.dtype)
        if (not array.flags.c_contiguous or not array.flags.aligned
                or not array.dtype.isnative):
            array = np.ascontiguousarray(array, array.dtype.newbyteorder("="))
        keep_alive.append(array)
        shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
        raw = ctypes.c_void_p()
        # The compiled code never writes its inputs, so read-only arrays are
        # fine.
        _check(_lib.moe_tensor_wrap(array.ctypes.data or None, element, array.ndim, shape,
                                    0, ctypes.byref(raw)))
        return _owned_tensor(raw.value)

    def _wrap_device(self, index, arg):
        """A device tensor over the memory an object's
        `__cuda_array_interface__` (versions 0 to 3) describes: row-major, no
        mask."""
        interface = arg.__cuda_array_interface__
        what = self._describe(index)
        if not isinstance(interface, dict):
            raise ValueError("%s: __cuda_array_interface__ is not a dict" % what)
        for key in ("shape", "typestr", "data"):
            if key not in interface:
                raise ValueError("%s: __cuda_array_interface__ has no '%s'" % (what, key))
        if interface.get("mask") is not None:
            raise ValueError("%s: masked device arrays are not supported" % what)
        shape = [int(extent) for extent in interface["shape"]]
        dtype = np.dtype(interface["typestr"])
        element = self._element_type(index, dtype)
        strides = interface.get("strides")
        if strides is not None and 0 not in shape:
            dense = _row_major(shape, dtype.itemsize)
            for i, extent in enumerate(shape):
                if extent > 1 and (i >= len(strides) or strides[i] != dense[i]):
                    raise ValueError("%s: the device array is not row-major contiguous "
                                     "(make a contiguous copy first)" % what)
        data = interface["data"]
        if not isinstance(data, tuple) or len(data) != 2:
            raise ValueError("%s: __cuda_array_interface__'s 'data' is not "
                             "(pointer, read_only)" % what)
        dims = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        raw = ctypes.c_void_p()
        _check(_lib.moe_tensor_wrap_device(int(data[0]) or None, element, len(shape), dims,
                                           None, None, ctypes.byref(raw)))
        return _owned_tensor(raw.value)

    def _tensor_of(self, index, arg, keep_alive):
        if isinstance(arg, DeviceArray):
            keep_alive.append(arg)
            return arg._tensor
        if hasattr(arg, "__cuda_array_interface__"):
            return self._wrap_device(index, arg)
        return self._wrap_host(index, arg, keep_alive)

    def run(self, *args, device=False):
        """Runs the model on `args` (numpy arrays and array-likes,
        DeviceArrays, objects with `__cuda_array_interface__`); returns numpy
        arrays, or DeviceArrays with `device`."""
        if device:
            self._require_device("run(..., device=True)")
        num_inputs = _lib.moe_model_num_inputs(self._raw)
        num_outputs = _lib.moe_model_num_outputs(self._raw)
        outputs = (ctypes.c_void_p * max(num_outputs, 1))()
        if len(args) != num_inputs:
            # The runtime checks the count before it looks at any input.
            none = (ctypes.c_void_p * max(len(args), 1))()
            _check(_lib.moe_model_invoke(self._raw, none, len(args), outputs, num_outputs))
            raise ModelError("the model expects %d inputs, got %d" % (num_inputs, len(args)))
        keep_alive = []
        tensors = [self._tensor_of(i, arg, keep_alive) for i, arg in enumerate(args)]
        inputs = (ctypes.c_void_p * max(num_inputs, 1))(*[t.raw for t in tensors])
        invoke = _lib.moe_model_invoke_device if device else _lib.moe_model_invoke
        _check(invoke(self._raw, inputs, num_inputs, outputs, num_outputs))
        owned = [_owned_tensor(outputs[i]) for i in range(num_outputs)]
        if device:
            return [DeviceArray(tensor, self._handle) for tensor in owned]
        results = []
        for tensor in owned:
            dtype = _to_numpy(_lib.moe_tensor_dtype(tensor.raw))
            shape = _tensor_shape(tensor.raw)
            if _lib.moe_tensor_byte_size(tensor.raw) == 0:
                results.append(np.empty(shape, dtype))
                continue
            # The array takes over the tensor's buffer: freed with the array.
            results.append(np.asarray(_HostResult(tensor, dtype, shape)))
        return results

    def to_device(self, array):
        """Copies `array` (array-like, DeviceArray or
        `__cuda_array_interface__`) into new device memory of the model's
        device."""
        self._require_device("to_device")
        keep_alive = []
        if isinstance(array, DeviceArray):
            source = array._tensor
        elif hasattr(array, "__cuda_array_interface__"):
            source = self._wrap_device(None, array)
        else:
            source = self._wrap_host(None, array, keep_alive)
        copy = ctypes.c_void_p()
        _check(_lib.moe_model_tensor_to_device(self._raw, source.raw, ctypes.byref(copy)))
        return DeviceArray(_owned_tensor(copy.value), self._handle)

    def stats(self):
        """The expert cache's counters (docs/ExpertCache.md); empty without a
        cache."""
        if not _lib.moe_model_has_cache(self._raw):
            return {}
        s = _CacheStats()
        _lib.moe_model_cache_stats(self._raw, ctypes.byref(s))
        return dict(acquires=s.acquires, hits=s.hits, misses=s.misses,
                    stall_ms=s.stall_ns / 1e6, demand_loads=s.demand_loads,
                    prefetch_loads=s.prefetch_loads, prefetch_used=s.prefetch_used,
                    predictions=s.predictions, bytes_read=s.bytes_read,
                    read_ms=s.read_ns / 1e6, evictions=s.evictions,
                    slot_bytes=s.slot_bytes, pinned=s.pinned, direct_io=s.direct_io != 0)

    def reset_stats(self):
        _lib.moe_model_reset_cache_stats(self._raw)

    def configure_cache(self, budget_bytes, budget_percent, mode):
        if mode not in _MODES:
            raise ValueError("unknown expert cache mode '%s'; expected ondemand, lru or "
                             "prefetch" % mode)
        _check(_lib.moe_model_configure_cache(self._raw, int(budget_bytes),
                                              float(budget_percent), _MODES[mode]))

    def write_profile(self, path):
        _check(_lib.moe_model_write_profile(self._raw, os.fsencode(path)))

    def device_ms(self):
        return _lib.moe_model_last_device_ms(self._raw)
