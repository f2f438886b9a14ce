/*
 * The optimizer: AdamW with decoupled weight decay on the tensors marked `decay`, a
 * linear warm-up then cosine learning-rate schedule, and clipping by a global gradient
 * norm that the caller computes (so the distributed part can add other ranks' squares).
 */
#include "model_private.h"

#include <immintrin.h>
#include <math.h>

double omni_model_grad_sumsq(const omni_model *m)
{
    return omni_sumsq(m->grads, m->n_params);
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

/*
 * The update on AVX-512, 16 lanes at a time: the scalar loop's operations in its order
 * (no fused multiply-add; vsqrtps and vdivps round as sqrtf and / do), so it agrees with it
 * to the bit. The scalar loop is not vectorised by the compiler (sqrtf may set errno), and
 * the update streams 28 bytes per parameter: a step's AdamW is memory-bound when vectorised.
 */
__attribute__((target("avx512f"))) static void adamw_avx512(const omni_adamw *a, float *p,
                                                            const float *g, float *m, float *v,
                                                            int64_t n, float keep)
{
    const __m512 b1 = _mm512_set1_ps(a->b1), c1 = _mm512_set1_ps(1.0f - a->b1);
    const __m512 b2 = _mm512_set1_ps(a->b2), c2 = _mm512_set1_ps(1.0f - a->b2);
    const __m512 eps = _mm512_set1_ps(a->eps), clip = _mm512_set1_ps(a->clip);
    const __m512 step_size = _mm512_set1_ps(a->step_size);
    const __m512 inv_sqrt_bc2 = _mm512_set1_ps(a->inv_sqrt_bc2), kp = _mm512_set1_ps(keep);
    const int64_t block = 4096;
#pragma omp parallel for schedule(static) if (n > block)
    for (int64_t b = 0; b < n; b += block) {
        const int64_t end = n - b < block ? n : b + block;
        for (int64_t j = b; j < end; j += 16) {
            const __mmask16 k =
                end - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (end - j)) - 1);
            const __m512 gj = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, g + j), clip);
            const __m512 mj = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(k, m + j)),
                                            _mm512_mul_ps(c1, gj));
            const __m512 vj = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(k, v + j)),
                                            _mm512_mul_ps(_mm512_mul_ps(c2, gj), gj));
            const __m512 den = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vj), inv_sqrt_bc2), eps);
            const __m512 pj = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + j), kp),
                                            _mm512_div_ps(_mm512_mul_ps(step_size, mj), den));
            _mm512_mask_storeu_ps(m + j, k, mj);
            _mm512_mask_storeu_ps(v + j, k, vj);
            _mm512_mask_storeu_ps(p + j, k, pj);
        }
    }
}

static bool have_avx512(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f");
    }
    return known;
}

void omni_adamw_update(const omni_adamw *a, float *p, const float *g, float *m, float *v, int64_t n,
                       bool decay)
{
    const float b1 = a->b1, b2 = a->b2, eps = a->eps, clip = a->clip;
    const float step_size = a->step_size, inv_sqrt_bc2 = a->inv_sqrt_bc2;
    const float keep = decay ? 1.0f - a->lr * a->weight_decay : 1.0f;
    if (have_avx512()) {
        adamw_avx512(a, p, g, m, v, n, keep);
        return;
    }
#pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t j = 0; j < n; j++) {
        float gj = g[j] * clip;
        m[j] = b1 * m[j] + (1.0f - b1) * gj;
        v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
        p[j] = p[j] * keep - step_size * m[j] / (sqrtf(v[j]) * inv_sqrt_bc2 + eps);
    }
}
