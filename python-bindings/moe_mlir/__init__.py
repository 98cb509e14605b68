"""moe_mlir: compile Mixture-of-Experts models with moe-mlir and run them.

    import moe_mlir, numpy as np
    model = moe_mlir.compile("layer.mlir")          # or the bytes of a model
    (y,) = model.run(np.zeros((4, 64), np.float32))
    print(moe_mlir.compile("layer.mlir", emit="llvm"))   # LLVM IR text

See docs/Python.md.
"""

import collections
import json
import os
import shutil
import tempfile
import warnings

from ._errors import CompileError, CompileWarning, ModelError
# The runtime half links no MLIR: loading and running compiled models works
# where only this package and the model are installed. The compiler half
# (libMLIR) is imported on the first compile().
from . import _moe_runtime as _runtime

__all__ = ["compile", "load", "CompiledModel", "DeviceArray", "TensorSpec",
           "CompileError", "CompileWarning", "ModelError"]

DeviceArray = _runtime.DeviceArray
DeviceArray.__doc__ = """A tensor in the GPU memory of a ``target="cuda"`` model: a result
of ``CompiledModel.run(..., device=True)`` or of ``CompiledModel.to_device``.

It owns its memory (freed with it) and keeps its model loaded. ``shape`` and
``dtype`` as numpy's, ``pointer`` the device address, ``numpy()`` a host copy,
and ``__cuda_array_interface__`` (version 3, row-major) so that other GPU
libraries can use it without a copy (``torch.as_tensor(a, device="cuda")``,
``cupy.asarray(a)``) while it lives. Pass it back to ``run`` as an input."""

TensorSpec = collections.namedtuple("TensorSpec", "name element_type dtype shape")
TensorSpec.__doc__ = """One input or output of a compiled model.

name: the signature's name (``moe.name`` or ``arg<i>``/``out<i>``);
element_type: the ABI spelling (``f32``, ``bf16``, ``i1``, ...);
dtype: the numpy dtype used for it (bf16 is raw bits in uint16, i1 is bool);
shape: a tuple of extents, None where dynamic (every extent of an output is
None: the signature records only its rank)."""

_EMITS = ("input", "mlir", "llvm", "obj", "lib", "exe", "ptx", "plan")
_SUFFIX = {"mlir": ".llvm.mlir", "llvm": ".ll", "obj": ".o", "lib": ".so", "exe": "",
           "ptx": ".ptx", "plan": ".plan.json"}


def _compiler():
    """The compiler half (moe_mlir._moe_mlir), imported on first use."""
    try:
        from . import _moe_mlir
    except ImportError as error:
        raise ImportError(
            "moe_mlir.compile needs the compiler extension moe_mlir._moe_mlir, "
            "which could not be loaded (%s); it needs LLVM/MLIR 22's libMLIR.so. "
            "moe_mlir.load and CompiledModel.run do not." % (error,)) from error
    return _moe_mlir


