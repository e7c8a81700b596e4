/* cnn eval: loss, accuracy, per-class precision/recall/F1 and the confusion matrix of a model on a dataset. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tools/adv_opts.h"
#include "tools/cli.h"
#include "tools/data_opts.h"
#include "tools/report.h"

/* --plots DIR: the confusion matrix and the reliability diagram. Returns the exit status. */
static int write_plots(const char *dir, const cnn_metrics *m, const cnn_net *net)
{
    char path[4096];
    struct stat sb;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "cnn eval: --plots: cannot create the directory %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "cnn eval: --plots: %s is not a directory\n", dir);
        return 1;
    }
    snprintf(path, sizeof path, "%s/confusion_matrix.png", dir);
    cnn_status st = cnn_metrics_plot_confusion(m, net, path);
    if (st == CNN_OK) {
        snprintf(path, sizeof path, "%s/reliability.png", dir);
        st = cnn_metrics_plot_reliability(m, path);
    }
    return st == CNN_OK ? 0 : cli_fail("eval", "--plots", st);
}

/* Past this, the probabilities of every sample (for top-k, ROC AUC and calibration) are not kept: 4 bytes per class
 * and sample, 256 MiB being 6.7 million samples of 10 classes */
#define EVAL_PROBS_MAX (256ll << 20)

