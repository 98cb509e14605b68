/*===- asan-no-manual-poisoning.h - ASan builds against libMLIR.so -*- C -*-===*
 *
 * Part of the moe-mlir project.
 *
 * Force-included into every translation unit of a sanitizer build. LLVM's
 * BumpPtrAllocator poisons and unpoisons its slabs by hand when it is compiled
 * with ASan. Our instrumented code and the uninstrumented libMLIR.so share
 * allocators (attribute and type storage, the source manager), so a slab
 * poisoned by our inlined copy is later handed out by the library's copy,
 * which never unpoisons it: a false use-after-poison. Turning the manual
 * poisoning off keeps every other ASan check (heap, stack, globals, UBSan).
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_CMAKE_ASAN_NO_MANUAL_POISONING_H
#define MOE_CMAKE_ASAN_NO_MANUAL_POISONING_H

#include <sanitizer/asan_interface.h>

#undef __asan_poison_memory_region
#undef __asan_unpoison_memory_region
#define __asan_poison_memory_region(addr, size) ((void)(addr), (void)(size))
#define __asan_unpoison_memory_region(addr, size) ((void)(addr), (void)(size))

#endif
