/*
 * The grid world of the demo's control tasks: an agent and a goal on a 4 x 4 grid, seen
 * as a picture (one image patch a cell at the demo's 32 x 32, patch 8: `gridworld`) or as
 * the agent's row and column (`gridworld_vec`), the same episodes either way; the
 * agent starts in any cell but the goal's, the bottom-right one (a goal that moved each
 * episode asks a tiny model to relate two patches, which 1000 steps of the test's model
 * did not learn); it moves up, down, left or right (walls stop it); reaching the goal pays 1 and
 * ends the episode, every other step costs 0.1, and an episode ends after 20 steps. The expert
 * walks straight to the goal (columns first), so its return is 1.1 - 0.1 * distance.
 */
#include "datasets.h"

void omni_gridworld_reset(omni_gridworld *g, uint64_t seed, uint64_t episode)
{
    omni_rng r;
    omni_rng_init(&r, seed, "gridworld", episode);
    int32_t n = OMNI_GRIDWORLD_SIDE * OMNI_GRIDWORLD_SIDE;
    int32_t a = (int32_t)(omni_rng_u32(&r, 0) % (uint32_t)(n - 1)); /* not on the goal */
    g->row = a / OMNI_GRIDWORLD_SIDE, g->col = a % OMNI_GRIDWORLD_SIDE;
    g->goal_row = g->goal_col = OMNI_GRIDWORLD_SIDE - 1;
    g->t = 0;
    g->done = false;
}

double omni_gridworld_step(omni_gridworld *g, int32_t action)
{
    if (g->done)
        return 0.0;
    static const int32_t dr[OMNI_GRIDWORLD_ACTIONS] = {-1, 1, 0, 0},
                         dc[OMNI_GRIDWORLD_ACTIONS] = {0, 0, -1, 1};
    int32_t r = g->row + dr[action], c = g->col + dc[action];
    if (r >= 0 && r < OMNI_GRIDWORLD_SIDE)
        g->row = r;
    if (c >= 0 && c < OMNI_GRIDWORLD_SIDE)
        g->col = c;
    g->t++;
    if (g->row == g->goal_row && g->col == g->goal_col) {
        g->done = true;
        return 1.0;
    }
    g->done = g->t >= OMNI_GRIDWORLD_STEPS;
    return -0.1;
}

int32_t omni_gridworld_expert(const omni_gridworld *g)
{
    if (g->col != g->goal_col)
        return g->col < g->goal_col ? 3 : 2;
    return g->row < g->goal_row ? 1 : 0;
}

void omni_gridworld_observe(const omni_gridworld *g, float *obs)
{
    const float last = (float)(OMNI_GRIDWORLD_SIDE - 1);
    obs[0] = 2.0f * (float)g->row / last - 1.0f;
    obs[1] = 2.0f * (float)g->col / last - 1.0f;
}

void omni_gridworld_render(const omni_gridworld *g, int32_t size, int32_t channels, uint8_t *px)
{
    /* Dark floor, the goal a green cell (grey 150 in one channel), the agent a white one;
     * each drawn with a dark border so that neighbouring cells stay apart. */
    static const uint8_t floor_rgb[3] = {30, 30, 30}, goal_rgb[3] = {60, 200, 60},
                         agent_rgb[3] = {240, 240, 240};
    for (int32_t y = 0; y < size; y++)
        for (int32_t x = 0; x < size; x++) {
            int32_t r = y * OMNI_GRIDWORLD_SIDE / size, c = x * OMNI_GRIDWORLD_SIDE / size;
            int32_t y0 = r * size / OMNI_GRIDWORLD_SIDE, y1 = (r + 1) * size / OMNI_GRIDWORLD_SIDE;
            int32_t x0 = c * size / OMNI_GRIDWORLD_SIDE, x1 = (c + 1) * size / OMNI_GRIDWORLD_SIDE;
            bool border = y == y0 || x == x0 || y == y1 - 1 || x == x1 - 1;
            const uint8_t *rgb = floor_rgb;
            if (!border && r == g->goal_row && c == g->goal_col)
                rgb = goal_rgb;
            if (!border && r == g->row && c == g->col)
                rgb = agent_rgb;
            uint8_t *o = px + ((int64_t)y * size + x) * channels;
            if (channels == 3)
                o[0] = rgb[0], o[1] = rgb[1], o[2] = rgb[2];
            else
                o[0] = (uint8_t)((299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000);
        }
}
