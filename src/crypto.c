/*
 * crypto — hashes, MACs, base64, HS256 JWTs, signature headers and sealed
 * secrets, on top of OpenSSL 3's EVP interfaces.
 *
 * No state is kept between calls, so every function may run on any thread.
 * An OpenSSL failure that can only mean a broken build or out of memory (a
 * digest that cannot be fetched, a context that cannot be allocated) aborts
 * with file:line, in line with util.h's out-of-memory policy; anything an
 * attacker or a user can cause (bad tokens, tampered blobs) is an error code.
 *
 * base64 is written out here rather than taken from EVP_EncodeBlock /
 * EVP_DecodeBlock: OpenSSL's decoder skips whitespace, tolerates junk around
 * padding and has no url-safe alphabet, and a signature check must not accept
 * several spellings of one token.
 */
#include "crypto.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "util.h"

#define OSSL_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            ossl_abort(__FILE__, __LINE__, #cond);                             \
    } while (0)

static void ossl_abort(const char *file, int line, const char *what)
{
    fprintf(stderr, "quern: %s:%d: OpenSSL failure: %s\n", file, line, what);
    abort();
}

/* SHA-256 fetched from the provider once: EVP_sha256() makes every
 * EVP_Digest fetch it again (a provider lookup under locks, more than the
 * hash of an API key itself costs). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void crypto_sha256(const void *data, size_t n, unsigned char out[32])
{
    unsigned int len = 0;
    pthread_once(&sha256_once, sha256_fetch);
    OSSL_CHECK(sha256_md);
    OSSL_CHECK(EVP_Digest(n ? data : "", n, out, &len, sha256_md, NULL) == 1);
    OSSL_CHECK(len == CRYPTO_SHA256_LEN);
}

void crypto_sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[CRYPTO_SHA256_LEN];
    crypto_sha256(data, n, md);
    hex_encode(md, sizeof(md), out);
}

/* Each thread remembers the hashes of the last keys presented to it: a
 * client sends the same key with every request, and its SHA-256 (~3.7 k
 * instructions through EVP) was paid on each.  Only the hash, a pure function
 * of the key, is remembered: whether the key is valid is asked of auth's
 * cache and the store as before, so a revocation is not delayed.  Keys are
 * compared in constant time; a longer one than KEYMEMO_LEN is not kept. */
#define KEYMEMO 4
#define KEYMEMO_LEN 256
static __thread struct {
    size_t len;   /* 0: empty */
    char key[KEYMEMO_LEN];
    char hex[65];
} keymemo[KEYMEMO];
static __thread unsigned keymemo_next;

void crypto_api_key_hash(const char *key, char out[65])
{
    size_t n = strlen(key);
    if (!n || n > KEYMEMO_LEN) {
        crypto_sha256_hex(key, n, out);
        return;
    }
    for (int i = 0; i < KEYMEMO; i++) {
        if (keymemo[i].len == n && ct_equal(keymemo[i].key, key, n)) {
            memcpy(out, keymemo[i].hex, 65);
            return;
        }
    }
    crypto_sha256_hex(key, n, out);
    unsigned k = keymemo_next++ % KEYMEMO;
    keymemo[k].len = n;
    memcpy(keymemo[k].key, key, n);
    memcpy(keymemo[k].hex, out, 65);
}

/* HMAC-SHA256 over the concatenation of nparts byte ranges, so that callers
 * signing "<t>.<body>" need not copy a body of many megabytes. */
struct part {
    const void *p;
    size_t n;
};

static void hmac_parts(const void *key, size_t klen, const struct part *parts, size_t nparts,
                       unsigned char out[32])
{
    static const unsigned char empty[1];
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    OSSL_CHECK(mac);
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    OSSL_CHECK(ctx);
    /* A zero-length key is legal HMAC; OpenSSL wants a non-NULL pointer. */
    OSSL_CHECK(EVP_MAC_init(ctx, klen ? key : empty, klen, params) == 1);
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].n)
            OSSL_CHECK(EVP_MAC_update(ctx, parts[i].p, parts[i].n) == 1);
    size_t len = 0;
    OSSL_CHECK(EVP_MAC_final(ctx, out, &len, CRYPTO_SHA256_LEN) == 1);
    OSSL_CHECK(len == CRYPTO_SHA256_LEN);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
}

