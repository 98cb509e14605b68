"""Tests of the moe_mlir Python module (run by test/python/pytest.test).

    PYTHONPATH=build/python_packages /usr/bin/python3 -m pytest -q python-bindings/tests

Numeric tests compile a moe.layer model with fresh random weights, run it on
fresh random inputs and compare with the float64 reference of
test/lib/moe_reference.py. MOE_TOOLS_DIR names the directory of moe-compile
(default: the build tree holding this moe_mlir).
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import moe_mlir

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "test", "lib"))
import moe_reference  # noqa: E402

TOL = 1e-5
H, F, E = 32, 48, 8
ROUTING = dict(k=2, renormalize=True)
EXPERT = dict(kind="gated", activation="silu")


def tools_dir():
    default = os.path.join(os.path.dirname(moe_mlir.__file__), "..", "..", "bin")
    return os.environ.get("MOE_TOOLS_DIR", default)


def dense(a):
    return 'dense<"0x%s">' % np.ascontiguousarray(a, "<f4").tobytes().hex().upper()


def tensor_type(shape):
    return "tensor<%sxf32>" % "x".join("?" if d is None else str(d) for d in shape)


class Layer:
    """A Mixtral-style moe.layer with random weights as dense constants."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.router = (r.standard_normal((H, E)) / np.sqrt(H)).astype(np.float32)
        self.gate = (r.standard_normal((E, H, F)) / np.sqrt(H)).astype(np.float32)
        self.up = (r.standard_normal((E, H, F)) / np.sqrt(H)).astype(np.float32)
        self.down = (r.standard_normal((E, F, H)) / np.sqrt(F)).astype(np.float32)
        act = tensor_type([None, H])
        w = [("router", self.router), ("gate", self.gate), ("up", self.up),
             ("down", self.down)]
        lines = ['func.func @main(%%x: %s {moe.name = "x"}) -> (%s {moe.name = "y"}) {'
                 % (act, act)]
        lines += ["  %%%s = arith.constant %s : %s" % (n, dense(a), tensor_type(a.shape))
                  for n, a in w]
        lines.append("  %%y = moe.layer %%x, %%router gate(%%gate : %s) up(%%up : %s) "
                     "down(%%down : %s)" % (tensor_type(self.gate.shape),
                                            tensor_type(self.up.shape),
                                            tensor_type(self.down.shape)))
        lines.append("      {expert = #moe.expert<gated, silu>, "
                     "routing = #moe.routing<k = 2, renormalize = true>}")
        lines.append("      : (%s, %s) -> %s" % (act, tensor_type([H, E]), act))
        lines.append("  return %%y : %s" % act)
        lines.append("}")
        self.text = "\n".join(lines) + "\n"

    def input(self, tokens):
        return self.rng.standard_normal((tokens, H)).astype(np.float32)

    def reference(self, x):
        return moe_reference.layer(x, self.router, ROUTING, EXPERT, self.gate, self.up,
                                   self.down)


def rel_l2(y, ref):
    return np.linalg.norm(y.astype(np.float64) - ref) / np.linalg.norm(ref)


def check_model(model, layer, tokens):
    x = layer.input(tokens)
    x_before = x.copy()
    (y,) = model.run(x)
    assert y.dtype == np.float32 and y.shape == (tokens, H)
    assert rel_l2(y, layer.reference(x)) <= TOL
    assert np.array_equal(x, x_before)  # inputs are never written
    return y


@pytest.fixture(scope="module")
def layer():
    return Layer(int.from_bytes(os.urandom(4), "little"))


@pytest.fixture(scope="module")
def layer_path(layer, tmp_path_factory):
    path = tmp_path_factory.mktemp("layer") / "layer.mlir"
    path.write_text(layer.text)
    return path


@pytest.fixture(scope="module")
def model(layer_path):
    return moe_mlir.compile(str(layer_path))


# --- Compile and run --------------------------------------------------------


@pytest.mark.parametrize("tokens", [1, 17, 5])
def test_compile_path_runs_dynamic_tokens(model, layer, tokens):
    check_model(model, layer, tokens)


