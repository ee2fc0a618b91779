/* Quiet, per-handle libtiff message handlers for butterfly-onnx: the first error (or,
 * separately, the first warning) of a handle is formatted into the caller's buffer and
 * nothing is printed. */
#include <stdarg.h>
#include <stdio.h>
#include "tiffio.h"

struct bo_tiff_messages {
    char error[512];
    int errors;
    char warning[512];
    int warnings;
};

static void keep(char *out, int *count, const char *module, const char *fmt, va_list ap)
{
    if (*count == 0) {
        int n = 0;
        if (module != NULL) {
            n = snprintf(out, 512, "%s: ", module);
            if (n < 0 || n >= 512) n = 0;
        }
        vsnprintf(out + n, 512 - (size_t)n, fmt, ap);
    }
    *count += 1;
}

int bo_tiff_error(TIFF *tif, void *data, const char *module, const char *fmt, va_list ap)
{
    (void)tif;
    struct bo_tiff_messages *m = (struct bo_tiff_messages *)data;
    if (m != NULL) keep(m->error, &m->errors, module, fmt, ap);
    return 1;
}

int bo_tiff_warning(TIFF *tif, void *data, const char *module, const char *fmt, va_list ap)
{
    (void)tif;
    struct bo_tiff_messages *m = (struct bo_tiff_messages *)data;
    if (m != NULL) keep(m->warning, &m->warnings, module, fmt, ap);
    return 1;
}

/* Handles without options (none are opened here) would print through the global handlers. */
void bo_tiff_silence_globals(void)
{
    TIFFSetErrorHandler(NULL);
    TIFFSetWarningHandler(NULL);
}
