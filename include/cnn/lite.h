/* cnn-lite — a small inference library for the models `cnn quantize` writes (int8, dynamic, fp16 and float).
 *
 * Portable C99 with no dependency beyond the C library's string and math functions: no oneDNN, OpenMP, zlib or
 * file I/O. The model is read from a memory buffer; all memory comes from an arena the caller gives, whose size
 * cnn_lite_arena_size reports from the model; nothing is allocated after cnn_lite_open, and the model buffer may be
 * freed once it returns (what is needed is copied into the arena). Every call returns a status; failures write a
 * message naming the field or op into the caller's buffer (err, errlen; err may be NULL). One cnn_lite may be used
 * by one thread at a time; several may share nothing but the model buffer while they open.
 *
 * Built as libcnn-lite (CMake target cnn_lite) with this header only; libcnn runs the same files through the same
 * code (cnn_net_load accepts them). README.md, "Quantization and cnn-lite". */
#ifndef CNN_LITE_H
#define CNN_LITE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cnn_lite_status {
    CNN_LITE_OK = 0,
    CNN_LITE_ERR_ARG,         /* a NULL pointer, a batch out of range */
    CNN_LITE_ERR_FORMAT,      /* not a model cnn-lite runs, or a corrupt or inconsistent one */
    CNN_LITE_ERR_UNSUPPORTED, /* a well-formed model with an op or dtype this build does not run */
    CNN_LITE_ERR_ARENA        /* the arena is smaller than cnn_lite_arena_size said */
} cnn_lite_status;

typedef struct cnn_lite cnn_lite;

/* The arena bytes cnn_lite_open needs for `model` (len bytes) and batches of up to max_batch images. Uses about
 * 16 KiB of stack. */
cnn_lite_status cnn_lite_arena_size(const void *model, size_t len, int max_batch, size_t *bytes, char *err,
                                    size_t errlen);

/* Sets the model up in `arena` (at least cnn_lite_arena_size bytes, any alignment); *out points into it. */
cnn_lite_status cnn_lite_open(const void *model, size_t len, int max_batch, void *arena, size_t arena_bytes,
                              cnn_lite **out, char *err, size_t errlen);

/* Class probabilities (n x classes) of n <= max_batch images (n x H x W x C floats, NHWC, pixels in [0, 1]: the
 * model's normalization, when it has one, is applied here). */
cnn_lite_status cnn_lite_predict(cnn_lite *m, const float *images, int n, float *probs, char *err, size_t errlen);

/* The same pass on images already normalized, giving the scores before the softmax (what libcnn's loss takes). */
cnn_lite_status cnn_lite_logits(cnn_lite *m, const float *normalized, int n, float *logits, char *err,
                                size_t errlen);

void cnn_lite_input_shape(const cnn_lite *m, int *h, int *w, int *c);
int cnn_lite_num_classes(const cnn_lite *m);
/* Borrowed from the arena; NULL when the model has no name for class j. */
const char *cnn_lite_class_name(const cnn_lite *m, int j);
/* "int8", "dynamic", "fp16" or "float". */
const char *cnn_lite_mode(const cnn_lite *m);
/* 1 and the per-channel mean and std when the model normalizes its input (c values each), else 0. */
int cnn_lite_normalization(const cnn_lite *m, float *mean, float *std);
/* 1 and the size images are resized to before the centre crop (cnn predict's preparation), else 0. */
int cnn_lite_resize(const cnn_lite *m, int *h, int *w);

#ifdef __cplusplus
}
#endif
#endif
