/* Eight floats as one of GCC's generic vectors, for the loops our batch norm kernel
 * (batchnorm_fused.c, batchnorm_silu.c) compiles per ISA level (LP_ISA_VARIANTS): loads and
 * stores at any alignment, a broadcast, and a select by mask. */
#ifndef LP_VEC8_H
#define LP_VEC8_H

#include "backend.h"
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));

LP_ISA_BODY v8f ld8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}
LP_ISA_BODY void st8(float *p, v8f v) { memcpy(p, &v, sizeof v); }
LP_ISA_BODY v8f splat8(float f) { return (v8f){f, f, f, f, f, f, f, f}; }
LP_ISA_BODY v8f select8(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }

#endif
