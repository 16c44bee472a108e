/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by
 * TensorFlow's record framing. Hardware SSE4.2 crc32 instruction when the CPU
 * has it (checked at run time), slicing-by-8 tables otherwise. */
#ifndef LP_LOG_CRC32C_H
#define LP_LOG_CRC32C_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over n bytes, like leveldb's crc32c::Extend:
 * lp_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t lp_crc32c(uint32_t crc, const void *data, size_t n);
/* The table path alone (tests compare it with the hardware path). */
uint32_t lp_crc32c_portable(uint32_t crc, const void *data, size_t n);
/* True when lp_crc32c uses the SSE4.2 instruction on this CPU. */
bool lp_crc32c_hw_available(void);
/* TensorFlow's masked CRC of a record part: ((c >> 15) | (c << 17)) + 0xa282ead8. */
uint32_t lp_crc32c_mask(uint32_t crc);
#endif
