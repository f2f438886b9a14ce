/*
 * report: the drawing. Two kinds of figure, both plain SVG 1.1 with presentation
 * attributes (no CSS classes needed, no script, no external font): a line chart over steps
 * with nice ticks, axis labels and a legend, and a heatmap with numbers in its cells.
 * Sizes are in SVG user units; the page scales each figure to its column (viewBox).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "report_private.h"

const char *rsvg_color(int i)
{
    /* Okabe-Ito without the yellow (too faint on white paper), then darker extras */
    static const char *const c[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                    "#56B4E9", "#000000", "#8C564B", "#7F7F7F", "#17BECF"};
    return c[(i < 0 ? 0 : i) % (int)(sizeof c / sizeof c[0])];
}

const char *rsvg_dash(int i)
{
    static const char *const d[] = {"none", "7 4", "2 3", "10 3 2 3", "4 2 1 2 1 2"};
    return d[(i < 0 ? 0 : i) % (int)(sizeof d / sizeof d[0])];
}

enum { CW = 620, PLOT_H = 220, ML = 78, MR = 20, MT = 34, MB = 46, LEG_W = 180, LEG_H = 18 };

/* 1, 2 or 5 times a power of ten, near range / target. */
static double nice_step(double range, int target)
{
    double raw = range / target;
    double mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
}

/* A tick label with as many decimals as the tick step needs. */
static void tick_label(char *buf, size_t len, double v, double step)
{
    double a = fabs(step);
    if (fabs(v) < a * 1e-9)
        snprintf(buf, len, "0");
    else if (a < 1e-3 || fabs(v) >= 1e6)
        snprintf(buf, len, "%.1e", v);
    else {
        int dec = (int)ceil(-log10(a) - 1e-9);
        snprintf(buf, len, "%.*f", dec > 0 ? dec : 0, v);
    }
}

static void text_at(rtext *t, double x, double y, const char *anchor, const char *extra,
                    const char *s)
{
    rtext_printf(t, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, extra);
    rtext_escaped(t, s);
    rtext_puts(t, "</text>\n");
}

static void legend_rows(rtext *t, const rlegend *legend, int n, double y0)
{
    int per_row = (CW - ML) / LEG_W;
    for (int i = 0; i < n; i++) {
        double x = ML + (i % per_row) * LEG_W, y = y0 + (i / per_row) * LEG_H;
        const rlegend *g = &legend[i];
        if (g->dash < 0)
            rtext_printf(t, "<rect x=\"%.1f\" y=\"%.1f\" width=\"22\" height=\"8\" fill=\"%s\"/>\n",
                         x, y - 8, rsvg_color(g->color));
        else
            rtext_printf(t,
                         "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                         "stroke-width=\"2.2\" stroke-dasharray=\"%s\"/>\n",
                         x, y - 4, x + 24, y - 4, g->color < 0 ? "#333333" : rsvg_color(g->color),
                         rsvg_dash(g->dash));
        text_at(t, x + 30, y, "start", "", g->text);
    }
}