void crypto_hmac_sha256(const void *key, size_t klen, const void *data, size_t n,
                        unsigned char out[32])
{
    struct part p = {data, n};
    hmac_parts(key, klen, &p, 1, out);
}

/* ---- base64 ---------------------------------------------------------- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *b64_encode(const unsigned char *in, size_t n, const char *alpha, bool pad)
{
    if (n > (SIZE_MAX / 4 - 2) * 3)
        abort(); /* cannot be in memory; treat like OOM */
    char *out = xmalloc((n + 2) / 3 * 4 + 1);
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        out[o++] = alpha[v & 63];
    }
    size_t rest = n - i;
    if (rest) {
        uint32_t v = (uint32_t)in[i] << 16 | (rest == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        if (rest == 2)
            out[o++] = alpha[v >> 6 & 63];
        else if (pad)
            out[o++] = '=';
        if (pad)
            out[o++] = '=';
    }
    out[o] = 0;
    return out;
}

static int b64_val(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes dlen characters of data (padding already stripped).  A final group
 * of 2 or 3 characters must leave its unused low bits zero, so that each byte
 * string has exactly one encoding. */
static int b64_decode(const char *s, size_t dlen, bool url, unsigned char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (dlen % 4 == 1)
        return -EINVAL;
    unsigned char *o = xmalloc(dlen / 4 * 3 + 3);
    size_t n = 0;
    uint32_t acc = 0;
    size_t k = 0;
    for (size_t i = 0; i < dlen; i++) {
        int v = b64_val((unsigned char)s[i], url);
        if (v < 0)
            goto bad;
        acc = acc << 6 | (uint32_t)v;
        if (++k == 4) {
            o[n++] = (unsigned char)(acc >> 16);
            o[n++] = (unsigned char)(acc >> 8);
            o[n++] = (unsigned char)acc;
            acc = 0;
            k = 0;
        }
    }
    if (k == 2) {
        if (acc & 0xf)
            goto bad;
        o[n++] = (unsigned char)(acc >> 4);
    } else if (k == 3) {
        if (acc & 0x3)
            goto bad;
        o[n++] = (unsigned char)(acc >> 10);
        o[n++] = (unsigned char)(acc >> 2);
    }
    o[n] = 0;
    *out = o;
    *outlen = n;
    return 0;
bad:
    free(o);
    return -EINVAL;
}

char *crypto_b64_encode(const void *data, size_t n)
{
    return b64_encode(data, n, b64_std, true);
}

int crypto_b64_decode(const char *s, size_t slen, unsigned char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (slen % 4 != 0)
        return -EINVAL;
    size_t pad = 0;
    if (slen >= 4 && s[slen - 1] == '=')
        pad = s[slen - 2] == '=' ? 2 : 1;
    /* Any other '=' is not in the alphabet and fails in b64_decode. */
    return b64_decode(s, slen - pad, false, out, outlen);
}

char *crypto_b64url_encode(const void *data, size_t n)
{
    return b64_encode(data, n, b64_url, false);
}

int crypto_b64url_decode(const char *s, size_t slen, unsigned char **out, size_t *outlen)
{
    return b64_decode(s, slen, true, out, outlen);
}

/* ---- HS256 JWT --------------------------------------------------------- */

char *crypto_jwt_sign(const json_t *claims, const void *key, size_t klen)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    if (!json_is_object(claims))
        return NULL;
    char *payload = json_dumps(claims, JSON_COMPACT);
    if (!payload)
        return NULL;
    char *h = crypto_b64url_encode(header, strlen(header));
    char *p = crypto_b64url_encode(payload, strlen(payload));
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "%s.%s", h, p);
    unsigned char mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(key, klen, b.data, b.len, mac);
    char *sig = crypto_b64url_encode(mac, sizeof(mac));
    buf_printf(&b, ".%s", sig);
    free(sig);
    free(h);
    free(p);
    free(payload);
    return buf_steal(&b);
}

