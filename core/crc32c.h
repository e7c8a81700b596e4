/* CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected as 0x82F63B78): the checksum of TFRecord files
 * (TensorBoard event files) and of cnn.c checkpoints. */
#ifndef CNN_CORE_CRC32C_H
#define CNN_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Extends `crc` (0 to start) over n bytes: cnn_crc32c(cnn_crc32c(0, a, n), b, m) == CRC of a then b.
 * cnn_crc32c(0, "123456789", 9) == 0xE3069283 (the standard check value). */
uint32_t cnn_crc32c(uint32_t crc, const void *data, size_t n);

/* TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8 (tensorflow/core/lib/hash/crc32c.h). */
uint32_t cnn_crc32c_mask(uint32_t crc);

#ifdef __cplusplus
}
#endif
#endif
