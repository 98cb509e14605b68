/*===- self_main.c - A standalone executable around a linked model --------===*\
|*                                                                          *|
|* What `moe-compile --emit=exe` produces: the model object linked with the *|
|* runtime and a main calling moe_run_main. With -DUSE_SYMBOLS the entry    *|
|* points are passed directly; otherwise they are found with dlopen(NULL),  *|
|* which needs -rdynamic.                                                   *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#include "moe/runtime/runner.h"

const char *moe_model_signature(void);
void moe_model_run(void **args);

int main(int argc, char **argv) {
  moe_runner_config_t config = {0};
  config.model_from_self = 1;
#ifdef USE_SYMBOLS
  config.signature_fn = moe_model_signature;
  config.run_fn = moe_model_run;
#endif
  return moe_run_main(argc, argv, &config);
}
