/* report: a growing text buffer for the page. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report_private.h"

void rtext_init(rtext *t)
{
    memset(t, 0, sizeof *t);
    t->ok = true;
}

void rtext_free(rtext *t)
{
    free(t->s);
    memset(t, 0, sizeof *t);
}

static bool reserve(rtext *t, size_t more)
{
    if (!t->ok)
        return false;
    if (t->len + more + 1 <= t->cap)
        return true;
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + more + 1)
        cap *= 2;
    char *s = realloc(t->s, cap);
    if (!s) {
        t->ok = false;
        return false;
    }
    t->s = s;
    t->cap = cap;
    return true;
}

void rtext_printf(rtext *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(t, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void rtext_puts(rtext *t, const char *s)
{
    size_t n = strlen(s);
    if (!reserve(t, n))
        return;
    memcpy(t->s + t->len, s, n + 1);
    t->len += n;
}

void rtext_escaped(rtext *t, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            rtext_puts(t, "&amp;");
            break;
        case '<':
            rtext_puts(t, "&lt;");
            break;
        case '>':
            rtext_puts(t, "&gt;");
            break;
        case '"':
            rtext_puts(t, "&quot;");
            break;
        case '\'':
            rtext_puts(t, "&#39;");
            break;
        default:
            /* control characters are not allowed in XML 1.0 */
            if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t')
                rtext_puts(t, "?");
            else
                rtext_printf(t, "%c", *s);
        }
    }
}