def test_compile_bytes(layer):
    model = moe_mlir.compile(layer.text.encode())
    for tokens in (1, 17):
        check_model(model, layer, tokens)


def test_compile_pathlike_with_output(layer_path, layer, tmp_path):
    out = tmp_path / "m.so"
    model = moe_mlir.compile(layer_path, output=out)
    assert model.path == str(out)
    assert out.exists() and (tmp_path / "m.weights").exists() and (tmp_path / "m.h").exists()
    assert model.weights_path == str(tmp_path / "m.weights")
    check_model(model, layer, 3)


def test_temporary_directory_lives_with_the_model(layer):
    model = moe_mlir.compile(layer.text.encode())
    directory = os.path.dirname(model.path)
    assert os.path.exists(model.path)
    check_model(model, layer, 2)
    del model
    assert not os.path.exists(directory)


def test_signature_and_specs(model):
    assert model.signature.startswith("moe-model 1\ninput x f32 ?x%d\n" % H)
    assert "output y f32 2" in model.signature
    (x,) = model.inputs
    assert (x.name, x.element_type, x.dtype, x.shape) == ("x", "f32", np.float32, (None, H))
    (y,) = model.outputs
    assert (y.name, y.element_type, y.dtype, y.shape) == ("y", "f32", np.float32, (None, None))
    assert model.stats() == {}  # no expert cache
    assert model.device_ms() is None  # a CPU model
    assert "x: f32[?x%d]" % H in repr(model)


def test_results_own_their_memory(model, layer):
    y1 = check_model(model, layer, 4)
    y2 = check_model(model, layer, 4)
    assert not np.shares_memory(y1, y2)
    y1[...] = 0  # writable
    del model  # the arrays outlive the call and do not depend on the model
    assert np.all(y1 == 0) and np.all(np.isfinite(y2))


def test_non_contiguous_and_read_only_inputs(model, layer):
    x = layer.input(6)
    ref = layer.reference(x)
    strided = np.zeros((6, 2 * H), np.float32)
    strided[:, ::2] = x
    (y,) = model.run(strided[:, ::2])
    assert rel_l2(y, ref) <= TOL
    fortran = np.asfortranarray(x)
    (y,) = model(fortran)
    assert rel_l2(y, ref) <= TOL
    frozen = x.copy()
    frozen.flags.writeable = False
    (y,) = model.run(frozen)
    assert rel_l2(y, ref) <= TOL
    swapped = x.astype(">f4")
    (y,) = model.run(swapped)
    assert rel_l2(y, ref) <= TOL


def test_load_library_from_moe_compile(layer, layer_path, tmp_path):
    lib = tmp_path / "tool.so"
    subprocess.run([os.path.join(tools_dir(), "moe-compile"), str(layer_path), "-o",
                    str(lib)], check=True)
    model = moe_mlir.load(str(lib))
    assert model.weights_path == str(tmp_path / "tool.weights")
    for tokens in (1, 17):
        check_model(model, layer, tokens)


# --- IR at each stage --------------------------------------------------------


def test_emit_text(layer, layer_path, tmp_path):
    parsed = moe_mlir.compile(str(layer_path), emit="input")
    assert "moe.layer" in parsed and "func.func @main" in parsed
    lowered = moe_mlir.compile(layer.text.encode(), emit="mlir")
    assert "llvm.func @moe_model_run" in lowered
    assert "moe.layer" not in lowered
    llvm_ir = moe_mlir.compile(str(layer_path), emit="llvm")
    assert "define void @moe_model_run" in llvm_ir
    assert "moe_model_signature" in llvm_ir
    out = tmp_path / "m.ll"
    assert moe_mlir.compile(str(layer_path), emit="llvm", output=out) == llvm_ir
    assert out.read_text() == llvm_ir


