/*
 * experts: the MoE layer against its PyTorch twin (tests/reference/moe_twin.py, computed in
 * float64 from float32 inputs): routing decisions exactly, then per tensor
 *   max |c - ref| <= 1e-4 * max(1, max |ref|)
 * for the output and every gradient, and |c - ref| <= 1e-5 * max(1, |ref|) for the losses.
 * Cases of token routing, of task routing (moe.router: task, with the task embeddings'
 * gradient) and of LIMoE's entropy losses (moe.entropy, over four modalities, two of them
 * under the global term's threshold), and of expert choice (moe.router: expert_choice, in
 * training, routing compared E wide, with tokens taken by no expert).
 */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experts.h"

static char *ref_path(void)
{
    static char path[1024];
    const char *src = getenv("OMNI_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/reference/moe_twin.h5", src ? src : "..");
    return path;
}

static int64_t numel_of(hid_t f, const char *name)
{
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(ds, 0, "dataset %s missing", name);
    hid_t sp = H5Dget_space(ds);
    int64_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    H5Dclose(ds);
    return n;
}

static void *read_ds(hid_t f, const char *name, hid_t type, size_t size, int64_t *n)
{
    *n = numel_of(f, name);
    void *buf = calloc((size_t)(*n > 0 ? *n : 1), size);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (*n > 0)
        cr_assert_geq(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    H5Dclose(ds);
    return buf;
}

static float *read_f(hid_t g, const char *name, int64_t *n)
{
    return read_ds(g, name, H5T_NATIVE_FLOAT, sizeof(float), n);
}

static double attr_d(hid_t g, const char *name);

/* An attribute the first cases of the file do not have (then `def`). */
static double attr_or(hid_t g, const char *name, double def)
{
    return H5Aexists(g, name) > 0 ? attr_d(g, name) : def;
}

/* The batch of a case with task routing or entropy losses: task routing takes the tokens'
 * tasks; the entropy case gives token t modality m[t] through its position kind (image,
 * audio) or task (task 2 is a control task; task 0 text). Only kind and task are read. */
static uint8_t kinds[64];
static int32_t tasks[64];
static omni_batch twin_batch = {.n_seq = 1, .kind = kinds, .task = tasks};

static const omni_batch *batch_of(hid_t g, int64_t n, bool task_router, bool entropy)
{
    if (!task_router && !entropy)
        return NULL;
    cr_assert_leq(n, 64);
    int64_t cnt;
    int32_t *t = read_ds(g, "task", H5T_NATIVE_INT32, sizeof(int32_t), &cnt);
    int32_t *mod = read_ds(g, "modality", H5T_NATIVE_INT32, sizeof(int32_t), &cnt);
    twin_batch.context = n;
    for (int64_t i = 0; i < n; i++) {
        kinds[i] = OMNI_POS_TOKEN;
        tasks[i] = task_router ? t[i] : 0;
        if (entropy && mod[i] == OMNI_MOD_IMAGE)
            kinds[i] = OMNI_POS_IMAGE;
        if (entropy && mod[i] == OMNI_MOD_AUDIO)
            kinds[i] = OMNI_POS_AUDIO;
        if (entropy && mod[i] == OMNI_MOD_CONTROL)
            tasks[i] = 2;
    }
    free(t);
    free(mod);
    return &twin_batch;
}

static double attr_d(hid_t g, const char *name)
{
    double v;
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    cr_assert_geq(a, 0, "attribute %s missing", name);
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    return v;
}

static void compare(const char *what, const float *c, const float *ref, int64_t n)
{
    double mx = 1.0, err = 0.0;
    for (int64_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs((double)ref[i]));
        err = fmax(err, fabs((double)c[i] - (double)ref[i]));
    }
    cr_assert(err <= 1e-4 * mx, "%s: max error %.3g (scale %.3g)", what, err, mx);
}

/* The tensor of the table whose name ends with `suffix`. */
static const omni_tensor *tensor(const omni_moe *m, const char *suffix)
{
    for (int64_t i = 0; i < omni_moe_n_tensors(m); i++) {
        const omni_tensor *t = omni_moe_tensor_at(m, i);
        size_t a = strlen(t->name), b = strlen(suffix);
        if (a >= b && strcmp(t->name + a - b, suffix) == 0)
            return t;
    }
    return NULL;
}

