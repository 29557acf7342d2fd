/*
 * fuzz_crypto — the decoders that read what clients send: strict base64 and
 * base64url, HS256 connection tokens, X-Quern-Signature headers, and sealed
 * secrets.  Checked: a decoder accepts only canonical text (decoding then
 * encoding gives the input back), nothing forged is accepted (a token or a
 * sealed blob can only be made with the key, which the input never has), and
 * a refusal leaves no result behind.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned char key[32] = "quern-fuzz-key-0123456789abcdef";

static void canonical(const char *s, size_t n, bool url)
{
    unsigned char *out = NULL;
    size_t len = 0;
    int rc = url ? crypto_b64url_decode(s, n, &out, &len) : crypto_b64_decode(s, n, &out, &len);
    if (rc != 0) {
        if (out)
            abort();
        return;
    }
    char *back = url ? crypto_b64url_encode(out, len) : crypto_b64_encode(out, len);
    if (strlen(back) != n || memcmp(back, s, n) != 0) {
        fprintf(stderr, "fuzz_crypto: %s decoder took non-canonical '%.*s'\n", url ? "b64url" : "b64",
                (int)n, s);
        abort();
    }
    free(back);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    canonical(s, size, false);
    canonical(s, size, true);

    json_t *claims = NULL;
    int rc = crypto_jwt_verify(s, key, sizeof key, &claims);
    if (rc == 0 || claims) {
        fprintf(stderr, "fuzz_crypto: a token not made with the key was accepted: %s\n", s);
        abort();
    }
    /* a token made with the key, then the input appended or spliced in */
    json_t *c = json_pack("{s:s, s:s#}", "sub", "run", "x", s, strlen(s));
    if (c) {
        char *tok = crypto_jwt_sign(c, key, sizeof key);
        if (!tok || crypto_jwt_verify(tok, key, sizeof key, &claims) != 0 || !json_equal(c, claims))
            abort();
        json_decref(claims);
        claims = NULL;
        free(tok);
        json_decref(c);
    }

    static const char body[] = "{\"event\":\"task_run.completed\"}";
    rc = crypto_sig_verify(s, "whsec_fuzz", body, sizeof body - 1, 1700000000, 300);
    if (rc == 0 && !strstr(s, "sha256=")) {
        fprintf(stderr, "fuzz_crypto: signature header without sha256= accepted: %s\n", s);
        abort();
    }

    unsigned char *pt = NULL;
    size_t ptlen = 0;
    if (crypto_open(key, data, size, &pt, &ptlen) == 0 || pt) {
        fprintf(stderr, "fuzz_crypto: a blob not sealed with the key was opened\n");
        abort();
    }
    size_t blen = 0;
    unsigned char *blob = crypto_seal(key, data, size, &blen);
    if (!blob || blen != size + CRYPTO_SEAL_OVERHEAD || crypto_open(key, blob, blen, &pt, &ptlen) != 0 ||
        ptlen != size || (size && memcmp(pt, data, size) != 0))
        abort();
    free(pt);
    free(blob);
    free(s);
    return 0;
}
