"""Loads and runs a compiled model with moe_mlir where the compiler half
cannot be imported (as on a machine without libMLIR.so): the import of
moe_mlir._moe_mlir is made to fail, as a missing libMLIR.so would.

    runtime_only.py MODEL.so
"""
import importlib.abc
import sys

import numpy as np


class NoCompiler(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "moe_mlir._moe_mlir":
            raise ImportError("libMLIR.so.22.1: cannot open shared object file")
        return None


sys.meta_path.insert(0, NoCompiler())
import moe_mlir  # noqa: E402

model = moe_mlir.load(sys.argv[1])
x = np.random.default_rng().standard_normal((5, 4)).astype(np.float32)
(y,) = model.run(x)
print("run:", "equal" if np.array_equal(x, y) else "DIFFERENT")
print("budget:", moe_mlir._runtime.parse_expert_budget("512M"),
      moe_mlir._runtime.parse_expert_budget("25%"),
      moe_mlir._runtime.parse_expert_budget("12Q"))
print("compiler imported:", "moe_mlir._moe_mlir" in sys.modules)
try:
    moe_mlir.compile(b"func.func @f() { return }")
except ImportError as error:
    print("ImportError:", error)