class CompiledModel:
    """A compiled model library, loaded and ready to run.

    Returned by ``compile(..., emit="lib")`` and ``load(path)``. When
    ``compile`` wrote to a temporary directory, the directory lives as long as
    this object.
    """

    def __init__(self, path, weights=None, _tmpdir=None):
        self._tmpdir = _tmpdir
        self._model = _runtime.Model(os.fspath(path),
                                    None if weights is None else os.fspath(weights))
        self.path = os.fspath(path)

    @property
    def signature(self):
        """The signature text of docs/CompiledModelABI.md."""
        return self._model.signature

    @property
    def weights_path(self):
        """The mapped weights file, or None when the model has no weights."""
        return self._model.weights_path

    @property
    def inputs(self):
        """A list of TensorSpec, one per input, in call order."""
        return [TensorSpec(*spec) for spec in self._model.inputs]

    @property
    def outputs(self):
        """A list of TensorSpec, one per result, in return order."""
        return [TensorSpec(*spec) for spec in self._model.outputs]

    def run(self, *inputs, device=False):
        """Runs the model once and returns a list of results, one per output:
        numpy arrays, or with ``device=True`` DeviceArrays left in the GPU
        memory of a ``target="cuda"`` model (ModelError for other models).

        Inputs are numpy arrays (or array-likes), DeviceArrays, or GPU arrays
        of other libraries through ``__cuda_array_interface__`` (row-major,
        e.g. a CUDA torch tensor or a CuPy array; the producer's work must be
        complete or queued on the legacy default stream). GPU inputs are used
        in place by a ``target="cuda"`` model; a CPU model refuses them.
        Inputs are not converted: each must have the element type of its
        input (see ``inputs``), else ModelError. C-contiguous, aligned,
        native-endian arrays are passed without a copy; others are first
        made contiguous. Results own their memory (the runtime's buffers).
        """
        return self._model.run(*inputs, device=device)

    def to_device(self, array):
        """Copies ``array`` (array-like, DeviceArray or
        ``__cuda_array_interface__`` object) into new GPU memory of a
        ``target="cuda"`` model; returns a DeviceArray."""
        return self._model.to_device(array)

    @property
    def has_device(self):
        """Whether the model was compiled for a GPU (``target="cuda"``): it
        can take and leave tensors in device memory. Says nothing about
        whether this machine has a driver and a GPU."""
        return self._model.has_device

    __call__ = run

    def stats(self):
        """The expert cache's counters (docs/ExpertCache.md) as a dict:
        acquires, hits, misses, stall_ms, demand_loads, prefetch_loads,
        prefetch_used, predictions, bytes_read, evictions, slot_bytes,
        pinned, direct_io. Empty for a model without an expert cache
        (compiled without ``expert_budget``)."""
        return self._model.stats()

    def reset_stats(self):
        """Zeroes the expert cache's counters."""
        self._model.reset_stats()

    def device_ms(self):
        """The GPU time in milliseconds of the last successful run of a
        model compiled with ``target="cuda"`` (its kernels, without copying
        the inputs and results), or None for a CPU model or before a run."""
        ms = self._model.device_ms()
        return None if ms < 0 else ms

    def configure_cache(self, budget=None, mode="prefetch"):
        """Rebuilds the expert cache of a model compiled with
        ``expert_budget``: ``budget`` in bytes (int), as a string ("512M",
        "25%"), or None for the compiled slot counts; ``mode`` is
        "ondemand", "lru" or "prefetch". Raises ModelError when the budget
        is too small or the model has no cache."""
        budget_bytes, budget_percent = -1, -1.0
        if isinstance(budget, str):
            # The syntax of moe-run's --expert-budget, parsed by the same code.
            parsed = _runtime.parse_expert_budget(budget.strip())
            if parsed is None:
                raise ValueError("bad expert cache budget %r" % (budget,))
            budget_bytes, budget_percent = parsed
        elif budget is not None:
            budget_bytes = int(budget)
            if budget_bytes < -1:
                raise ValueError("bad expert cache budget %r" % (budget,))
        self._model.configure_cache(budget_bytes, budget_percent, mode)

    def write_profile(self, path):
        """Writes the routing profile of a model compiled with
        ``instrument_routing=True`` (JSON, for ``placement_profile``)."""
        self._model.write_profile(os.fspath(path))

    def __repr__(self):
        def spec(t):
            dims = "x".join("?" if d is None else str(d) for d in t.shape)
            return "%s: %s%s" % (t.name, t.element_type, "[" + dims + "]" if t.shape else "")
        return "<moe_mlir.CompiledModel %s (%s) -> (%s)>" % (
            self.path, ", ".join(map(spec, self.inputs)), ", ".join(map(spec, self.outputs)))


def load(path, weights=None):
    """Loads a model library written by ``moe-compile`` or ``compile``.

    ``weights`` defaults to the library path with ``.so`` replaced by
    ``.weights``. Raises ModelError with the runtime's message on failure.
    """
    return CompiledModel(path, weights)


