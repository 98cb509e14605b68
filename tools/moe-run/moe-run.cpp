//===- moe-run.cpp - Run a compiled model on .npy files -------------------===//
//
// A thin main over moe_run_main; see docs/Runtime.md.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/runner.h"

int main(int argc, char **argv) {
  moe_runner_config_t config = {};
  config.program_name = "moe-run";
  return moe_run_main(argc, argv, &config);
}
