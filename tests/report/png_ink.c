/*
 * png_ink FILE.png MIN_INK MIN_COLOUR: how much of a screenshot is drawn. Prints the share
 * of pixels that are not white ("ink") and the count of strongly coloured ones (saturation,
 * as in heatmap cells and coloured lines); exits 1 when either is below its minimum, so a
 * blank or colourless rendering fails the test.
 */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: png_ink FILE.png MIN_INK_SHARE MIN_COLOURED_PIXELS\n");
        return 2;
    }
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, argv[1])) {
        fprintf(stderr, "png_ink: %s: %s\n", argv[1], img.message);
        return 2;
    }
    img.format = PNG_FORMAT_RGB;
    size_t size = PNG_IMAGE_SIZE(img);
    unsigned char *px = malloc(size);
    if (!px || !png_image_finish_read(&img, NULL, px, 0, NULL)) {
        fprintf(stderr, "png_ink: %s: %s\n", argv[1], px ? img.message : "out of memory");
        free(px);
        return 2;
    }
    size_t n = (size_t)img.width * img.height, ink = 0, colour = 0;
    for (size_t i = 0; i < n; i++) {
        int r = px[3 * i], g = px[3 * i + 1], b = px[3 * i + 2];
        int mx = r > g ? (r > b ? r : b) : (g > b ? g : b);
        int mn = r < g ? (r < b ? r : b) : (g < b ? g : b);
        ink += mn < 245;
        colour += mx - mn > 80;
    }
    free(px);
    double share = n ? (double)ink / (double)n : 0.0;
    printf("%s: %ux%u, %.2f%% ink, %zu coloured pixels\n", argv[1], img.width, img.height,
           100.0 * share, colour);
    if (share < atof(argv[2]) || (double)colour < atof(argv[3])) {
        fprintf(stderr, "png_ink: %s looks blank: below %s ink or %s coloured pixels\n", argv[1],
                argv[2], argv[3]);
        return 1;
    }
    return 0;
}
