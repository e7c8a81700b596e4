/* Model and checkpoint files (internal): both are one safetensors file holding the network's weights and state
 * under their own names ("<layer>.weight", ...) and, in __metadata__, the format tag, the definition, the class
 * names and the normalization. A checkpoint adds tensors whose names hold a '/' ("optimizer/m/<param>",
 * "data/order", ...: layer names cannot hold one), more metadata, and a checksum that loading verifies. */
#ifndef CNN_CORE_MODEL_FILE_H
#define CNN_CORE_MODEL_FILE_H

#include <stdint.h>

#include "core/io/safetensors.h"
#include "core/nn/net.h"

#define CNN_MODEL_FORMAT "cnn.c model"
#define CNN_CHECKPOINT_FORMAT "cnn.c checkpoint"
/* The metadata key of the checksum: "crc32c:XXXXXXXX" (cnn_file_checksum). */
#define CNN_CHECKSUM_KEY "checksum"

/* Writes the network's tensors and model metadata, then `extra` tensors and `nmeta` more metadata pairs, with
 * the given format tag, atomically. `checksum` holds flags: CNN_WRITE_CHECKSUM (1) adds CNN_CHECKSUM_KEY over
 * everything else; CNN_WRITE_ZLIB deflates the file (core/io/zfile.h). */
#define CNN_WRITE_CHECKSUM 1
#define CNN_WRITE_ZLIB 2
cnn_status cnn_net_write_file(const cnn_net *net, const char *path, const char *format, const cnn_st_entry *extra,
                              int nextra, const char *const *meta_keys, const char *const *meta_values, int nmeta,
                              int checksum);

/* CRC-32C over the tensors (sorted by name: name, dtype, shape, bytes) and the metadata but the checksum
 * (sorted by key: key, value), so that neither order nor padding matters. */
uint32_t cnn_file_checksum(const cnn_st_file *f);

/* Refuses a file whose CNN_CHECKSUM_KEY is missing or does not match, naming `path`. */
cnn_status cnn_file_verify_checksum(const cnn_st_file *f, const char *path);

/* Copies every weight and state tensor of `net` from the open file (tensors whose names hold a '/' are not the
 * network's and are skipped); every one must be there with its shape, and no other may be. */
cnn_status cnn_net_read_tensors(cnn_net *net, const cnn_st_file *f, const char *path);

/* Builds a network from an open model or checkpoint file: the definition, weights, class names, normalization. */
cnn_status cnn_net_from_st(const cnn_st_file *f, const char *path, cnn_backend *backend, cnn_net **out);

/* The format tag of the files cnn quantize writes (cnn-lite's). */
#define CNN_LITE_FORMAT "cnn.c lite"
/* A network of one layer running a cnn-lite file (core/quant/layer_lite.c); takes `bytes` over (freed on failure too). */
/* A quantized network's path: 1 (the default) the backend's compiled graph where it has one, 0 cnn-lite's own
 * (exact integer arithmetic, bit for bit libcnn-lite's). */
void cnn_net_quant_set_compiled(cnn_net *net, int on);
/* An int8 network's compiled graph: 1 (the default) cnn-lite's requantization on oneDNN's int32 sums (bit for bit
 * cnn-lite's), 0 oneDNN's requantization fused into each conv (within one step of cnn-lite's per op). */
void cnn_net_quant_set_exact_requant(cnn_net *net, int on);
/* 1 when the last forward of a quantized network ran the compiled graph. */
int cnn_net_quant_ran_compiled(const cnn_net *net);
cnn_status cnn_net_from_lite(unsigned char *bytes, size_t len, const char *path, cnn_backend *backend, cnn_net **out);

#endif
