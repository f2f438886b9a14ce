/*
 * The optimizer: AdamW with decoupled weight decay on the tensors marked `decay`, a
 * linear warm-up then cosine learning-rate schedule, and clipping by a global gradient
 * norm that the caller computes (so the distributed part can add other ranks' squares).
 */
#include "model_private.h"

#include <math.h>

double omni_model_grad_sumsq(const omni_model *m)
{
    double s = 0.0;
    const float *g = m->grads;
    for (int64_t i = 0; i < m->n_params; i++)
        s += (double)g[i] * (double)g[i];
    return s;
}

double omni_lr_at(const omni_experiment *x, int64_t step)
{
    const double lr = x->optim.lr, min_lr = x->optim.min_lr;
    const int64_t warm = x->optim.warmup, total = x->optim.steps;
    if (step < warm)
        return lr * (double)(step + 1) / (double)warm;
    if (step >= total || total <= warm)
        return step >= total ? min_lr : lr;
    double progress = (double)(step - warm) / (double)(total - warm);
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(3.14159265358979323846 * progress));
}

double omni_clip_scale(const omni_experiment *x, double global_norm)
{
    if (x->optim.grad_clip <= 0.0)
        return 1.0;
    double c = x->optim.grad_clip / (global_norm + 1e-6);
    return c < 1.0 ? c : 1.0;
}

omni_status omni_model_step(omni_model *m, int64_t step, double global_norm)
{
    if (!isfinite(global_norm))
        return omni_fail(OMNI_ERR_NUMERIC, "model: step %lld: the gradient norm is %g",
                         (long long)step, global_norm);
    const omni_experiment *x = &m->x;
    omni_adamw a = omni_adamw_at(x, step, omni_lr_at(x, step), omni_clip_scale(x, global_norm));
    for (int64_t i = 0; i < m->tensors.n; i++) {
        const omni_tensor *t = &m->tensors.t[i];
        omni_adamw_update(&a, m->params + t->offset, m->grads + t->offset, m->adam_m + t->offset,
                          m->adam_v + t->offset, t->numel, t->decay);
    }
    return OMNI_OK;
}

omni_adamw omni_adamw_at(const omni_experiment *x, int64_t step, double lr, double clip)
{
    omni_adamw a;
    a.lr = (float)lr;
    a.b1 = (float)x->optim.beta1;
    a.b2 = (float)x->optim.beta2;
    a.eps = (float)x->optim.eps;
    a.weight_decay = (float)x->optim.weight_decay;
    a.clip = (float)clip;
    const float bc1 = (float)(1.0 - pow(x->optim.beta1, (double)(step + 1)));
    const float bc2 = (float)(1.0 - pow(x->optim.beta2, (double)(step + 1)));
    a.step_size = a.lr / bc1;
    a.inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
    return a;
}

void omni_adamw_update(const omni_adamw *a, float *p, const float *g, float *m, float *v, int64_t n,
                       bool decay)
{
    const float b1 = a->b1, b2 = a->b2, eps = a->eps, clip = a->clip;
    const float step_size = a->step_size, inv_sqrt_bc2 = a->inv_sqrt_bc2;
    const float keep = decay ? 1.0f - a->lr * a->weight_decay : 1.0f;
#pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t j = 0; j < n; j++) {
        float gj = g[j] * clip;
        m[j] = b1 * m[j] + (1.0f - b1) * gj;
        v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
        p[j] = p[j] * keep - step_size * m[j] / (sqrtf(v[j]) * inv_sqrt_bc2 + eps);
    }
}
