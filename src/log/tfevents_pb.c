/* Protobuf wire-format encoder: see tfevents_pb.h. Little-endian host assumed
 * for fixed32/fixed64 (checked at compile time). */
#include "log/tfevents_pb.h"
#include <stdlib.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "fixed-width protobuf fields are written little-endian");

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

void lp_pb_free(lp_pb *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

static bool reserve(lp_pb *b, size_t extra) {
    if (b->oom) return false;
    if (b->len + extra <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void lp_pb_raw(lp_pb *b, const void *p, size_t n) {
    if (!reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

void lp_pb_varint_raw(lp_pb *b, uint64_t v) {
    uint8_t tmp[10];
    int n = 0;
    do {
        tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    lp_pb_raw(b, tmp, (size_t)n);
}

static void key(lp_pb *b, int field, int wire) { lp_pb_varint_raw(b, ((uint64_t)field << 3) | (uint64_t)wire); }

void lp_pb_varint(lp_pb *b, int field, uint64_t v) {
    key(b, field, WIRE_VARINT);
    lp_pb_varint_raw(b, v);
}

void lp_pb_double(lp_pb *b, int field, double v) {
    key(b, field, WIRE_FIXED64);
    lp_pb_raw(b, &v, 8);
}

void lp_pb_float(lp_pb *b, int field, float v) {
    key(b, field, WIRE_FIXED32);
    lp_pb_raw(b, &v, 4);
}

void lp_pb_bytes(lp_pb *b, int field, const void *p, size_t n) {
    key(b, field, WIRE_LEN);
    lp_pb_varint_raw(b, n);
    lp_pb_raw(b, p, n);
}

void lp_pb_string(lp_pb *b, int field, const char *s) { lp_pb_bytes(b, field, s, strlen(s)); }

void lp_pb_message(lp_pb *b, int field, const lp_pb *sub) {
    if (sub->oom) b->oom = true;
    lp_pb_bytes(b, field, sub->data, sub->len);
}

void lp_pb_packed_double(lp_pb *b, int field, const double *v, size_t n) { lp_pb_bytes(b, field, v, n * 8); }
void lp_pb_packed_float(lp_pb *b, int field, const float *v, size_t n) { lp_pb_bytes(b, field, v, n * 4); }