/* The metrics with every probability kept when that is small enough; else the plain ones, said so. */
static cnn_status evaluate(cnn_net *net, const cnn_source *ds, const cnn_train_config *cfg, int batch, int top_k,
                           cnn_metrics **m)
{
    long long bytes = (long long)cnn_source_count(ds) * cnn_net_num_outputs(net) * (long long)sizeof(float);
    if (bytes <= EVAL_PROBS_MAX)
        return cnn_evaluate_source_ex(net, ds, cfg, batch, &(cnn_metrics_options){.top_k = top_k}, m);
    fprintf(stderr, "cnn eval: note: %lld samples: top-k accuracy, ROC AUC and calibration left out (their "
                    "probabilities would take %lld MiB)\n", (long long)cnn_source_count(ds), bytes >> 20);
    return cnn_evaluate_source(net, ds, cfg, batch, m);
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = "fashion-mnist", *split = "test", *metrics_json = NULL, *device = NULL;
    int batch = 256;
    int64_t max_memory = 0;
    cli_data_opts dopt = {0};
    const char *attack = NULL;
    float eps = CLI_EPS_UNSET, alpha = 0.0f;
    int steps = 10, random_start = 0;
    uint64_t seed = 1;
    int top_k = 5;
    const char *plots = NULL;
    cli_flag flags[] = {
        CLI_MODEL_FLAG(model),
        {"data", CLI_STRING, &data, "SPEC      as cnn train: fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, "
                                    "cifar100:DIR, folder:DIR, csv:FILE (default fashion-mnist)", 0, 0, 0},
        {"split", CLI_STRING, &split, "NAME      train or test (default test; a folder or list without a test split "
                                      "is evaluated whole)", 0, 0, 0},
        {"batch", CLI_INT, &batch, "N         batch size (default 256)", 1, 65536, 0},
        {"metrics-json", CLI_STRING, &metrics_json, "FILE      also write the metrics as JSON", 0, 0, 0},
        CLI_DEVICE_FLAG(device),
        CLI_DATA_LOADER_FLAGS(dopt),
        CLI_MAX_MEMORY_FLAG(max_memory),
        {"top-k", CLI_INT, &top_k, "K         top-K accuracy beside top-1 (default 5)", 1, 100000, 0},
        {"plots", CLI_STRING, &plots, "DIR       write confusion_matrix.png and reliability.png there", 0, 0, 0},
        {"attack", CLI_STRING, &attack, "NAME      also report accuracy under an attack: fgsm or pgd (with --eps)", 0,
         0, 0},
        {"eps", CLI_FLOAT, &eps, "E         the attack's L-infinity radius in [0, 1] pixel units, before normalization",
         -1e29, 1e29, 0},
        {"steps", CLI_INT, &steps, "K         pgd: iterations (default 10)", 1, 100000, 0},
        {"alpha", CLI_FLOAT, &alpha, "A         pgd: the step (default 2.5 * eps / steps)", 0, 1, 0},
        {"random-start", CLI_BOOL, &random_start, "          pgd: start from a random point of the eps-ball", 0, 0, 0},
        {"seed", CLI_U64, &seed, "S         pgd's random start (default 1)", 0, 0, 0},
        CLI_END,
    };
    int rc = cli_parse_flags("eval", "--model FILE [--data SPEC] [options]", flags, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model) {
        fprintf(stderr, "cnn eval: --model FILE is required\n");
        return 2;
    }
    if ((rc = cli_check_split("eval", split)) != 0) return rc;
    cnn_attack_config acfg;
    cnn_attack_config_defaults(&acfg);
    if (attack) {
        const cli_adv_opts given = {
            .method = attack, .eps = eps, .alpha = alpha, .steps = steps, .random_start = random_start};
        if ((rc = cli_attack_apply("eval", "attack", "required with --attack", &given, seed, &acfg)) != 0) return rc;
    } else if (eps != CLI_EPS_UNSET) {
        fprintf(stderr, "cnn eval: --eps: needs --attack fgsm|pgd\n");
        return 2;
    }
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    cnn_source *ds = NULL;
    cnn_metrics *m = NULL;
    cnn_status st;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    if ((rc = cli_data_apply("eval", &dopt, &cfg, NULL)) != 0) return rc;
    /* a spec without a test split (a plain class folder, a CSV list) is evaluated whole */
    if (!strcmp(split, "test") && !cnn_source_has_split(data, "test") && cnn_source_has_split(data, "train"))
        split = "train";
    rc = 1;
    cli_apply_max_memory(max_memory);
    /* the evaluation at --batch must fit before the model is loaded */
    cnn_memory_estimate *budget = NULL;
    cnn_memory_config mc = {.batch = batch, .optimizer_slots = 0};
    if ((st = cnn_memory_estimate_file(model, &mc, &budget)) == CNN_OK) st = cnn_memory_check(budget, 0, 0);
    cnn_memory_estimate_destroy(budget);
    if (st != CNN_OK) {
        rc = cli_fail("eval", st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "--model", st);
    } else if ((st = cli_backend("eval", device, &backend)) != CNN_OK) {
        rc = cli_fail_value("eval", "--device", st);
    } else if ((st = cnn_net_load(model, backend, &net)) != CNN_OK) {
        rc = cli_fail("eval", st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "--model", st);
    } else {
        if (!dopt.resize) cnn_net_resize(net, &cfg.resize_h, &cfg.resize_w); /* the size the model was trained at */
        if ((st = cnn_source_open(data, split, &ds)) != CNN_OK) rc = cli_fail("eval", "--data", st);
        else if (cli_data_limit("eval", &dopt, ds)) rc = 1;
        else if (plots && (long long)cnn_source_count(ds) * cnn_net_num_outputs(net) * 4 > EVAL_PROBS_MAX) {
            fprintf(stderr, "cnn eval: --plots: the probabilities of %lld samples would take more than %lld MiB; "
                            "evaluate a part (--limit N)\n", (long long)cnn_source_count(ds), EVAL_PROBS_MAX >> 20);
            rc = 2;
        } else if ((st = evaluate(net, ds, &cfg, batch, top_k, &m)) != CNN_OK)
            rc = cli_fail("eval", st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "evaluation", st);
        else if (plots && (rc = write_plots(plots, m, net)) != 0) {
            /* named by write_plots */
        } else {
            cnn_metrics_print(m, net, stdout);
            report_attack ra = {0};
            cnn_attack_result ar;
            rc = 0;
            if (attack) {
                if ((st = cnn_evaluate_attack(net, ds, &cfg, batch, &acfg, &ar)) != CNN_OK) {
                    rc = cli_fail("eval", "--attack", st);
                } else {
                    float a = acfg.method == CNN_ATTACK_PGD ? (alpha > 0 ? alpha : 2.5f * eps / steps) : eps;
                    int k = acfg.method == CNN_ATTACK_PGD ? steps : 1;
                    printf("\nunder attack: %s, eps %g, %d step%s of %g%s\n  clean accuracy %.4f (loss %.4f), "
                           "accuracy under attack %.4f (loss %.4f), %lld images\n", attack, (double)eps, k,
                           k == 1 ? "" : "s", (double)a, acfg.method == CNN_ATTACK_PGD && random_start ?
                           ", random start" : "", ar.clean_accuracy, ar.clean_loss, ar.adv_accuracy, ar.adv_loss,
                           (long long)ar.n);
                    ra = (report_attack){attack, eps, a, k, random_start, ar};
                }
            }
            if (rc == 0 && metrics_json &&
                (st = report_write_json_extra(metrics_json, NULL, 0, m, net, ra.method ? &ra : NULL)) != CNN_OK)
                rc = cli_fail("eval", "--metrics-json", st);
        }
    }
    cnn_metrics_destroy(m);
    cnn_source_destroy(ds);
    cli_close_model(backend, net);
    return rc;
}