def test_emit_obj(layer_path, tmp_path):
    out = tmp_path / "m.o"
    assert moe_mlir.compile(str(layer_path), emit="obj", output=out) == str(out)
    assert out.read_bytes()[:4] == b"\x7fELF"
    assert (tmp_path / "m.weights").exists()


MULTI = """\
func.func @main(%a: tensor<?x3xf32>, %b: tensor<2xi32>, %c: tensor<4xi1>)
    -> (tensor<?x3xf32>, tensor<2xi32>, tensor<4xi1>) {
  %s = arith.addf %a, %a : tensor<?x3xf32>
  %t = arith.muli %b, %b : tensor<2xi32>
  %u = arith.xori %c, %c : tensor<4xi1>
  return %s, %t, %u : tensor<?x3xf32>, tensor<2xi32>, tensor<4xi1>
}
"""


@pytest.fixture(scope="module")
def multi():
    return moe_mlir.compile(MULTI.encode())


def test_several_inputs_outputs_and_dtypes(multi):
    specs = [(t.name, t.element_type, t.dtype, t.shape) for t in multi.inputs]
    assert specs == [("arg0", "f32", np.float32, (None, 3)), ("arg1", "i32", np.int32, (2,)),
                     ("arg2", "i1", np.bool_, (4,))]
    assert [t.name for t in multi.outputs] == ["out0", "out1", "out2"]
    a = np.random.default_rng().standard_normal((5, 3)).astype(np.float32)
    b = np.array([3, -7], np.int32)
    c = np.array([True, False, True, True])
    s, t, u = multi.run(a, b, c)
    assert s.dtype == np.float32 and np.array_equal(s, a + a)
    assert t.dtype == np.int32 and np.array_equal(t, b * b)
    assert u.dtype == np.bool_ and not u.any()
    (s, _, _) = multi.run(np.zeros((0, 3), np.float32), b, c)
    assert s.shape == (0, 3)


def test_bf16_layer():
    """A bf16 moe.layer: inputs and results are uint16 arrays of bf16 bits;
    the CPU computes in f32 and rounds the result once, so it is the float64
    result of the stored values rounded to bf16 (a few last bits aside)."""
    from moe_case import from_bf16_bits, to_bf16_bits
    rng = np.random.default_rng()

    def bf16(*shape, scale=1.0):
        bits = to_bf16_bits(rng.standard_normal(shape) * scale)
        return bits, from_bf16_bits(bits)

    def const(bits):
        return 'dense<"0x%s">' % np.ascontiguousarray(bits).tobytes().hex().upper()

    def ty(shape):
        return "tensor<%sxbf16>" % "x".join("?" if d is None else str(d) for d in shape)

    w = {"router": bf16(H, E, scale=H ** -0.5), "gate": bf16(E, H, F, scale=H ** -0.5),
         "up": bf16(E, H, F, scale=H ** -0.5), "down": bf16(E, F, H, scale=F ** -0.5)}
    text = ["func.func @main(%%x: %s) -> %s {" % (ty([None, H]), ty([None, H]))]
    text += ["  %%%s = arith.constant %s : %s" % (n, const(b), ty(b.shape))
             for n, (b, _) in w.items()]
    text += ["  %%y = moe.layer %%x, %%router gate(%%gate : %s) up(%%up : %s) "
             "down(%%down : %s) {expert = #moe.expert<gated, silu>, "
             "routing = #moe.routing<k = 2, renormalize = true>} : (%s, %s) -> %s"
             % (ty([E, H, F]), ty([E, H, F]), ty([E, F, H]), ty([None, H]), ty([H, E]),
                ty([None, H])),
             "  return %%y : %s" % ty([None, H]), "}"]
    model = moe_mlir.compile("\n".join(text).encode())
    assert [(t.element_type, t.dtype) for t in model.inputs] == [("bf16", np.uint16)]
    xbits, x = bf16(9, H)
    (y,) = model.run(xbits)
    assert y.dtype == np.uint16 and y.shape == (9, H)
    ref = moe_reference.layer(x, w["router"][1], ROUTING, EXPERT, w["gate"][1], w["up"][1],
                              w["down"][1])
    rounded = from_bf16_bits(to_bf16_bits(ref)).astype(np.float64)
    assert rel_l2(from_bf16_bits(y), rounded) <= 2.0 ** -8 / 4