static void run_case(const char *name)
{
    hid_t f = H5Fopen(ref_path(), H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert_geq(f, 0, "cannot open %s", ref_path());
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(g, 0, "case %s missing", name);

    omni_experiment x;
    omni_experiment_defaults(&x);
    x.model.d_model = (int64_t)attr_d(g, "d_model");
    x.model.n_layers = 1;
    x.moe.every = 1;
    x.moe.num_experts = (int64_t)attr_d(g, "num_experts");
    x.moe.top_k = (int64_t)attr_d(g, "top_k");
    x.moe.expert_ff = (int64_t)attr_d(g, "expert_ff");
    x.moe.capacity_factor = attr_d(g, "capacity_factor");
    x.moe.normalize_topk = attr_d(g, "normalize_topk") != 0.0;
    x.moe.shared_experts = (int64_t)attr_d(g, "shared_experts");
    x.moe.aux_loss = attr_d(g, "aux_loss");
    x.moe.z_loss = attr_d(g, "z_loss");
    const double router = attr_or(g, "router", 0.0); /* 0 topk, 1 task, 2 expert choice */
    const bool task_router = router == 1.0, expert_choice = router == 2.0;
    x.moe.router = task_router     ? OMNI_ROUTER_TASK
                   : expert_choice ? OMNI_ROUTER_EXPERT_CHOICE
                                   : OMNI_ROUTER_TOPK;
    x.moe.entropy.local = attr_or(g, "entropy_local", 0.0);
    x.moe.entropy.global = attr_or(g, "entropy_global", 0.0);
    x.moe.entropy.threshold = attr_or(g, "entropy_threshold", 0.0);
    const bool entropy = x.moe.entropy.local > 0.0 || x.moe.entropy.global > 0.0;
    const int64_t n_tasks = task_router ? (int64_t)attr_d(g, "n_tasks") : entropy ? 3 : 0;
    const int64_t n = (int64_t)attr_d(g, "tokens"), d = x.model.d_model;
    const int64_t k = expert_choice ? x.moe.num_experts : x.moe.top_k; /* routing width */

    omni_moe_comm comm;
    omni_moe_comm_local(&comm);
    omni_moe *m;
    cr_assert_eq(omni_moe_create(&m, &x, n, n_tasks, &comm), OMNI_OK, "%s", omni_error_message());
    if (entropy)
        omni_moe_set_task_modality(m, 2, OMNI_MOD_CONTROL);
    if (expert_choice)
        omni_moe_set_step(m, 0, 0, true); /* the batch choice is made in training */
    const omni_batch *b = batch_of(g, n, task_router, entropy);
    const char *names[] = {"router_w",  "experts_w1", "experts_w3", "experts_w2",
                           "shared_w1", "shared_w3",  "shared_w2",  "task_emb"};
    const char *suffix[] = {"/router/w",  "/experts/w1", "/experts/w3", "/experts/w2",
                            "/shared/w1", "/shared/w3",  "/shared/w2",  "/router/task"};
    enum { N_W = 8 };
    for (int i = 0; i < N_W; i++) {
        const omni_tensor *t = tensor(m, suffix[i]);
        if (H5Lexists(g, names[i], H5P_DEFAULT) <= 0) {
            cr_assert_null(t, "%s: in the table, not in the reference", names[i]);
            continue;
        }
        int64_t cnt;
        float *w = read_f(g, names[i], &cnt);
        if (!t) {
            cr_assert_eq(cnt, 0, "%s: no tensor in the table", names[i]);
        } else {
            cr_assert_eq(cnt, t->numel, "%s: %lld values, table says %lld", names[i],
                         (long long)cnt, (long long)t->numel);
            memcpy(t->data, w, (size_t)cnt * sizeof(float));
        }
        free(w);
    }
    int64_t cnt;
    float *in = read_f(g, "x", &cnt);
    cr_assert_eq(cnt, n * d);
    float *R = read_f(g, "R", &cnt);
    float *out = calloc((size_t)(n * d), sizeof(float));
    float *din = calloc((size_t)(n * d), sizeof(float));
    cr_assert_eq(omni_moe_forward(m, 0, out, in, b, n), OMNI_OK, "%s", omni_error_message());

    /* routing decisions exactly */
    int32_t *rex = read_ds(g, "experts", H5T_NATIVE_INT32, sizeof(int32_t), &cnt);
    int32_t *rkeep = read_ds(g, "keep", H5T_NATIVE_INT32, sizeof(int32_t), &cnt);
    const int32_t *ex, *sl;
    int64_t nn;
    omni_moe_layer_routing(m, 0, &ex, &sl, &nn);
    for (int64_t a = 0; a < n * k; a++) {
        cr_assert_eq(ex[a], rex[a], "%s: token %lld choice %lld", name, (long long)(a / k),
                     (long long)(a % k));
        cr_assert_eq(sl[a] >= 0, rkeep[a] != 0, "%s: token %lld choice %lld kept?", name,
                     (long long)(a / k), (long long)(a % k));
    }
    cr_assert_eq(*omni_moe_layer_stats(m, 0)->dropped, attr_d(g, "dropped"));

    double aux, z;
    omni_moe_layer_losses(m, 0, &aux, &z);
    cr_assert(fabs(aux - attr_d(g, "aux")) <= 1e-5 * fmax(1.0, fabs(attr_d(g, "aux"))),
              "%s: aux %.8g, reference %.8g", name, aux, attr_d(g, "aux"));
    cr_assert(fabs(z - attr_d(g, "z")) <= 1e-5 * fmax(1.0, fabs(attr_d(g, "z"))),
              "%s: z %.8g, reference %.8g", name, z, attr_d(g, "z"));
    double el, eg;
    omni_moe_layer_entropy(m, 0, &el, &eg);
    cr_assert(fabs(el - attr_or(g, "ent_local", 0.0)) <= 1e-5 * fmax(1.0, fabs(el)),
              "%s: entropy local %.8g, reference %.8g", name, el, attr_or(g, "ent_local", 0.0));
    cr_assert(fabs(eg - attr_or(g, "ent_global", 0.0)) <= 1e-5 * fmax(1.0, fabs(eg)),
              "%s: entropy global %.8g, reference %.8g", name, eg, attr_or(g, "ent_global", 0.0));
    double loss = omni_moe_loss(m);
    for (int64_t i = 0; i < n * d; i++)
        loss += (double)out[i] * (double)R[i];
    cr_assert(fabs(loss - attr_d(g, "loss")) <= 1e-4 * fmax(1.0, fabs(attr_d(g, "loss"))),
              "%s: loss %.8g, reference %.8g", name, loss, attr_d(g, "loss"));
    float *ref = read_f(g, "out", &cnt);
    compare("out", out, ref, n * d);
    free(ref);

    omni_moe_zero_grad(m);
    cr_assert_eq(omni_moe_backward(m, 0, din, R, b, n), OMNI_OK);
    ref = read_f(g, "d_x", &cnt);
    compare("d_x", din, ref, n * d);
    free(ref);
    float *p, *gr, *am, *av;
    int64_t np, nd;
    omni_moe_buffers(m, &p, &gr, &am, &av, &np, &nd);
    for (int i = 0; i < N_W; i++) {
        const omni_tensor *t = tensor(m, suffix[i]);
        if (!t)
            continue;
        char dname[64];
        snprintf(dname, sizeof dname, "d_%s", names[i]);
        ref = read_f(g, dname, &cnt);
        cr_assert_eq(cnt, t->numel);
        compare(dname, gr + t->offset, ref, cnt);
        free(ref);
    }
    free(in), free(R), free(out), free(din), free(rex), free(rkeep);
    omni_moe_free(m);
    H5Gclose(g);
    H5Fclose(f);
}

Test(experts, twin_top1_with_drops)
{
    run_case("top1_drop");
}

Test(experts, twin_top2_with_drops_normalized)
{
    run_case("top2_drop");
}

Test(experts, twin_top2_dropless_shared_expert)
{
    run_case("top2_dropless");
}

Test(experts, twin_top1_dropless_two_shared_experts)
{
    run_case("top1_dropless_shared");
}

Test(experts, twin_task_routing_top2_with_drops)
{
    run_case("task_top2_drop");
}

Test(experts, twin_entropy_losses_top2_with_drops)
{
    run_case("entropy_top2_drop");
}

Test(experts, twin_expert_choice_k2_with_unchosen_tokens)
{
    run_case("expert_choice_k2");
}
