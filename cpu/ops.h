/* The CPU backend's ops: the functions cpu/backend.c puts in its table, defined in the other files of cpu/.
 * Each definition's file includes this header, so that a changed signature is a compile error
 * (-Wmissing-prototypes). docs/ARCHITECTURE.md, "Adding an op". */
#ifndef CNN_CPU_OPS_H
#define CNN_CPU_OPS_H

#include "core/backend_ops.h"

CNN_BACKEND_OPS(cnn_cpu)
cnn_status cnn_cpu_qconv_s32(cnn_backend *, const cnn_qconv_args *);
cnn_status cnn_cpu_qprog_create(cnn_backend *, const struct cnn_lite *, int, int, cnn_qprog **);
cnn_status cnn_cpu_qprog_run(cnn_backend *, cnn_qprog *, const float *, float *);
void cnn_cpu_qprog_destroy(cnn_backend *, cnn_qprog *);

#endif