def test_onnx_bytes():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["y"])], "square",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = proto.SerializeToString()
    assert "func.func" in moe_mlir.compile(data, emit="input")
    model = moe_mlir.compile(data)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = model.run(x)
    assert np.array_equal(y, x * x)
    assert onnx is not None


# --- Errors ------------------------------------------------------------------


def test_bad_ir_bytes():
    with pytest.raises(moe_mlir.CompileError) as info:
        moe_mlir.compile(b"func.func @main(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
                         b"  return %y : tensor<4xf32>\n}\n")
    message = str(info.value)
    assert message.startswith("<bytes>:2:10: error: use of undeclared SSA value name")
    assert "return %y" in message and "^" in message  # the source line and a caret
    assert info.value.diagnostics[0].startswith("<bytes>:2:10: error:")


def test_bad_ir_file(tmp_path):
    path = tmp_path / "bad.mlir"
    path.write_text("func.func @main() {\n  %0 = arith.constant 1 : i32\n  return %0 : i32\n}\n")
    with pytest.raises(moe_mlir.CompileError) as info:
        moe_mlir.compile(str(path))
    assert str(info.value).startswith("%s:3:3: error:" % path)


def test_cuda_target_without_a_driver(layer, tmp_path, monkeypatch):
    # The driver is looked up once per process, at the first CUDA library
    # loaded: point it at nothing, so this holds on machines with a GPU too.
    monkeypatch.setenv("MOE_CUDA_DRIVER", "/nonexistent/libcuda.so.1")
    ptx = moe_mlir.compile(layer.text.encode(), target="cuda", emit="ptx", gpu_arch="sm_90")
    assert ".target sm_90" in ptx and ".entry moe_gate(" in ptx
    cuda = moe_mlir.compile(layer.text.encode(), target="cuda", output=tmp_path / "m.so")
    assert cuda.signature.startswith("moe-model 1\ninput x f32 ?x%d\n" % H)
    with pytest.raises(moe_mlir.ModelError, match="no CUDA driver found"):
        cuda.run(layer.input(3))
    assert cuda.has_device
    with pytest.raises(moe_mlir.ModelError, match="no CUDA driver found"):
        cuda.run(layer.input(3), device=True)
    with pytest.raises(moe_mlir.ModelError, match="no CUDA driver found"):
        cuda.to_device(layer.input(3))
    assert cuda.device_ms() is None
    with pytest.raises(ValueError, match="gpu_arch needs target"):
        moe_mlir.compile(layer.text.encode(), gpu_arch="sm_90")
    with pytest.raises(moe_mlir.CompileError, match="unsupported --gpu-arch='sm_70'"):
        moe_mlir.compile(layer.text.encode(), target="cuda", gpu_arch="sm_70")


def test_compile_cpu_pipeline_options(layer):
    # Plain loops without OpenMP: a different lowering, the same numbers.
    plain = moe_mlir.compile(layer.text.encode(),
                             cpu_pipeline="vectorize=0 enable-openmp=0")
    for tokens in (1, 9):
        check_model(plain, layer, tokens)
    lowered = moe_mlir.compile(layer.text.encode(), emit="mlir")
    unvectorized = moe_mlir.compile(layer.text.encode(), emit="mlir",
                                    cpu_pipeline="vectorize=0 enable-openmp=0")
    assert "vector<16xf32>" in lowered and "omp.parallel" in lowered
    assert "vector<16xf32>" not in unvectorized
    assert "omp.parallel" not in unvectorized
    with pytest.raises(moe_mlir.CompileError, match="no such option foo"):
        moe_mlir.compile(layer.text.encode(), cpu_pipeline="foo=1")
    with pytest.raises(moe_mlir.CompileError, match="single-pass row count from 0 to 16"):
        moe_mlir.compile(layer.text.encode(), cpu_pipeline="single-pass-rows=17")
    with pytest.raises(moe_mlir.CompileError, match="needs --target=cpu"):
        moe_mlir.compile(layer.text.encode(), target="cuda",
                         cpu_pipeline="single-pass-rows=0")


