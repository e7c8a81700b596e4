#include "cnn/cnn.h"

const char *cnn_version(void) { return CNN_VERSION_STRING; }
