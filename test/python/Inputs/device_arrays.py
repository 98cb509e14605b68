"""Device-resident tensors in the moe_mlir module (CompiledModel.run(...,
device=True), to_device, DeviceArray, __cuda_array_interface__ inputs), on the
pretend device of test/runtime/Inputs/fake_device_model.c: y = 2 * x, x f32
?x4, whose "device" memory is host memory, so that the test can read a device
buffer through its pointer. Prints what device-arrays.test checks.

    device_arrays.py FAKE_DEVICE_MODEL.so CPU_MODEL.so
"""

import ctypes
import gc
import os
import sys

import numpy as np

import moe_mlir

fake_path, cpu_path = sys.argv[1], sys.argv[2]
rng = np.random.default_rng()


def expect(error, match, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except error as e:
        assert match in str(e), "%r does not say %r" % (str(e), match)
        print("%s: %s" % (error.__name__, e))
        return
    raise AssertionError("no %s (%s)" % (error.__name__, match))


class Foreign:
    """Another library's GPU array: only its __cuda_array_interface__."""

    def __init__(self, a, **changes):
        self.a = a
        interface = dict(shape=a.shape, typestr=a.dtype.str, data=(a.ctypes.data, False),
                         version=3, strides=None, stream=1)
        interface.update(changes)
        self.__cuda_array_interface__ = interface


def fake_device_view(d):
    """The pretend device's buffer of d, read through d.pointer."""
    n = int(np.prod(d.shape))
    buffer = (ctypes.c_float * n).from_address(d.pointer)
    return np.ctypeslib.as_array(buffer).reshape(d.shape)


model = moe_mlir.load(fake_path)
print("has_device:", model.has_device)
x = rng.standard_normal((5, 4)).astype(np.float32)

# Results left in device memory.
(d,) = model.run(x, device=True)
print("result:", type(d).__name__, d.shape, d.dtype)
interface = d.__cuda_array_interface__
assert interface == dict(shape=(5, 4), typestr="<f4", data=(d.pointer, False), strides=None,
                         stream=None, version=3), interface
assert d.pointer != 0 and d.pointer != x.ctypes.data
assert (fake_device_view(d) == 2 * x).all()
assert (d.numpy() == 2 * x).all() and d.numpy().dtype == np.float32

# A DeviceArray as an input, in place.
(y,) = model.run(d)
assert isinstance(y, np.ndarray) and (y == 4 * x).all()
(d2,) = model.run(d, device=True)
assert (d2.numpy() == 4 * x).all()

# Copies to the device, from host memory and from device memory.
t = model.to_device(x)
assert t.pointer != x.ctypes.data and (t.numpy() == x).all()
t2 = model.to_device(d)
assert t2.pointer != d.pointer and (t2.numpy() == 2 * x).all()
empty = model.to_device(np.zeros((0, 4), np.float32))
assert empty.shape == (0, 4) and empty.numpy().shape == (0, 4)

# Another library's array through __cuda_array_interface__ (version 3, and
# version 2 without a stream), with and without row-major strides.
(y,) = model.run(Foreign(x))
assert (y == 2 * x).all()
(y,) = model.run(Foreign(x, strides=(16, 4)))
assert (y == 2 * x).all()
interface2 = dict(Foreign(x).__cuda_array_interface__, version=2)
del interface2["stream"]
f2 = Foreign(x)
f2.__cuda_array_interface__ = interface2
(y,) = model.run(f2, device=True)
assert (y.numpy() == 2 * x).all()
print("inputs: numpy, DeviceArray, __cuda_array_interface__ ok")

# What a device input may not be.
wide = rng.standard_normal((5, 8)).astype(np.float32)
expect(ValueError, "not row-major contiguous", model.run, Foreign(wide[:, ::2], strides=(32, 8)))
expect(ValueError, "masked device arrays", model.run, Foreign(x, mask=object()))
expect(ValueError, "has no 'data'", model.run,
       type("NoData", (), {"__cuda_array_interface__": dict(shape=(5, 4), typestr="<f4")})())
expect(moe_mlir.ModelError, "has no moe-mlir element type", model.run,
       Foreign(x.astype(np.complex64)))
expect(moe_mlir.ModelError, "input 0", model.run, Foreign(x.astype(np.float64)))

# Failures of the device itself.
for what, message in (("run", "the kernel failed"), ("alloc", "cannot allocate"),
                      ("copy", "cannot copy")):
    os.environ["FAKE_DEVICE_FAIL"] = what
    if what == "run":
        expect(moe_mlir.ModelError, message, model.run, x, device=True)
    else:
        expect(moe_mlir.ModelError, message, model.to_device, x)
del os.environ["FAKE_DEVICE_FAIL"]

# A CPU model has no device.
cpu = moe_mlir.load(cpu_path)
print("cpu has_device:", cpu.has_device)
expect(moe_mlir.ModelError, "needs a model compiled with", cpu.run, x, device=True)
expect(moe_mlir.ModelError, "is in device memory", cpu.run, d)
expect(moe_mlir.ModelError, "needs a model compiled with", cpu.to_device, x)

# A DeviceArray keeps its model loaded: the library is unloaded (and reports
# its live allocations) only when the last of them goes.
del model, y, t, t2, empty, d2
gc.collect()
print("model dropped, device array alive:", (d.numpy() == 2 * x).all())
sys.stdout.flush()
del d
gc.collect()
sys.stderr.flush()
print("end")