def test_compile_rejects_model(layer):
    with pytest.raises(moe_mlir.CompileError, match="unknown target 'gpu'"):
        moe_mlir.compile(layer.text.encode(), target="gpu")
    with pytest.raises(moe_mlir.CompileError, match="nope"):
        moe_mlir.compile(layer.text.encode(), entry="nope")


def test_compile_missing_file(tmp_path):
    missing = str(tmp_path / "missing.mlir")
    with pytest.raises(moe_mlir.CompileError, match="cannot open '%s'" % missing):
        moe_mlir.compile(missing)
    with pytest.raises(moe_mlir.CompileError, match="cannot open"):
        moe_mlir.compile(missing, format="onnx")


def test_compile_bad_arguments(layer):
    with pytest.raises(ValueError, match="unknown emit"):
        moe_mlir.compile(layer.text.encode(), emit="asm")
    with pytest.raises(ValueError, match="needs an output"):
        moe_mlir.compile(layer.text.encode(), emit="exe")
    with pytest.raises(ValueError, match="unknown format"):
        moe_mlir.compile(layer.text.encode(), format="tflite")
    with pytest.raises(TypeError):
        moe_mlir.compile(layer.text.encode(), no_such_option=1)


def test_load_missing_file(tmp_path):
    with pytest.raises(moe_mlir.ModelError, match="missing.so"):
        moe_mlir.load(str(tmp_path / "missing.so"))
    assert issubclass(moe_mlir.ModelError, RuntimeError)


def test_load_missing_weights(layer_path, tmp_path):
    lib = tmp_path / "m.so"
    moe_mlir.compile(str(layer_path), output=lib)
    (tmp_path / "m.weights").unlink()
    with pytest.raises(moe_mlir.ModelError, match="m.weights"):
        moe_mlir.load(str(lib))


def test_wrong_dtype(model, multi):
    with pytest.raises(moe_mlir.ModelError,
                       match=r"input 0 \('x'\): expected f32 tensor of shape \?x%d, got f64 3x%d"
                       % (H, H)):
        model.run(np.zeros((3, H)))
    with pytest.raises(moe_mlir.ModelError, match="numpy dtype complex64 has no"):
        model.run(np.zeros((3, H), np.complex64))
    with pytest.raises(moe_mlir.ModelError, match=r"input 1 \('arg1'\): expected i32"):
        multi.run(np.zeros((1, 3), np.float32), np.zeros(2, np.int64), np.zeros(4, bool))
    with pytest.raises(moe_mlir.ModelError, match="numpy dtype object"):
        model.run(np.array([[None]]))


def test_wrong_shape(model, multi):
    with pytest.raises(moe_mlir.ModelError,
                       match=r"input 0 \('x'\): expected f32 tensor of shape \?x%d, got f32 3x%d"
                       % (H, H + 1)):
        model.run(np.zeros((3, H + 1), np.float32))
    with pytest.raises(moe_mlir.ModelError, match=r"input 0 \('x'\)"):
        model.run(np.zeros(H, np.float32))
    with pytest.raises(moe_mlir.ModelError, match=r"input 1 \('arg1'\)"):
        multi.run(np.zeros((1, 3), np.float32), np.zeros(3, np.int32), np.zeros(4, bool))


def test_wrong_number_of_inputs(model, multi):
    with pytest.raises(moe_mlir.ModelError, match="the model expects 1 input, got 0"):
        model.run()
    x = np.zeros((2, H), np.float32)
    with pytest.raises(moe_mlir.ModelError, match="the model expects 1 input, got 2"):
        model.run(x, x)
    with pytest.raises(moe_mlir.ModelError, match="the model expects 3 inputs, got 1"):
        multi.run(x)