def compile(source, target="cpu", emit="lib", output=None, *, format=None,
            entry=None, cpu="native", weight_threshold=64, linker=None,
            runtime_lib=None, remarks=False, expert_budget=None,
            placement_profile=None, prefetch_depth=1, instrument_routing=False,
            gpu_arch=None, devices=1, cpu_pipeline=None):
    """Compiles a model with the moe-compile driver.

    source: a path (str or os.PathLike) to a ``.mlir`` or ``.onnx`` model,
        or the model itself as bytes (MLIR text or a serialized ONNX
        ModelProto).
    target: "cpu" or "cuda" (docs/CUDA.md: the library loads anywhere, and
        running it needs an NVIDIA driver and GPU, else ModelError).
    emit: what to produce:
        "lib" (default): a shared library, loaded; returns a CompiledModel.
        "input": the module as parsed (for ONNX: as imported and raised),
            before any lowering; returns its text.
        "mlir": the lowered LLVM-dialect module with the ABI glue; returns
            its text.
        "llvm": the LLVM IR, before LLVM's optimizations; returns its text.
        "obj", "exe": an object file or a standalone executable written to
            ``output`` (required); returns ``output``.
        "ptx" (target "cuda"): the kernels' PTX; returns its text.
        "plan": the expert placement plan (docs/ExpertCache.md); returns it
            as a dict (parsed JSON).
    output: the main output path (side files, ``.weights`` and ``.h``, go
        next to it). None writes into a temporary directory: for "lib" it
        lives as long as the returned CompiledModel, for text it is removed
        before returning.
    format: "mlir" or "onnx"; None guesses from the file extension, or for
        bytes from the first byte (an ONNX ModelProto starts with 0x08).
    entry, cpu, weight_threshold, linker, runtime_lib: moe-compile's
        --entry, --mcpu, --weight-threshold, --linker and --runtime-lib.
    remarks: ONNX input: report which MoE blocks were raised to moe.layer
        (as CompileWarning warnings).
    expert_budget: bytes (int) or a string ("512M", "25%") of memory for
        expert weights; the rest stay in the weights file behind an expert
        cache (docs/ExpertCache.md). None keeps every expert resident.
    placement_profile, prefetch_depth, instrument_routing: moe-compile's
        --placement-profile, --prefetch-depth and --instrument-routing.
    gpu_arch: moe-compile's --gpu-arch ("sm_80" or "sm_90"; target "cuda").
    devices: moe-compile's --devices: spread each layer's experts over this
        many devices (the budget per device); more than 1 only with
        emit="plan".
    cpu_pipeline: moe-compile's --cpu-pipeline: options of the CPU lowering
        as one string, e.g. "single-pass-rows=0" (faster compiles) or
        "prefetch-distance=64" (docs/Passes.md); target "cpu" only.

    Raises CompileError with the compiler's diagnostics.
    """
    if emit not in _EMITS:
        raise ValueError("unknown emit %r; expected one of %s" % (emit, ", ".join(_EMITS)))
    if format not in (None, "mlir", "onnx"):
        raise ValueError("unknown format %r; expected 'mlir' or 'onnx'" % (format,))
    if emit in ("obj", "exe") and output is None:
        raise ValueError("emit=%r needs an output path" % emit)

    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name, model_dir = bytes(source), "<bytes>", os.getcwd()
    else:
        path = os.fspath(source)
        guessed = "onnx" if path.endswith(".onnx") else "mlir"
        data, name, model_dir = None, path, os.path.dirname(os.path.abspath(path))
        if format is not None and format != guessed:
            # The driver picks the importer by extension: read it ourselves.
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise CompileError("error: cannot open '%s': %s" % (path, e.strerror)) from None
    if data is not None and format is None:
        format = "onnx" if data[:1] == b"\x08" else "mlir"

    tmpdir = None
    if output is None and emit != "input":
        tmpdir = tempfile.mkdtemp(prefix="moe_mlir-")
        output = os.path.join(tmpdir, "model" + _SUFFIX[emit])
    try:
        others, text = _compiler().compile(
            data if data is not None else name, data is not None, name, format or "",
            model_dir, emit, "" if output is None else os.fspath(output), target,
            entry or "", cpu, int(weight_threshold), linker or "", runtime_lib or "",
            bool(remarks), "" if expert_budget is None else str(expert_budget),
            "" if placement_profile is None else os.fspath(placement_profile),
            int(prefetch_depth), bool(instrument_routing), gpu_arch or "",
            int(devices), cpu_pipeline or "")
        for diagnostic in others:
            warnings.warn(diagnostic, CompileWarning, stacklevel=2)
        if emit == "input":
            return text
        if emit in ("mlir", "llvm", "ptx"):
            with open(output, encoding="utf-8") as f:
                return f.read()
        if emit == "plan":
            with open(output, encoding="utf-8") as f:
                return json.load(f)
        if emit == "lib":
            model = CompiledModel(output, _tmpdir=_TemporaryDirectory(tmpdir))
            tmpdir = None  # the model owns it now
            return model
        return os.fspath(output)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


class _TemporaryDirectory:
    """Removes a directory when the object that holds it goes away."""

    def __init__(self, path):
        self.name = path

    def __del__(self):
        shutil.rmtree(self.name, ignore_errors=True)

    def __repr__(self):
        return "<temporary directory %s>" % self.name
