/* cnn.c — the public C API, all of it. */
#ifndef CNN_CNN_H
#define CNN_CNN_H

#include "cnn/status.h"
#include "cnn/tensor.h"
#include "cnn/backend.h"
#include "cnn/data.h"
#include "cnn/pipeline.h"
#include "cnn/net.h"
#include "cnn/train.h"
#include "cnn/prune.h"
#include "cnn/io.h"
#include "cnn/bench.h"
#include "cnn/serve.h"
#include "cnn/quant.h"
#include "cnn/compress.h"
#include "cnn/explain.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "0.1.0" */
CNN_API const char *cnn_version(void);

#ifdef __cplusplus
}
#endif
#endif