void rsvg_line_chart(rtext *t, const char *title, const char *ylabel, const rline *lines,
                     int n_lines, const rlegend *legend, int n_legend, bool percent, double x_first,
                     double x_last)
{
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    double scale = percent ? 100.0 : 1.0;
    for (int i = 0; i < n_lines; i++)
        for (int64_t j = 0; j < lines[i].s->n; j++) {
            double x = lines[i].s->x[j], y = lines[i].s->y[j] * scale;
            if (!isfinite(y))
                continue;
            xlo = fmin(xlo, x), xhi = fmax(xhi, x);
            ylo = fmin(ylo, y), yhi = fmax(yhi, y);
        }
    int per_row = (CW - ML) / LEG_W;
    int leg_rows = (n_legend + per_row - 1) / per_row;
    double height = MT + PLOT_H + MB + leg_rows * LEG_H + 8;
    rtext_printf(t,
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %.0f\" "
                 "width=\"%d\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\" "
                 "role=\"img\">\n<title>",
                 CW, height, CW, height);
    rtext_escaped(t, title);
    rtext_puts(t, "</title>\n");
    text_at(t, ML, 18, "start", " font-size=\"14\" font-weight=\"bold\"", title);
    if (!(xlo <= xhi)) {
        text_at(t, ML, MT + 40, "start", " fill=\"#555555\"", "no values logged");
        rtext_puts(t, "</svg>\n");
        return;
    }
    xlo = fmin(xlo, x_first), xhi = fmax(xhi, x_last);
    if (xhi - xlo < 1)
        xlo -= 1, xhi += 1;
    if (ylo >= 0 && ylo <= 0.3 * yhi)
        ylo = 0;
    if (ylo == 0 && yhi == 0)
        yhi = 1;
    if (yhi - ylo <= fabs(yhi) * 1e-9 || yhi == ylo) {
        double d = fabs(yhi) > 0 ? fabs(yhi) * 0.1 : 1.0;
        ylo -= d, yhi += d;
    }
    double pad = (yhi - ylo) * 0.04;
    if (ylo != 0)
        ylo -= pad;
    yhi += pad;
    double ys = nice_step(yhi - ylo, 5), xs = nice_step(xhi - xlo, 6);
    if (xs < 1)
        xs = 1;
    ylo = floor(ylo / ys) * ys, yhi = ceil(yhi / ys) * ys;
    const double pw = CW - ML - MR, ph = PLOT_H;
#define PX(x) (ML + ((x)-xlo) / (xhi - xlo) * pw)
#define PY(y) (MT + ph - ((y)-ylo) / (yhi - ylo) * ph)
    /* grid, ticks, labels */
    rtext_printf(t,
                 "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
                 "stroke=\"#999999\"/>\n",
                 ML, MT, pw, ph);
    char buf[64];
    for (double y = ylo; y <= yhi + ys * 1e-6; y += ys) {
        rtext_printf(t,
                     "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n",
                     ML, PY(y), ML + pw, PY(y));
        tick_label(buf, sizeof buf, y, ys);
        text_at(t, ML - 6, PY(y) + 4, "end", "", buf);
    }
    for (double x = ceil(xlo / xs) * xs; x <= xhi + xs * 1e-6; x += xs) {
        rtext_printf(t,
                     "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n",
                     PX(x), MT, PX(x), MT + ph);
        tick_label(buf, sizeof buf, x, xs);
        text_at(t, PX(x), MT + ph + 16, "middle", "", buf);
    }
    text_at(t, ML + pw / 2, MT + ph + 34, "middle", "", "step");
    rtext_printf(t, "<text transform=\"translate(14 %.1f) rotate(-90)\" text-anchor=\"middle\">",
                 MT + ph / 2);
    rtext_escaped(t, ylabel);
    rtext_puts(t, "</text>\n");
    /* the lines: a polyline per run of finite values; points drawn when they are few */
    for (int i = 0; i < n_lines; i++) {
        const rseries *s = lines[i].s;
        const char *col = rsvg_color(lines[i].color), *dash = rsvg_dash(lines[i].dash);
        bool dots = s->n <= 40;
        for (int64_t j = 0; j < s->n;) {
            while (j < s->n && !isfinite(s->y[j]))
                j++;
            int64_t k = j;
            while (k < s->n && isfinite(s->y[k]))
                k++;
            if (k - j >= 2) {
                rtext_printf(t,
                             "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" "
                             "stroke-dasharray=\"%s\" stroke-linejoin=\"round\" points=\"",
                             col, dash);
                for (int64_t q = j; q < k; q++)
                    rtext_printf(t, "%s%.1f,%.1f", q > j ? " " : "", PX(s->x[q]),
                                 PY(s->y[q] * scale));
                rtext_puts(t, "\"/>\n");
            }
            for (int64_t q = j; q < k && (dots || k - j == 1); q++)
                rtext_printf(t, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.6\" fill=\"%s\"/>\n",
                             PX(s->x[q]), PY(s->y[q] * scale), col);
            j = k;
        }
    }
#undef PX
#undef PY
    legend_rows(t, legend, n_legend, MT + ph + MB + 12);
    rtext_puts(t, "</svg>\n");
}