/* Decodes one base64url JWT segment and parses it as a JSON object. */
static json_t *jwt_segment(const char *s, size_t len)
{
    unsigned char *raw;
    size_t rawlen;
    if (crypto_b64url_decode(s, len, &raw, &rawlen) < 0)
        return NULL;
    json_t *v = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

int crypto_jwt_verify(const char *token, const void *key, size_t klen, json_t **claims)
{
    json_t *header = NULL, *payload = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    int rc = -EINVAL;

    *claims = NULL;
    if (!token)
        return -EINVAL;
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d2 || strchr(d2 + 1, '.'))
        goto out;

    /* The header decides how to check the signature; only HS256 is ever
     * accepted, whatever the token asks for ("none", RS256, ...). */
    header = jwt_segment(token, (size_t)(d1 - token));
    if (!header)
        goto out;
    const char *alg = json_string_value(json_object_get(header, "alg"));
    if (!alg || strcmp(alg, "HS256") != 0)
        goto out;

    if (crypto_b64url_decode(d2 + 1, strlen(d2 + 1), &sig, &siglen) < 0 ||
        siglen != CRYPTO_SHA256_LEN)
        goto out;
    unsigned char mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(key, klen, token, (size_t)(d2 - token), mac);
    if (!ct_equal(mac, sig, sizeof(mac)))
        goto out;

    /* Only a correctly signed payload is parsed. */
    payload = jwt_segment(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!payload)
        goto out;
    json_t *exp = json_object_get(payload, "exp");
    if (exp) {
        if (!json_is_number(exp))
            goto out;
        int64_t now = now_ms() / 1000;
        bool expired = json_is_integer(exp) ? now >= json_integer_value(exp)
                                            : (double)now >= json_real_value(exp);
        if (expired) {
            rc = -ETIMEDOUT;
            goto out;
        }
    }
    *claims = payload;
    payload = NULL;
    rc = 0;
out:
    json_decref(header);
    json_decref(payload);
    free(sig);
    return rc;
}

/* ---- X-Quern-Signature ------------------------------------------------- */

static void sig_mac(const char *secret, int64_t t, const void *body, size_t n,
                    unsigned char out[32])
{
    char ts[32];
    int tl = snprintf(ts, sizeof(ts), "%" PRId64 ".", t);
    struct part parts[] = {{ts, (size_t)tl}, {body, n}};
    hmac_parts(secret, strlen(secret), parts, ARRAY_LEN(parts), out);
}

