/* The cnn program's shared pieces: the subcommand table, flag parsing, messages. Public API only. */
#ifndef CNN_TOOLS_CLI_H
#define CNN_TOOLS_CLI_H

#include <stdint.h>

#include "cnn/cnn.h"

typedef struct cnn_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cnn_command;

/* CLI_SIZE: a byte count, "1073741824", or with a binary unit "512M", "2G", "1.5GiB" (K, M, G, T, optionally followed
 * by "iB" or "B"; powers of 1024), into an int64_t, at least 1 */
typedef enum cli_kind { CLI_STRING, CLI_INT, CLI_FLOAT, CLI_U64, CLI_BOOL, CLI_SIZE } cli_kind;

typedef struct cli_flag {
    const char *name;   /* "epochs" for --epochs */
    cli_kind kind;
    void *value;        /* const char **, int *, float *, uint64_t *, int *, int64_t * */
    const char *help;   /* "N  number of epochs (default 10)" */
    double min, max;    /* bounds for numbers (inclusive) */
    int seen;
} cli_flag;

/* Parses argv[1..] into flags ("--name value", "--name=value"; CLI_BOOL takes no value); the rest are
 * positional and land in pos (up to max_pos). Prints a message naming the flag and returns 2 on error, 1 when
 * --help was asked (usage printed), 0 on success. */
int cli_parse(const char *command, const char *usage, cli_flag *flags, int argc, char **argv, char **pos,
              int max_pos, int *npos);
void cli_usage(const char *command, const char *usage, const cli_flag *flags, FILE *out);
/* cli_parse for a command that takes no positional argument. */
int cli_parse_flags(const char *command, const char *usage, cli_flag *flags, int argc, char **argv);

/* The end of a cli_flag table. */
#define CLI_END {NULL, 0, NULL, NULL, 0, 0, 0}

/* The flags of an argv that cli_parse took, as "--name value" lines ("--name" for CLI_BOOL), leaving out those
 * named in `skip` (a NULL-terminated list) and values with a line break; appended to *text (a malloc'ed string,
 * or NULL), which is replaced. 0 on success, -1 when out of memory. */
int cli_settings(const cli_flag *flags, int argc, char **argv, const char *const *skip, char **text);

/* Gives the flags that were not given the values of `saved` ("--name value" lines, as cli_settings writes them;
 * modified in place and pointed into: it must outlive the flags' use); unknown names and those in `skip` are
 * left alone. The lines taken are appended to *taken as cli_settings does. Returns 0, 2 after a message naming
 * the flag for a value that does not parse, or -1 when out of memory. */
int cli_apply_settings(const char *command, cli_flag *flags, char *saved, const char *const *skip, char **taken);

/* The --max-memory flag of the commands that build networks (a CLI_SIZE into an int64_t; 0 when not given). */
#define CLI_MAX_MEMORY_FLAG(var)                                                                                   \
    {"max-memory", CLI_SIZE, &(var), "SIZE      refuse networks that need more memory than this (512M, 2G, "      \
                                     "1.5GiB; default 80% of the memory available)", 0, 0, 0}
/* The --model flag of the commands that run a trained model (a CLI_STRING). */
#define CLI_MODEL_FLAG(var)                                                                                        \
    {"model", CLI_STRING, &(var), "FILE      a model file written by cnn train (.safetensors)", 0, 0, 0}
/* The --device flag of the commands that pick a backend (a CLI_STRING; NULL: CUDA when present, else the CPU). */
#define CLI_DEVICE_FLAG(var)                                                                                       \
    {"device", CLI_STRING, &(var), "NAME      cpu, cuda or cuda:N (default: cuda when present, else cpu)", 0, 0, 0}
/* An --eps flag's value before it is given: below the -1e29 every --eps flag accepts, so that a negative value
 * given is told apart and named */
#define CLI_EPS_UNSET (-1e30f)

/* Sets the library's memory limit from --max-memory when it was given. */
void cli_apply_max_memory(int64_t bytes);
/* What a memory refusal names: "--max-memory" when it was given, else "memory limit". */
const char *cli_memory_what(int64_t max_memory);

/* The plural ending of a count in a message: "1 file", "2 files". */
static inline const char *cli_s(long long n) { return n == 1 ? "" : "s"; }

/* Prints "cnn <command>: <what>: <cnn_last_error()>" to stderr; returns the exit status for it (1). */
int cli_fail(const char *command, const char *what, cnn_status st);

/* Prints as cli_fail for a flag whose value the library refused; returns 2 (a usage error) when the value is wrong
 * for this build or machine (CNN_ERR_INVALID_ARG, _NOT_FOUND, _UNSUPPORTED: an unknown device, cuda:N without that
 * GPU, fp16 on the CPU), 1 when something failed while using a good value (a driver error, out of memory). */
int cli_fail_value(const char *command, const char *flag, cnn_status st);

/* 0 when --precision names a precision, else a message and 2: checked before anything is loaded. */
int cli_check_precision(const char *command, const char *precision);

/* 0 when --split is train or test, else a message and 2. */
int cli_check_split(const char *command, const char *split);

/* Creates the backend for --device (NULL: auto) and says which device is used on stderr. */
cnn_status cli_backend(const char *command, const char *device, cnn_backend **out);

/* The backend --device names and the model file --model on it, for the commands that run a trained model. Prints
 * what went wrong and returns the exit status (2: a bad --device; 1: a model that does not load), else 0. */
int cli_open_model(const char *command, const char *device, const char *model, int64_t max_memory,
                   cnn_backend **backend, cnn_net **net);
/* Destroys the network, then its backend (what cli_open_model made; either may be NULL). */
void cli_close_model(cnn_backend *backend, cnn_net *net);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_summary(int argc, char **argv);
int cmd_augment_preview(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_explain(int argc, char **argv);
int cmd_attack(int argc, char **argv);

#endif
