/*===- device_api.c - The runtime's device-memory API ---------------------===*\
|*                                                                          *|
|*   device_api fake FAKE.so AFFINE.so                                      *|
|*     the API on fake_device_model.c and on a model without a device       *|
|*   device_api cuda MODEL.so X.npy [WEIGHTS]                               *|
|*     a --target=cuda model: without a driver, the errors; with a GPU,     *|
|*     every combination of host and device inputs and outputs against the  *|
|*     host path, bit for bit, and outputs freed after the model            *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

#include "moe/runtime/npy.h"
#include "moe/runtime/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int show(const char *what, moe_status_t *status) {
  printf("%s: %s\n", what, status ? moe_status_message(status) : "ok");
  int failed = status != NULL;
  moe_status_free(status);
  return failed;
}

static void deleter(void *data, void *context) {
  printf("deleter: data %s, context %d\n", data ? "set" : "null",
         *(int *)context);
}

static int fake(const char *fakePath, const char *affinePath) {
  /* Device tensors made by the caller. */
  static float buffer[8];
  int context = 42;
  int64_t shape[2] = {2, 4};
  moe_tensor_t *t = NULL;
  show("wrap_device", moe_tensor_wrap_device(buffer, MOE_DTYPE_F32, 2, shape,
                                             deleter, &context, &t));
  printf("is_device: %d, owns_data: %d\n", moe_tensor_is_device(t),
         moe_tensor_owns_data(t));
  show("npy_write", moe_npy_write("never-written.npy", t));
  moe_tensor_free(t);
  show("wrap_device borrowed",
       moe_tensor_wrap_device(buffer, MOE_DTYPE_F32, 2, shape, NULL, NULL, &t));
  printf("is_device: %d, owns_data: %d\n", moe_tensor_is_device(t),
         moe_tensor_owns_data(t));
  moe_tensor_t *host = NULL;
  show("wrap", moe_tensor_wrap(buffer, MOE_DTYPE_F32, 2, shape, 0, &host));
  printf("is_device: %d\n", moe_tensor_is_device(host));

  /* A model without a device. */
  moe_model_t *affine = NULL;
  if (show("load affine", moe_model_load(affinePath, NULL, &affine)))
    return 1;
  printf("has_device: %d\n", moe_model_has_device(affine));
  moe_tensor_t *out[1] = {NULL};
  const moe_tensor_t *in[1] = {t};
  show("affine invoke_device", moe_model_invoke_device(affine, in, 1, out, 1));
  show("affine device input", moe_model_invoke(affine, in, 1, out, 1));
  show("affine to_device", moe_model_tensor_to_device(affine, host, out));
  show("affine to_host", moe_model_tensor_to_host(affine, t, out));
  moe_model_free(affine);
  moe_tensor_free(t);

  /* The fake device. */
  moe_model_t *model = NULL;
  if (show("load fake", moe_model_load(fakePath, NULL, &model)))
    return 1;
  printf("has_device: %d\n", moe_model_has_device(model));
  for (int i = 0; i < 8; ++i)
    buffer[i] = (float)i;
  moe_tensor_t *x = NULL;
  show("to_device", moe_model_tensor_to_device(model, host, &x));
  printf("is_device: %d, data is a copy: %d\n", moe_tensor_is_device(x),
         moe_tensor_data(x) != (void *)buffer);
  in[0] = x;
  show("check_inputs", moe_model_check_inputs(model, in, 1));
  show("invoke_device", moe_model_invoke_device(model, in, 1, out, 1));
  moe_tensor_t *y = out[0];
  printf("y: is_device %d, owns %d, %lldx%lld\n", moe_tensor_is_device(y),
         moe_tensor_owns_data(y), (long long)moe_tensor_shape(y)[0],
         (long long)moe_tensor_shape(y)[1]);
  moe_tensor_t *back = NULL;
  show("to_host", moe_model_tensor_to_host(model, y, &back));
  const float *v = moe_tensor_data(back);
  printf("y = [%g %g ... %g], is_device %d\n", v[0], v[1], v[7],
         moe_tensor_is_device(back));
  moe_tensor_free(back);
  /* The host path on the same model still copies results to the host. */
  show("invoke", moe_model_invoke(model, in, 1, out, 1));
  printf("host y: is_device %d\n", moe_tensor_is_device(out[0]));
  moe_tensor_free(out[0]);
  /* Output slots and inputs are checked first. */
  show("bad count", moe_model_invoke_device(model, in, 0, out, 1));
  show("bad slots", moe_model_invoke_device(model, in, 1, out, 2));
  /* Failures leave no output and leak nothing. */
  setenv("FAKE_DEVICE_FAIL", "run", 1);
  out[0] = NULL;
  show("failed run", moe_model_invoke_device(model, in, 1, out, 1));
  printf("output set: %d\n", out[0] != NULL);
  setenv("FAKE_DEVICE_FAIL", "alloc", 1);
  show("failed alloc", moe_model_tensor_to_device(model, host, out));
  setenv("FAKE_DEVICE_FAIL", "copy", 1);
  show("failed copy to device", moe_model_tensor_to_device(model, host, out));
  show("failed copy to host", moe_model_tensor_to_host(model, y, out));
  unsetenv("FAKE_DEVICE_FAIL");
  /* Device tensors outlive the model: its library stays loaded until the
   * last one is freed. */
  moe_model_free(model);
  printf("model freed\n");
  moe_tensor_free(x);
  printf("x freed\n");
  moe_tensor_free(y);
  printf("y freed\n");
  moe_tensor_free(host);
  return 0;
}

