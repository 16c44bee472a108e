/* A tiny protobuf wire-format encoder: just what the TensorBoard event protos
 * need (varint, 32/64-bit fixed, length-delimited, packed repeated numbers).
 *
 * Why hand-written: the stack has protobuf-c, but using it would mean vendoring
 * TensorFlow's event.proto, summary.proto, tensor.proto, tensor_shape.proto,
 * types.proto and resource_handle.proto (and tracking their changes) plus a
 * code-generation step in the build, to emit five message types with about
 * twenty fields. The wire format is stable and small; this encoder is ~80
 * lines and the test suite decodes its output with an independent reader. */
#ifndef LP_LOG_TFEVENTS_PB_H
#define LP_LOG_TFEVENTS_PB_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer. Allocation failure sets oom and makes later appends
 * no-ops, so a message is built without checking every call; check oom once. */
typedef struct lp_pb {
    uint8_t *data;
    size_t len, cap;
    bool oom;
} lp_pb;

void lp_pb_free(lp_pb *b);
void lp_pb_raw(lp_pb *b, const void *p, size_t n);
void lp_pb_varint_raw(lp_pb *b, uint64_t v);
/* Fields (wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32). */
void lp_pb_varint(lp_pb *b, int field, uint64_t v);      /* int32/int64/uint/enum/bool */
void lp_pb_double(lp_pb *b, int field, double v);
void lp_pb_float(lp_pb *b, int field, float v);
void lp_pb_bytes(lp_pb *b, int field, const void *p, size_t n); /* bytes, string, sub-message */
void lp_pb_string(lp_pb *b, int field, const char *s);
void lp_pb_message(lp_pb *b, int field, const lp_pb *sub); /* appends sub as a sub-message */
void lp_pb_packed_double(lp_pb *b, int field, const double *v, size_t n);
void lp_pb_packed_float(lp_pb *b, int field, const float *v, size_t n);
#endif
