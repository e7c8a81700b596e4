/* Knowledge distillation (Hinton et al. 2015): the student learns from a teacher's softened class probabilities
 * beside the labels. Per sample i, with s and t the student's and the teacher's logits and T the temperature:
 *
 *   loss_i = (1 - alpha) * ce_i + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
 *   d loss_i / d s = (1 - alpha) * d ce_i / d s + alpha * T * (softmax(s / T) - softmax(t / T))
 *
 * T^2 keeps the soft term's gradient on the scale of the hard one as T changes (Hinton et al., section 2). The
 * cross-entropy term is the trainer's own (cnn_net_loss: label smoothing and class weights as without a teacher);
 * the KL term is unweighted. The teacher runs in inference mode on the student's batch as the loader made it (the
 * same augmentation), taken back to [0, 1] pixels, resized to the teacher's input when the sizes differ
 * (cnn_image_resize: bilinear up, area averaging down) and normalized as the teacher's input wants. Its forward pass
 * trains nothing; its time is part of each step's wall time (images/s counts the student's images), and the
 * progress line shows it apart. The loss and gradient are combined on the host from the backend's logits: every
 * backend runs it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/compress/compress.h"
#include "core/crc32c.h"
#include "core/data/image.h"
#include "core/error.h"
#include "core/free_list.h"
#include "core/progress.h"

struct cnn_distill {
    cnn_net *teacher;
    float alpha, temperature;
    int k;                     /* classes */
    int sh, sw, th, tw, c;     /* the student's and the teacher's input sizes, their channels */
    float *pix;                /* (N, sh, sw, C) the batch in pixels */
    float *tin;                /* (N, th, tw, C) the teacher's input */
    float *zs, *zt;            /* (N, K) logits */
    float *ce, *grad;          /* (N) losses, (N, K) the logits' gradient */
    int32_t *labels;           /* (N) zeros: the teacher's staged labels, never read in inference */
    double seconds;            /* in the teacher */
};

