/*===- bad_signature.c - Model libraries with broken signatures -----------===*\
|*                                                                          *|
|* Compiled with -DVARIANT=N to pick one malformed signature; without       *|
|* -DHAVE_RUN the moe_model_run symbol is missing.                          *|
|*                                                                          *|
\*===----------------------------------------------------------------------===*/

const char *moe_model_signature(void) {
#if VARIANT == 1
  return "moe-model 1\ninput x f32 ?x4\nparam p f32 4\noutput y f32 2\n";
#elif VARIANT == 2
  return "moe-model 1\ninput x f33 4\noutput y f32 1\n";
#elif VARIANT == 3
  return "moe-model 2\ninput x f32 4\noutput y f32 1\n";
#elif VARIANT == 4
  return "moe-model 1\ninput x f32 4x-1\noutput y f32 1\n";
#elif VARIANT == 5
  return "moe-model 1\ninput x f32 4\nweight w f32 4x3 offset=0 bytes=40\n"
         "output y f32 1\n";
#elif VARIANT == 6
  return "moe-model 1\ninput x f32 4\nweight w f32 3 offset=32 bytes=12\n"
         "output y f32 1\n";
#elif VARIANT == 7
  return "moe-model 1\ninput x f32 4\ninput x f32 4\noutput y f32 1\n";
#elif VARIANT == 8
  return "moe-model 1\ninput x f32 4\noutput y f32\n";
#elif VARIANT == 9
  return "moe-model 1\ninput x f32 4\n\noutput y f32 1\n";
#elif VARIANT == 10
  return "moe-model 1\nweight w f32 ?x3 offset=0 bytes=12\noutput y f32 1\n";
#elif VARIANT == 11
  return "input x f32 4\noutput y f32 1\n";
#else
  return "moe-model 1\ninput x f32 4\noutput y f32 1\n";
#endif
}

#ifdef HAVE_RUN
void moe_model_run(void **args) { (void)args; }
#endif