static int same(const char *what, const moe_tensor_t *a,
                const moe_tensor_t *b) {
  int equal = moe_tensor_byte_size(a) == moe_tensor_byte_size(b) &&
              memcmp(moe_tensor_data(a), moe_tensor_data(b),
                     moe_tensor_byte_size(a)) == 0;
  printf("%s: %s\n", what, equal ? "identical" : "DIFFERENT");
  return !equal;
}

static int cuda(const char *modelPath, const char *xPath,
                const char *weightsPath) {
  moe_model_t *model = NULL;
  moe_tensor_t *x = NULL;
  if (show("load", moe_model_load(modelPath, weightsPath, &model)) ||
      show("read", moe_npy_read(xPath, &x)))
    return 1;
  printf("has_device: %d\n", moe_model_has_device(model));
  const moe_tensor_t *in[1] = {x};
  moe_tensor_t *out[1] = {NULL};
  moe_tensor_t *dx = NULL;
  if (show("to_device", moe_model_tensor_to_device(model, x, &dx))) {
    /* No driver: every device operation says so. */
    show("invoke_device", moe_model_invoke_device(model, in, 1, out, 1));
    moe_model_free(model);
    moe_tensor_free(x);
    return 0;
  }
  int failed = 0;
  /* The reference: host in, host out. */
  moe_tensor_t *y = NULL;
  failed |= show("invoke", moe_model_invoke(model, in, 1, &y, 1));
  /* Device in (used in place), host out. */
  in[0] = dx;
  moe_tensor_t *y1 = NULL;
  failed |= show("invoke device input", moe_model_invoke(model, in, 1, &y1, 1));
  if (!failed)
    failed |= same("device in, host out", y, y1);
  /* Device in, device out; host in, device out. */
  moe_tensor_t *dy = NULL, *dy2 = NULL, *back = NULL, *back2 = NULL;
  failed |=
      show("invoke_device", moe_model_invoke_device(model, in, 1, &dy, 1));
  in[0] = x;
  failed |= show("invoke_device host input",
                 moe_model_invoke_device(model, in, 1, &dy2, 1));
  if (failed)
    return 1;
  printf("outputs on the device: %d %d\n", moe_tensor_is_device(dy),
         moe_tensor_is_device(dy2));
  failed |= show("to_host", moe_model_tensor_to_host(model, dy, &back));
  failed |= show("to_host", moe_model_tensor_to_host(model, dy2, &back2));
  if (failed)
    return 1;
  failed |= same("device in, device out", y, back);
  failed |= same("host in, device out", y, back2);
  /* A device output as the next input (a layer maps ?xH to ?xH). */
  moe_tensor_t *z = NULL, *dz = NULL, *zback = NULL;
  in[0] = y;
  moe_status_t *fits = moe_model_check_inputs(model, in, 1);
  if (fits) {
    printf("chained: skipped (%s)\n", moe_status_message(fits));
    moe_status_free(fits);
  } else {
    failed |=
        show("invoke chained host", moe_model_invoke(model, in, 1, &z, 1));
    in[0] = dy;
    failed |= show("invoke_device chained",
                   moe_model_invoke_device(model, in, 1, &dz, 1));
    if (failed)
      return 1;
    failed |= show("to_host", moe_model_tensor_to_host(model, dz, &zback));
    if (!failed)
      failed |= same("chained on the device", z, zback);
  }
  /* Device outputs outlive the model. */
  moe_model_free(model);
  printf("model freed\n");
  moe_tensor_free(dy);
  moe_tensor_free(dy2);
  moe_tensor_free(dz);
  moe_tensor_free(dx);
  printf("device tensors freed\n");
  moe_tensor_free(x);
  moe_tensor_free(y);
  moe_tensor_free(y1);
  moe_tensor_free(back);
  moe_tensor_free(back2);
  moe_tensor_free(z);
  moe_tensor_free(zback);
  return failed;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc == 4 && strcmp(argv[1], "fake") == 0)
    return fake(argv[2], argv[3]);
  if ((argc == 4 || argc == 5) && strcmp(argv[1], "cuda") == 0)
    return cuda(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
  fprintf(stderr, "usage: device_api fake FAKE.so AFFINE.so | cuda MODEL.so "
                  "X.npy [WEIGHTS]\n");
  return 2;
}