def test_remarks_are_warnings(layer):
    # A moe.layer model has no ONNX MoE candidates: no remark, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moe_mlir.compile(layer.text.encode(), emit="input", remarks=True)


# --- Expert cache (docs/ExpertCache.md) ---------------------------------------


def test_expert_cache_results_and_counters(layer, model):
    cached = moe_mlir.compile(layer.text.encode(), expert_budget="50%")
    assert "cache 0 experts=%d slots=%d" % (E, E // 2) in cached.signature
    for mode in ("ondemand", "lru", "prefetch"):
        cached.configure_cache(mode=mode)
        for tokens in (1, 9):
            x = layer.input(tokens)
            (y,) = cached.run(x)
            (full,) = model.run(x)
            assert np.array_equal(y, full)
            assert rel_l2(y, layer.reference(x)) <= TOL
        stats = cached.stats()
        assert stats["acquires"] > 0 and stats["bytes_read"] > 0
        assert stats["hits"] + stats["misses"] == stats["acquires"]
        if mode == "ondemand":
            assert stats["hits"] == 0
    cached.reset_stats()
    assert cached.stats()["acquires"] == 0
    cached.configure_cache("25%")
    assert cached.stats()["slot_bytes"] == (E // 4) * 3 * H * F * 4


def test_routing_profile_and_pinned_placement(layer, tmp_path):
    profiled = moe_mlir.compile(layer.text.encode(), instrument_routing=True)
    x = layer.input(12)
    (y,) = profiled.run(x)
    profiled.write_profile(tmp_path / "p.json")
    import json
    profile = json.loads((tmp_path / "p.json").read_text())
    counts = profile["layers"][0]["counts"]
    assert len(counts) == E and sum(counts) == 12 * ROUTING["k"]
    planned = moe_mlir.compile(layer.text.encode(), expert_budget="50%",
                               placement_profile=tmp_path / "p.json")
    assert "pinned=" in planned.signature
    (y2,) = planned.run(x)
    assert np.array_equal(y, y2)


def test_placement_plan_over_devices(layer, tmp_path):
    profiled = moe_mlir.compile(layer.text.encode(), instrument_routing=True)
    profiled.run(layer.input(16))
    profiled.write_profile(tmp_path / "p.json")
    plan = moe_mlir.compile(layer.text.encode(), emit="plan", devices=2,
                            placement_profile=tmp_path / "p.json")
    assert plan["devices"] == 2 and len(plan["layers"]) == 1
    devices = plan["layers"][0]["devices"]
    # Equal shares of the experts, every routed token on some device.
    assert sorted(devices) == [0] * (E // 2) + [1] * (E // 2)
    assert sum(plan["layers"][0]["device_load"]) == 16 * ROUTING["k"]
    # One device: the plan of the library moe-compile would build.
    single = moe_mlir.compile(layer.text.encode(), emit="plan", expert_budget="50%")
    assert single["devices"] == 1
    assert single["layers"][0]["slots_per_device"] == E // 2
    with pytest.raises(moe_mlir.CompileError, match="can only be written as a plan"):
        moe_mlir.compile(layer.text.encode(), devices=2)


def test_expert_cache_errors(layer, model):
    with pytest.raises(ValueError, match="bad expert_budget"):
        moe_mlir.compile(layer.text.encode(), expert_budget="lots")
    with pytest.raises(moe_mlir.CompileError, match="below the minimum working set"):
        moe_mlir.compile(layer.text.encode(), expert_budget=100)
    with pytest.raises(moe_mlir.ModelError, match="has no expert cache"):
        model.configure_cache("50%")
    with pytest.raises(moe_mlir.ModelError, match="no routing was recorded"):
        model.write_profile("/nonexistent/p.json")
    cached = moe_mlir.compile(layer.text.encode(), expert_budget="50%")
    with pytest.raises(ValueError, match="unknown expert cache mode"):
        cached.configure_cache(mode="fast")
    with pytest.raises(moe_mlir.ModelError, match="cannot hold one expert"):
        cached.configure_cache(10)
