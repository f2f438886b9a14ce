/*
 * The cart-pole environment of the demo's control task (Barto, Sutton & Anderson 1983,
 * with the constants and termination of Gym's CartPole-v1), an expert controller, and
 * rollouts of any policy, for data generation and for evaluating a trained model.
 */
#include "datasets.h"

#include <math.h>

#define DS_PI 3.14159265358979323846

#define GRAVITY          9.8
#define MASS_CART        1.0
#define MASS_POLE        0.1
#define TOTAL_MASS       (MASS_CART + MASS_POLE)
#define HALF_LENGTH      0.5
#define POLE_MASS_LENGTH (MASS_POLE * HALF_LENGTH)
#define FORCE            10.0
#define TAU              0.02
#define X_LIMIT          2.4
#define THETA_LIMIT      (12.0 * DS_PI / 180.0)

void omni_cartpole_reset(omni_cartpole *env, uint64_t seed, uint64_t episode)
{
    omni_rng r;
    omni_rng_init(&r, seed, "cartpole", episode);
    env->x = 0.1 * (double)omni_rng_uniform(&r, 0) - 0.05;
    env->x_dot = 0.1 * (double)omni_rng_uniform(&r, 1) - 0.05;
    env->theta = 0.1 * (double)omni_rng_uniform(&r, 2) - 0.05;
    env->theta_dot = 0.1 * (double)omni_rng_uniform(&r, 3) - 0.05;
    env->t = 0;
    env->done = false;
}

void omni_cartpole_observe(const omni_cartpole *env, float obs[OMNI_CARTPOLE_OBS])
{
    obs[0] = (float)env->x;
    obs[1] = (float)env->x_dot;
    obs[2] = (float)env->theta;
    obs[3] = (float)env->theta_dot;
}

bool omni_cartpole_step(omni_cartpole *env, int32_t action)
{
    if (env->done)
        return true;
    double force = action == 1 ? FORCE : -FORCE;
    double c = cos(env->theta), s = sin(env->theta);
    double temp = (force + POLE_MASS_LENGTH * env->theta_dot * env->theta_dot * s) / TOTAL_MASS;
    double theta_acc =
        (GRAVITY * s - c * temp) / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * c * c / TOTAL_MASS));
    double x_acc = temp - POLE_MASS_LENGTH * theta_acc * c / TOTAL_MASS;
    env->x += TAU * env->x_dot;
    env->x_dot += TAU * x_acc;
    env->theta += TAU * env->theta_dot;
    env->theta_dot += TAU * theta_acc;
    env->t++;
    env->done = fabs(env->x) > X_LIMIT || fabs(env->theta) > THETA_LIMIT;
    return env->done;
}

int32_t omni_cartpole_expert(const float obs[OMNI_CARTPOLE_OBS])
{
    /* Bang-bang on a linear state feedback: push toward where the pole leans, with
     * small cart-position terms that keep the cart near the centre. */
    float u = 0.1f * obs[0] + 0.5f * obs[1] + 10.0f * obs[2] + 2.0f * obs[3];
    return u > 0 ? 1 : 0;
}

int64_t omni_cartpole_rollout(uint64_t seed, uint64_t episode, int64_t max_steps,
                              omni_policy_fn policy, void *ctx, float *obs, int32_t *act)
{
    omni_cartpole env;
    omni_cartpole_reset(&env, seed, episode);
    int64_t t = 0;
    while (t < max_steps) {
        float o[OMNI_CARTPOLE_OBS];
        omni_cartpole_observe(&env, o);
        int32_t a = policy(ctx, o, t);
        if (obs)
            for (int j = 0; j < OMNI_CARTPOLE_OBS; j++)
                obs[t * OMNI_CARTPOLE_OBS + j] = o[j];
        if (act)
            act[t] = a;
        t++;
        if (omni_cartpole_step(&env, a))
            break;
    }
    return t;
}
