# -*- Python -*-
# lit configuration for the moe-mlir regression tests.

import os
import shutil

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test", ".py"]
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "Inputs", "lib"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%moe_src_root", config.moe_src_root))
config.substitutions.append(("%moe_obj_root", config.moe_obj_root))
# Debian's numpy/onnx/torch live with the system interpreter, not the first
# python3 on PATH.
config.substitutions.append(("%python", "/usr/bin/python3"))
# ONNX Runtime (npm onnxruntime-node), installed into bench/node_modules by
# scripts/setup.sh: the peer the ONNX tests compare with.
config.environment["NODE_PATH"] = os.path.join(config.moe_src_root, "bench",
                                               "node_modules")
config.substitutions.append(
    ("%ort_run", "node " + os.path.join(config.moe_src_root, "test", "lib",
                                        "ort_run.js")))

# A test that hangs fails after this many seconds instead of holding the
# whole run (CI has 90 minutes for set-up, two builds and two runs of this
# suite). The slowest test takes under 3 minutes in the ASan build;
# MOE_LIT_TIMEOUT=0 turns the limit off. Needs psutil (scripts/setup.sh installs it).
lit_config.maxIndividualTestTime = int(os.environ.get("MOE_LIT_TIMEOUT", "900"))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP"])
# glibc fills fresh and freed heap memory with this byte (mallopt M_PERTURB),
# so compiled code that reads memory it never wrote gets garbage, not the
# zeros of fresh pages, and the numeric tests catch it.
config.environment["MALLOC_PERTURB_"] = "165"
llvm_config.use_default_substitutions()

if config.moe_sanitizers:
    config.available_features.add("sanitizers")
    config.environment["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    config.environment["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"

if shutil.which("ptxas") or os.path.exists("/usr/local/cuda/bin/ptxas"):
    config.available_features.add("ptxas")

llvm_config.with_environment("PATH", config.moe_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

tool_dirs = [config.moe_tools_dir, config.llvm_tools_dir]
tools = [
    "moe-opt",
    "moe-run",
    ToolSubst("moe-translate", unresolved="ignore"),
    ToolSubst("moe-compile", unresolved="ignore"),
    ToolSubst("moe-onnx-fuzz", unresolved="ignore"),
]
llvm_config.add_tool_substitutions(tools, tool_dirs)

# Runtime tests build hand-written model libraries and standalone executables.
# In a sanitizer build the runtime library is instrumented: whatever links it
# must be too.
sanitizer_flags = " -fsanitize=address,undefined" if config.moe_sanitizers else ""
config.substitutions.append(("%cc", "/usr/bin/clang-22" + sanitizer_flags))
config.substitutions.append(("%cxx", "/usr/bin/clang++-22" + sanitizer_flags))
config.substitutions.append(
    ("%moe_runtime_include", os.path.join(config.moe_src_root, "runtime", "include"))
)
config.substitutions.append(
    ("%moe_runtime_lib", os.path.join(config.moe_obj_root, "lib", "libMoERuntime.a"))
)
config.substitutions.append(
    ("%moe_model_support_lib",
     os.path.join(config.moe_obj_root, "lib", "libMoEModelSupport.a"))
)
