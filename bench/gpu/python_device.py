"""The moe_mlir Python device API on a real GPU (docs/Python.md, "Tensors in
GPU memory"), for bench/gpu/run.sh: loads a staged target="cuda" case with
moe_mlir.load (the runtime extension only: no MLIR on the GPU machine) and
checks, against the same model's host-memory results:

- run(..., device=True) returns DeviceArrays whose numpy() equals run();
- inputs from to_device and from the DeviceArrays of a previous run;
- with torch (CUDA): torch.as_tensor of a DeviceArray (no copy, through
  __cuda_array_interface__) and CUDA torch tensors as inputs.

    python_device.py CASE_DIR     (the case's model-sm_90.so, model.weights
                                   and in*.npy)

Prints a PYTHON-PASS or PYTHON-FAIL line per check; exits 1 on a failure.
"""
import glob
import os
import re
import sys

import numpy as np

import moe_mlir

case = sys.argv[1]
what = open(os.path.join(case, "what")).read().strip()
weights = os.path.join(case, "model.weights")
model = moe_mlir.load(os.path.join(case, "model-sm_90.so"),
                      weights if os.path.exists(weights) else None)
paths = sorted(glob.glob(os.path.join(case, "in*.npy")),
               key=lambda p: int(re.search(r"in(\d+)\.npy$", p).group(1)))
inputs = [np.load(p) for p in paths]
failures = 0


def report(name, ok, detail=""):
    global failures
    failures += not ok
    print("%s %s: %s%s" % ("PYTHON-PASS" if ok else "PYTHON-FAIL", what, name,
                                  (": " + detail) if detail else ""))


def same(results, reference):
    return len(results) == len(reference) and all(
        np.array_equal(np.asarray(r), h) for r, h in zip(results, reference))


host = model.run(*inputs)
report("has_device", model.has_device)
device = model.run(*inputs, device=True)
report("run(device=True) gives DeviceArrays",
       all(isinstance(a, moe_mlir.DeviceArray) for a in device))
report("DeviceArray.numpy() equals run()", same([a.numpy() for a in device], host))
moved = [model.to_device(a) for a in inputs]
report("to_device inputs", same(model.run(*moved), host))
again = model.run(*moved, device=True)
report("DeviceArray inputs, device results",
       same([a.numpy() for a in again], host))
try:
    import torch
    has_torch = torch.cuda.is_available()
except ImportError:
    has_torch = False
if has_torch:
    t = torch.as_tensor(device[0], device="cuda")
    report("torch.as_tensor(DeviceArray)",
           t.data_ptr() == device[0].pointer and
           np.array_equal(t.cpu().numpy(), host[0]))
    tin = [torch.as_tensor(a, device="cuda") for a in inputs]
    report("CUDA torch tensors as inputs", same(model.run(*tin), host))
else:
    print("PYTHON-SKIP %s: torch with CUDA is not available" % what)
sys.exit(1 if failures else 0)