cnn_status cnn_distill_check(const cnn_net *student, const cnn_net *teacher, float alpha, float temperature)
{
    if (!student || !teacher) return cnn_error(CNN_ERR_INVALID_ARG, "distillation needs a student and a teacher");
    if (!(alpha >= 0.0f && alpha <= 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "the distillation weight alpha must be in [0, 1], got %g", (double)alpha);
    if (!(temperature > 0.0f) || !isfinite(temperature))
        return cnn_error(CNN_ERR_INVALID_ARG, "the distillation temperature must be a number > 0, got %g",
                         (double)temperature);
    int ks = cnn_net_num_outputs(student), kt = cnn_net_num_outputs(teacher);
    if (ks != kt)
        return cnn_error(CNN_ERR_SHAPE, "the teacher (%s) has %d classes but the student (%s) has %d", teacher->source,
                         kt, student->source, ks);
    if (teacher->input.d[2] != student->input.d[2])
        return cnn_error(CNN_ERR_SHAPE, "the teacher (%s) takes %lld input channels but the student (%s) %lld",
                         teacher->source, (long long)teacher->input.d[2], student->source,
                         (long long)student->input.d[2]);
    if (teacher == student) return cnn_error(CNN_ERR_INVALID_ARG, "the teacher must be another network object");
    return CNN_OK;
}

void cnn_distill_destroy(cnn_distill *d)
{
    if (!d) return;
    CNN_FREE_ALL(d->pix, d->tin, d->zs, d->zt, d->ce, d->grad, d->labels, d);
}

cnn_status cnn_distill_create(const cnn_net *student, const cnn_train_config *cfg, int batch, cnn_distill **out)
{
    *out = NULL;
    cnn_status st = cnn_distill_check(student, cfg->teacher, cfg->distill_alpha, cfg->temperature);
    if (st != CNN_OK) return cnn_error_prefix(st, "distillation: ");
    if (student->compute != CNN_F32 || cfg->teacher->compute != CNN_F32)
        return cnn_error(CNN_ERR_UNSUPPORTED, "distillation: the student and the teacher compute in fp32 or tf32 (the "
                         "loss is combined from float logits), not %s", cnn_precision_name(student->precision));
    cnn_distill *d = calloc(1, sizeof *d);
    if (!d) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    d->teacher = cfg->teacher;
    d->alpha = cfg->distill_alpha;
    d->temperature = cfg->temperature;
    d->k = cnn_net_num_outputs(student);
    cnn_net_input_shape(student, &d->sh, &d->sw, &d->c);
    cnn_net_input_shape(cfg->teacher, &d->th, &d->tw, &d->c);
    size_t n = (size_t)batch;
    d->pix = malloc(n * (size_t)d->sh * d->sw * d->c * sizeof *d->pix);
    d->tin = malloc(n * (size_t)d->th * d->tw * d->c * sizeof *d->tin);
    d->zs = malloc(n * d->k * sizeof *d->zs);
    d->zt = malloc(n * d->k * sizeof *d->zt);
    d->ce = malloc(n * sizeof *d->ce);
    d->grad = malloc(n * d->k * sizeof *d->grad);
    d->labels = calloc(n, sizeof *d->labels);
    if (!d->pix || !d->tin || !d->zs || !d->zt || !d->ce || !d->grad || !d->labels) {
        cnn_distill_destroy(d);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for distillation batches of %d", batch);
    }
    *out = d;
    return CNN_OK;
}

double cnn_distill_teacher_seconds(const cnn_distill *d) { return d ? d->seconds : 0.0; }

/* softmax(z / T) of one row, in double */
static void soft(const float *z, int k, double temperature, double *p)
{
    double m = z[0];
    for (int j = 1; j < k; j++) m = fmax(m, z[j]);
    double sum = 0.0;
    for (int j = 0; j < k; j++) sum += p[j] = exp(((double)z[j] - m) / temperature);
    for (int j = 0; j < k; j++) p[j] /= sum;
}

void cnn_distill_combine(int n, int k, const float *student, const float *teacher, float alpha, float temperature,
                         const float *ce, const float *ce_grad, float grad_scale, float *loss, float *grad)
{
    enum { ROW = 64 };
    double ps_small[ROW], pt_small[ROW];
    double *ps = k <= ROW ? ps_small : malloc((size_t)k * sizeof *ps);
    double *pt = k <= ROW ? pt_small : malloc((size_t)k * sizeof *pt);
    const double a = alpha, t = temperature;
    for (int i = 0; i < n; i++) {
        const float *s = student + (size_t)i * k, *z = teacher + (size_t)i * k;
        float *g = grad + (size_t)i * k;
        const float *cg = ce_grad + (size_t)i * k;
        if (!ps || !pt) { /* no memory for a row this long: the plain cross-entropy (never in practice: k <= 64K) */
            for (int j = 0; j < k; j++) g[j] = cg[j];
            loss[i] = ce[i];
            continue;
        }
        soft(s, k, t, ps);
        soft(z, k, t, pt);
        /* KL(pt || ps) = sum pt (log pt - log ps); terms with pt = 0 are 0 */
        double kl = 0.0;
        for (int j = 0; j < k; j++)
            if (pt[j] > 0.0) kl += pt[j] * (log(pt[j]) - log(ps[j] > 0.0 ? ps[j] : 1e-300));
        for (int j = 0; j < k; j++)
            g[j] = (float)((1.0 - a) * cg[j] + (double)grad_scale * a * t * (ps[j] - pt[j]));
        loss[i] = (float)((1.0 - a) * ce[i] + a * t * t * kl);
    }
    if (ps != ps_small) free(ps);
    if (pt != pt_small) free(pt);
}

/* The teacher's input from the student's batch: pixels, resized, normalized as the teacher wants. */
static cnn_status teacher_input(cnn_distill *d, const cnn_net *student, const float *images, int n)
{
    const int c = d->c;
    const size_t per_s = (size_t)d->sh * d->sw * c, per_t = (size_t)d->th * d->tw * c;
    const cnn_net *t = d->teacher;
    for (size_t j = 0; j < (size_t)n * per_s; j++) {
        int ch = (int)(j % (size_t)c);
        d->pix[j] = student->has_norm ? images[j] * student->norm_std[ch] + student->norm_mean[ch] : images[j];
    }
    for (int i = 0; i < n; i++) {
        float *dst = d->tin + (size_t)i * per_t;
        if (d->sh == d->th && d->sw == d->tw) {
            memcpy(dst, d->pix + (size_t)i * per_s, per_s * sizeof *dst);
        } else {
            cnn_status st = cnn_image_resize(d->pix + (size_t)i * per_s, d->sh, d->sw, c, dst, d->th, d->tw);
            if (st != CNN_OK) return st;
        }
    }
    if (t->has_norm)
        for (size_t j = 0; j < (size_t)n * per_t; j++) {
            int ch = (int)(j % (size_t)c);
            d->tin[j] = (d->tin[j] - t->norm_mean[ch]) / t->norm_std[ch];
        }
    return CNN_OK;
}

cnn_status cnn_distill_loss(cnn_distill *d, cnn_net *student, const float *images, int n)
{
    cnn_status st = CNN_OK;
    const int k = d->k;
    double t0 = cnn_now_seconds();
    CNN_TRY(teacher_input(d, student, images, n));
    CNN_TRY(cnn_net_stage_host(d->teacher, d->tin, d->labels, n));
    CNN_TRY(cnn_net_forward(d->teacher, 0));
    CNN_TRY(cnn_tensor_read(d->teacher->acts[d->teacher->nlayers - 1], d->zt, (size_t)n * k * sizeof(float)));
    d->seconds += cnn_now_seconds() - t0;
    CNN_TRY(cnn_net_loss(student, 1));
    cnn_tensor *dlogits = student->grads[student->nlayers - 1];
    CNN_TRY(cnn_tensor_read(student->acts[student->nlayers - 1], d->zs, (size_t)n * k * sizeof(float)));
    CNN_TRY(cnn_tensor_read(student->losses, d->ce, (size_t)n * sizeof(float)));
    CNN_TRY(cnn_tensor_read(dlogits, d->grad, (size_t)n * k * sizeof(float)));
    cnn_distill_combine(n, k, d->zs, d->zt, d->alpha, d->temperature, d->ce, d->grad,
                        student->loss_scale / (float)n, d->ce, d->grad);
    CNN_TRY(cnn_tensor_write(student->losses, d->ce, (size_t)n * sizeof(float)));
    CNN_TRY(cnn_tensor_write(dlogits, d->grad, (size_t)n * k * sizeof(float)));
fail:
    if (st != CNN_OK) st = cnn_error_prefix(st, "distillation: ");
    return st;
}

uint32_t cnn_distill_teacher_crc(const cnn_net *teacher)
{
    uint32_t crc = teacher->definition ? cnn_crc32c(0, teacher->definition, strlen(teacher->definition)) : 0;
    float *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < teacher->nlayers; i++) {
        const cnn_layer *l = teacher->layers[i];
        for (int j = 0; j < l->nparams + l->nstate; j++) {
            const cnn_tensor *v = j < l->nparams ? l->params[j].value : l->state[j - l->nparams].value;
            size_t bytes = cnn_tensor_bytes(v);
            if (bytes > cap) {
                float *grown = realloc(buf, bytes);
                if (!grown) continue; /* unreadable for lack of memory: left out of the checksum */
                buf = grown;
                cap = bytes;
            }
            if (cnn_tensor_read(v, buf, bytes) == CNN_OK) crc = cnn_crc32c(crc, buf, bytes);
        }
    }
    free(buf);
    return crc;
}
