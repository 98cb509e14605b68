/*===- moe/runtime/runner.h - The moe-run command line ----------*- C -*-===*\
|*                                                                          *|
|* The command-line driver shared by moe-run and standalone executables     *|
|* built with `moe-compile --emit=exe`. See docs/Runtime.md for the flags.  *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_RUNNER_H
#define MOE_RUNTIME_RUNNER_H

#include "moe/runtime/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_runner_config {
  /// Prefix of diagnostics ("NAME: error: ..."); NULL means basename(argv[0]).
  const char *program_name;
  /// Zero: the first positional argument is the model library path (moe-run).
  /// Non-zero: the model is linked into this executable and no positional
  /// argument is accepted.
  int model_from_self;
  /// With model_from_self: the ABI entry points. If NULL they are looked up
  /// with dlopen(NULL), which needs the executable linked with -rdynamic.
  moe_model_signature_fn_t signature_fn;
  moe_model_run_fn_t run_fn;
  /// With model_from_self: the weights file used without --weights. NULL means
  /// the executable's path (/proc/self/exe) followed by ".weights".
  const char *default_weights_path;
} moe_runner_config_t;

/// Parses the command line, loads the model, runs it and writes the outputs.
/// Returns the process exit code: 0 on success, 1 on any error after printing
/// exactly one "NAME: error: ..." line to stderr.
int moe_run_main(int argc, char **argv, const moe_runner_config_t *config);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOE_RUNTIME_RUNNER_H */
