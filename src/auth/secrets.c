#include "auth/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char kdf_ctx[crypto_kdf_CONTEXTBYTES] = {'m', 'e', 'a', 'o', 'k', 'e', 'y', 's'};

void meao_secrets_derive(const unsigned char master[MEAO_KEY_BYTES], struct meao_secrets *out)
{
    crypto_kdf_derive_from_key(out->token_key, sizeof out->token_key, 1, kdf_ctx, master);
    crypto_kdf_derive_from_key(out->pairing_key, sizeof out->pairing_key, 2, kdf_ctx, master);
    crypto_kdf_derive_from_key(out->content_key, sizeof out->content_key, 3, kdf_ctx, master);
}

void meao_secrets_wipe(struct meao_secrets *s)
{
    sodium_memzero(s, sizeof *s);
}

enum meao_err meao_secrets_create(const char *path, char *err, size_t errlen)
{
    unsigned char key[MEAO_KEY_BYTES];
    char hex[MEAO_KEY_BYTES * 2 + 2];
    int fd;
    ssize_t w;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "secret file %s: %s", path, strerror(errno));
        return errno == EEXIST ? MEAO_E_CONFLICT : MEAO_E_IO;
    }
    randombytes_buf(key, sizeof key);
    sodium_bin2hex(hex, sizeof hex, key, sizeof key);
    sodium_memzero(key, sizeof key);
    hex[MEAO_KEY_BYTES * 2] = '\n';
    w = write(fd, hex, MEAO_KEY_BYTES * 2 + 1);
    sodium_memzero(hex, sizeof hex);
    if (w != MEAO_KEY_BYTES * 2 + 1 || fsync(fd) != 0) {
        snprintf(err, errlen, "secret file %s: write failed", path);
        close(fd);
        unlink(path);
        return MEAO_E_IO;
    }
    close(fd);
    return MEAO_OK;
}

enum meao_err meao_secrets_load(const char *path, struct meao_secrets *out, char *err,
                                size_t errlen)
{
    unsigned char key[MEAO_KEY_BYTES];
    char hex[MEAO_KEY_BYTES * 2 + 8];
    size_t binlen = 0;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    enum meao_err e = MEAO_OK;

    if (fd < 0) {
        snprintf(err, errlen, "secret file %s: %s (run meaoctl init)", path, strerror(errno));
        return MEAO_E_UNAVAILABLE;
    }
    n = read(fd, hex, sizeof hex - 1);
    close(fd);
    if (n < MEAO_KEY_BYTES * 2) {
        snprintf(err, errlen, "secret file %s: too short", path);
        e = MEAO_E_UNAVAILABLE;
        goto out;
    }
    hex[n] = '\0';
    if (sodium_hex2bin(key, sizeof key, hex, (size_t)n, "\n\r ", &binlen, NULL) != 0 ||
        binlen != sizeof key) {
        snprintf(err, errlen, "secret file %s: expected %d hex characters", path,
                 MEAO_KEY_BYTES * 2);
        e = MEAO_E_UNAVAILABLE;
        goto out;
    }
    meao_secrets_derive(key, out);
out:
    sodium_memzero(key, sizeof key);
    sodium_memzero(hex, sizeof hex);
    return e;
}