/* White to dark blue, through mid blue: a shade for f in [0, 1]. */
static void shade(char *buf, size_t len, double f)
{
    static const double stops[3][3] = {{255, 255, 255}, {107, 174, 214}, {8, 48, 107}};
    f = f < 0 ? 0 : f > 1 ? 1 : f;
    int a = f < 0.5 ? 0 : 1;
    double u = f < 0.5 ? f / 0.5 : (f - 0.5) / 0.5;
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = (int)lround(stops[a][i] + (stops[a + 1][i] - stops[a][i]) * u);
    snprintf(buf, len, "#%02x%02x%02x", c[0], c[1], c[2]);
}

void rsvg_heatmap(rtext *t, const char *title, const char *const *row_labels, int rows, int cols,
                  const double *v, double vmax, const double *side, const char *side_label,
                  const bool *dead, const char *note)
{
    const double lw = 96, cw = cols <= 8 ? 44 : cols <= 16 ? 30 : 20, ch = 24, top = 52;
    const double sw = side ? 64 : 0;
    double width = lw + cols * cw + sw + 20, height = top + rows * ch + 58;
    if (width < 360)
        width = 360;
    rtext_printf(t,
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" "
                 "width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"11\" "
                 "role=\"img\">\n<title>",
                 width, height, width, height);
    rtext_escaped(t, title);
    rtext_puts(t, "</title>\n");
    text_at(t, 4, 16, "start", " font-size=\"13\" font-weight=\"bold\"", title);
    char buf[64], col[16];
    for (int c = 0; c < cols; c++) {
        snprintf(buf, sizeof buf, "e%d", c);
        bool d = dead && dead[c];
        text_at(t, lw + c * cw + cw / 2, top - 8, "middle",
                d ? " fill=\"#C00000\" font-weight=\"bold\"" : "", buf);
        if (d)
            text_at(t, lw + c * cw + cw / 2, top - 22, "middle", " fill=\"#C00000\"", "dead");
    }
    if (side)
        text_at(t, lw + cols * cw + 8 + sw / 2, top - 8, "middle", "", side_label);
    for (int r = 0; r < rows; r++) {
        double y = top + r * ch;
        text_at(t, lw - 6, y + ch / 2 + 4, "end", "", row_labels[r]);
        for (int c = 0; c < cols; c++) {
            double x = lw + c * cw, val = v[(int64_t)r * cols + c];
            double f = vmax > 0 && isfinite(val) ? val / vmax : 0;
            shade(col, sizeof col, isfinite(val) ? f : 0);
            rtext_printf(t,
                         "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                         "fill=\"%s\" stroke=\"#ffffff\"/>\n",
                         x, y, cw, ch, isfinite(val) ? col : "#f4f4f4");
            if (!isfinite(val))
                continue;
            snprintf(buf, sizeof buf, "%.0f", 100 * val);
            text_at(t, x + cw / 2, y + ch / 2 + 4, "middle",
                    f > 0.55 ? " fill=\"#ffffff\"" : " fill=\"#222222\"", buf);
        }
        if (side) {
            if (isfinite(side[r]))
                snprintf(buf, sizeof buf, "%.2f", side[r]);
            else
                snprintf(buf, sizeof buf, "-");
            text_at(t, lw + cols * cw + 8 + sw / 2, y + ch / 2 + 4, "middle", "", buf);
        }
    }
    rtext_printf(t,
                 "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                 "stroke=\"#999999\"/>\n",
                 lw, top, cols * cw, rows * ch);
    /* the scale: five shades with their values */
    double ly = top + rows * ch + 16;
    for (int i = 0; i <= 4; i++) {
        shade(col, sizeof col, i / 4.0);
        rtext_printf(t,
                     "<rect x=\"%.1f\" y=\"%.1f\" width=\"30\" height=\"10\" fill=\"%s\" "
                     "stroke=\"#999999\" stroke-width=\"0.5\"/>\n",
                     lw + i * 34, ly, col);
        snprintf(buf, sizeof buf, "%.0f%%", 100 * vmax * i / 4.0);
        text_at(t, lw + i * 34 + 15, ly + 22, "middle", " font-size=\"10\"", buf);
    }
    if (note)
        text_at(t, lw + 5 * 34 + 8, ly + 9, "start", " font-size=\"10\" fill=\"#444444\"", note);
    rtext_puts(t, "</svg>\n");
}
