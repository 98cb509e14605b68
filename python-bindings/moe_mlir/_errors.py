"""The exceptions of moe_mlir (raised by the native module too)."""


class CompileError(Exception):
    """The compiler rejected the model.

    ``str(error)`` is the text of the error diagnostics as ``moe-compile``
    prints them (``file:line:col: error: ...`` with the source line and a
    caret where the error has a location); ``diagnostics`` lists every
    diagnostic of the compilation (errors first, then notes, warnings and
    remarks), one string each.
    """

    def __init__(self, message, diagnostics=()):
        super().__init__(message)
        self.diagnostics = list(diagnostics) or [message]


class ModelError(RuntimeError):
    """The runtime could not load or run a compiled model.

    The message is the runtime's own, e.g. ``input 0 ('x'): expected f32
    tensor of shape ?x64, got f64 3x64``.
    """


class CompileWarning(UserWarning):
    """A warning or remark of the compiler (e.g. ``remarks=True`` on ONNX)."""