char *crypto_sig_header(const char *secret, int64_t t_secs, const void *body, size_t n)
{
    unsigned char mac[CRYPTO_SHA256_LEN];
    char hex[2 * CRYPTO_SHA256_LEN + 1];
    sig_mac(secret, t_secs, body, n, mac);
    hex_encode(mac, sizeof(mac), hex);
    return xasprintf("t=%" PRId64 ",sha256=%s", t_secs, hex);
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex_decode32(const char *s, size_t len, unsigned char out[32])
{
    if (len != 2 * CRYPTO_SHA256_LEN)
        return -EINVAL;
    for (size_t i = 0; i < CRYPTO_SHA256_LEN; i++) {
        int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* Several sha256= entries are allowed so that a secret can be rotated with
 * both signatures on the wire; more than this many is not a real sender. */
#define SIG_MAX_ENTRIES 8
#define SIG_MAX_HEADER 2048

int crypto_sig_verify(const char *header, const char *secret, const void *body, size_t n,
                      int64_t now_secs, int tolerance_s)
{
    int64_t t;
    return crypto_sig_verify_t(header, secret, body, n, now_secs, tolerance_s, &t);
}

int crypto_sig_verify_t(const char *header, const char *secret, const void *body, size_t n,
                        int64_t now_secs, int tolerance_s, int64_t *t_out)
{
    unsigned char sigs[SIG_MAX_ENTRIES][CRYPTO_SHA256_LEN];
    size_t nsig = 0;
    bool have_t = false;
    int64_t t = 0;

    if (!header || !secret || strnlen(header, SIG_MAX_HEADER + 1) > SIG_MAX_HEADER)
        return -EINVAL;
    for (const char *p = header; *p;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *next = comma ? comma + 1 : end;
        while (p < end && *p == ' ')
            p++;
        while (end > p && end[-1] == ' ')
            end--;
        size_t len = (size_t)(end - p);
        if (len >= 2 && memcmp(p, "t=", 2) == 0) {
            char num[24];
            if (have_t || len - 2 >= sizeof(num))
                return -EINVAL;
            memcpy(num, p + 2, len - 2);
            num[len - 2] = 0;
            if (parse_i64(num, &t) < 0)
                return -EINVAL;
            have_t = true;
        } else if (len >= 7 && memcmp(p, "sha256=", 7) == 0) {
            if (nsig == SIG_MAX_ENTRIES || hex_decode32(p + 7, len - 7, sigs[nsig]) < 0)
                return -EINVAL;
            nsig++;
        }
        /* Other entries are ignored, leaving room for future schemes. */
        p = next;
    }
    if (!have_t || nsig == 0)
        return -EINVAL;

    unsigned char mac[CRYPTO_SHA256_LEN];
    sig_mac(secret, t, body, n, mac);
    bool ok = false;
    for (size_t i = 0; i < nsig; i++)
        ok |= ct_equal(mac, sigs[i], sizeof(mac));
    if (!ok)
        return -EINVAL;
    *t_out = t;

    /* Staleness is judged only for a genuine signature, so a forger learns
     * nothing from the difference between -EINVAL and -ETIMEDOUT. */
    int64_t d;
    if (tolerance_s < 0)
        tolerance_s = 0;
    if (__builtin_sub_overflow(now_secs, t, &d) || d > tolerance_s || d < -(int64_t)tolerance_s)
        return -ETIMEDOUT;
    return 0;
}

/* ---- AES-256-GCM sealing ----------------------------------------------- */

unsigned char *crypto_seal(const unsigned char key[32], const void *pt, size_t n,
                           size_t *outlen)
{
    if (n > INT_MAX)
        return NULL;
    unsigned char *blob = xmalloc(n + CRYPTO_SEAL_OVERHEAD);
    unsigned char *nonce = blob, *ct = blob + CRYPTO_SEAL_NONCE_LEN, *tag = ct + n;
    random_bytes(nonce, CRYPTO_SEAL_NONCE_LEN);

    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    OSSL_CHECK(ctx);
    OSSL_CHECK(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1);
    int len = 0, fin = 0;
    if (n)
        OSSL_CHECK(EVP_EncryptUpdate(ctx, ct, &len, pt, (int)n) == 1);
    OSSL_CHECK(EVP_EncryptFinal_ex(ctx, ct + len, &fin) == 1);
    OSSL_CHECK((size_t)len + (size_t)fin == n);
    OSSL_CHECK(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_SEAL_TAG_LEN, tag) == 1);
    EVP_CIPHER_CTX_free(ctx);
    *outlen = n + CRYPTO_SEAL_OVERHEAD;
    return blob;
}

int crypto_open(const unsigned char key[32], const unsigned char *blob, size_t n,
                unsigned char **pt, size_t *ptlen)
{
    *pt = NULL;
    *ptlen = 0;
    if (n < CRYPTO_SEAL_OVERHEAD || n - CRYPTO_SEAL_OVERHEAD > INT_MAX)
        return -EINVAL;
    size_t ctlen = n - CRYPTO_SEAL_OVERHEAD;
    const unsigned char *nonce = blob, *ct = blob + CRYPTO_SEAL_NONCE_LEN;
    unsigned char tag[CRYPTO_SEAL_TAG_LEN];
    memcpy(tag, ct + ctlen, sizeof(tag));

    unsigned char *out = xmalloc(ctlen + 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    OSSL_CHECK(ctx);
    OSSL_CHECK(EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1);
    int len = 0, fin = 0;
    if (ctlen)
        OSSL_CHECK(EVP_DecryptUpdate(ctx, out, &len, ct, (int)ctlen) == 1);
    OSSL_CHECK(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, sizeof(tag), tag) == 1);
    int ok = EVP_DecryptFinal_ex(ctx, out + len, &fin);
    EVP_CIPHER_CTX_free(ctx);
    if (ok != 1) {
        /* GCM hands out plaintext before the tag is checked; do not leave
         * unauthenticated bytes lying in freed memory. */
        OPENSSL_cleanse(out, ctlen + 1);
        free(out);
        return -EINVAL;
    }
    out[ctlen] = 0;
    *pt = out;
    *ptlen = ctlen;
    return 0;
}
