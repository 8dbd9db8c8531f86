/* Helpers shared by the meaoctl subcommands outside meaoctl.c. */
#include <stdarg.h>
#include <stdio.h>

#include "ctl/ctl.h"

int meaoctl_fail(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("meaoctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}
