#include "t.h"
#include "crypto.h"
#include "util.h"
#include <errno.h>

static void hex32(const unsigned char in[32], char out[65])
{
    hex_encode(in, 32, out);
}

TEST(sha256_abc)
{
    unsigned char md[32];
    char hex[65];
    crypto_sha256("abc", 3, md);
    hex32(md, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    crypto_sha256_hex("abc", 3, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    crypto_sha256_hex(NULL, 0, hex);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(hmac_rfc4231_case2)
{
    unsigned char mac[32];
    char hex[65];
    const char *data = "what do ya want for nothing?";
    crypto_hmac_sha256("Jefe", 4, data, strlen(data), mac);
    hex32(mac, hex);
    CHECK_EQ_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(hmac_empty_key_works)
{
    unsigned char a[32], b[32];
    crypto_hmac_sha256(NULL, 0, "x", 1, a);
    crypto_hmac_sha256("", 0, "x", 1, b);
    CHECK(memcmp(a, b, 32) == 0);
}

TEST(api_key_hash_is_hex_sha256)
{
    char h[65];
    crypto_api_key_hash("abc", h);
    CHECK_EQ_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* RFC 4648 §10 vectors, both directions. */
TEST(b64_rfc4648_vectors)
{
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (size_t i = 0; i < ARRAY_LEN(in); i++) {
        char *e = crypto_b64_encode(in[i], strlen(in[i]));
        CHECK_EQ_STR(e, std[i]);
        free(e);
        e = crypto_b64url_encode(in[i], strlen(in[i]));
        CHECK_EQ_STR(e, url[i]);
        free(e);
        unsigned char *d;
        size_t n;
        CHECK_EQ_INT(crypto_b64_decode(std[i], strlen(std[i]), &d, &n), 0);
        CHECK_EQ_INT(n, strlen(in[i]));
        CHECK(d && memcmp(d, in[i], n) == 0);
        free(d);
        CHECK_EQ_INT(crypto_b64url_decode(url[i], strlen(url[i]), &d, &n), 0);
        CHECK_EQ_INT(n, strlen(in[i]));
        CHECK(d && memcmp(d, in[i], n) == 0);
        free(d);
    }
}

TEST(b64_alphabets_differ)
{
    const unsigned char raw[] = {0xfb, 0xff, 0xbf};
    char *s = crypto_b64_encode(raw, 3), *u = crypto_b64url_encode(raw, 3);
    CHECK_EQ_STR(s, "+/+/");
    CHECK_EQ_STR(u, "-_-_");
    unsigned char *d;
    size_t n;
    CHECK_EQ_INT(crypto_b64_decode(u, strlen(u), &d, &n), -EINVAL);
    CHECK(d == NULL);
    CHECK_EQ_INT(crypto_b64url_decode(s, strlen(s), &d, &n), -EINVAL);
    free(s);
    free(u);
}

TEST(b64_is_strict)
{
    static const char *bad_std[] = {
        "Zg",        /* missing padding */
        "Zg=",       /* short padding */
        "Zm9v\n",    /* whitespace */
        " Zm9v",     /* whitespace */
        "Zm9v====",  /* too much padding */
        "Z===",      /* padding too early */
        "Zg==Zg==",  /* padding in the middle */
        "Zh==",      /* non-zero unused bits */
        "Zm9=",      /* non-zero unused bits */
        "Zm9v*A==",  /* bad character */
        "Zm-_",      /* url alphabet */
    };
    static const char *bad_url[] = {
        "Zg==",  /* padding */
        "Z",     /* impossible length */
        "Zm9vY", /* impossible length */
        "Zh",    /* non-zero unused bits */
        "Zm+/",  /* std alphabet */
        "Zm 9",  /* space */
    };
    unsigned char *d;
    size_t n;
    for (size_t i = 0; i < ARRAY_LEN(bad_std); i++) {
        int rc = crypto_b64_decode(bad_std[i], strlen(bad_std[i]), &d, &n);
        if (rc != -EINVAL)
            fprintf(stderr, "  accepted std \"%s\"\n", bad_std[i]);
        CHECK_EQ_INT(rc, -EINVAL);
    }
    for (size_t i = 0; i < ARRAY_LEN(bad_url); i++) {
        int rc = crypto_b64url_decode(bad_url[i], strlen(bad_url[i]), &d, &n);
        if (rc != -EINVAL)
            fprintf(stderr, "  accepted url \"%s\"\n", bad_url[i]);
        CHECK_EQ_INT(rc, -EINVAL);
    }
    /* An embedded NUL inside slen is a bad character, not a terminator. */
    CHECK_EQ_INT(crypto_b64_decode("Zm9v\0\0\0\0", 8, &d, &n), -EINVAL);
    /* slen bounds the input: a longer string is cut where the caller says. */
    CHECK_EQ_INT(crypto_b64_decode("Zm9vYmFy", 4, &d, &n), 0);
    CHECK_EQ_INT(n, 3);
    CHECK(memcmp(d, "foo", 3) == 0);
    free(d);
}

TEST(b64_binary_roundtrip)
{
    unsigned char raw[256];
    for (int i = 0; i < 256; i++)
        raw[i] = (unsigned char)i;
    for (size_t len = 0; len <= sizeof(raw); len += 37) {
        char *s = crypto_b64_encode(raw, len), *u = crypto_b64url_encode(raw, len);
        unsigned char *d;
        size_t n;
        CHECK_EQ_INT(crypto_b64_decode(s, strlen(s), &d, &n), 0);
        CHECK(n == len && memcmp(d, raw, len) == 0);
        free(d);
        CHECK_EQ_INT(crypto_b64url_decode(u, strlen(u), &d, &n), 0);
        CHECK(n == len && memcmp(d, raw, len) == 0);
        free(d);
        free(s);
        free(u);
    }
}

static const char jwtio_key[] = "your-256-bit-secret";
static const char jwtio_token[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

TEST(jwt_matches_known_token)
{
    json_t *claims = json_pack("{s:s, s:s, s:I}", "sub", "1234567890", "name", "John Doe",
                               "iat", (json_int_t)1516239022);
    char *tok = crypto_jwt_sign(claims, jwtio_key, strlen(jwtio_key));
    CHECK_EQ_STR(tok, jwtio_token);
    free(tok);
    json_decref(claims);

    json_t *out = NULL;
    CHECK_EQ_INT(crypto_jwt_verify(jwtio_token, jwtio_key, strlen(jwtio_key), &out), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(out, "name")), "John Doe");
    json_decref(out);
}

TEST(jwt_roundtrip)
{
    const char key[] = "0123456789abcdef0123456789abcdef";
    util_fake_now_ms = 1700000000000LL;
    json_t *claims = json_pack("{s:s, s:I, s:[s]}", "run_id", "run_abc", "exp",
                               (json_int_t)1700000000 + 86400, "scope", "stream");
    char *tok = crypto_jwt_sign(claims, key, 32);
    CHECK(tok != NULL);
    json_t *out = NULL;
    CHECK_EQ_INT(crypto_jwt_verify(tok, key, 32, &out), 0);
    CHECK(json_equal(out, claims));
    json_decref(out);
    /* A different key fails. */
    out = (json_t *)1;
    CHECK_EQ_INT(crypto_jwt_verify(tok, "other", 5, &out), -EINVAL);
    CHECK(out == NULL);
    free(tok);
    json_decref(claims);
    /* Non-objects are not signed. */
    json_t *arr = json_array();
    CHECK(crypto_jwt_sign(arr, key, 32) == NULL);
    json_decref(arr);
    util_fake_now_ms = 0;
}

/* Replaces the payload segment of a token with b64url(payload). */
static char *with_payload(const char *tok, const char *payload)
{
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    char *p = crypto_b64url_encode(payload, strlen(payload));
    char *t = xasprintf("%.*s.%s%s", (int)(d1 - tok), tok, p, d2);
    free(p);
    return t;
}

TEST(jwt_tampered_rejected)
{
    json_t *claims = json_pack("{s:s}", "run_id", "run_a");
    char *tok = crypto_jwt_sign(claims, "k", 1);
    json_t *out = NULL;

    char *t2 = with_payload(tok, "{\"run_id\":\"run_b\"}");
    CHECK_EQ_INT(crypto_jwt_verify(t2, "k", 1, &out), -EINVAL);
    free(t2);

    /* Flip one signature character. */
    t2 = xstrdup(tok);
    char *last = t2 + strlen(t2) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    CHECK_EQ_INT(crypto_jwt_verify(t2, "k", 1, &out), -EINVAL);
    free(t2);

    /* Structural garbage. */
    static const char *bad[] = {"", ".", "..", "a.b", "a.b.c.d", "abc", "x.y.z"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        CHECK_EQ_INT(crypto_jwt_verify(bad[i], "k", 1, &out), -EINVAL);
    t2 = xasprintf("%s.", tok);
    CHECK_EQ_INT(crypto_jwt_verify(t2, "k", 1, &out), -EINVAL);
    free(t2);
    CHECK_EQ_INT(crypto_jwt_verify(NULL, "k", 1, &out), -EINVAL);
    CHECK(out == NULL);
    free(tok);
    json_decref(claims);
}

TEST(jwt_expired_is_etimedout)
{
    json_t *claims = json_pack("{s:s, s:I}", "sub", "x", "exp", (json_int_t)1000);
    char *tok = crypto_jwt_sign(claims, "k", 1);
    json_t *out = NULL;
    util_fake_now_ms = 999000;
    CHECK_EQ_INT(crypto_jwt_verify(tok, "k", 1, &out), 0);
    json_decref(out);
    util_fake_now_ms = 1000000; /* exp is exclusive: at exp the token is dead */
    CHECK_EQ_INT(crypto_jwt_verify(tok, "k", 1, &out), -ETIMEDOUT);
    CHECK(out == NULL);
    util_fake_now_ms = 0; /* the real clock is far past 1970 */
    CHECK_EQ_INT(crypto_jwt_verify(tok, "k", 1, &out), -ETIMEDOUT);
    free(tok);
    json_decref(claims);

    /* A non-numeric exp is malformed. */
    claims = json_pack("{s:s}", "exp", "tomorrow");
    tok = crypto_jwt_sign(claims, "k", 1);
    CHECK_EQ_INT(crypto_jwt_verify(tok, "k", 1, &out), -EINVAL);
    free(tok);
    json_decref(claims);
}

TEST(jwt_alg_none_rejected)
{
    char *h = crypto_b64url_encode("{\"alg\":\"none\",\"typ\":\"JWT\"}", 27);
    char *p = crypto_b64url_encode("{\"sub\":\"admin\"}", 15);
    json_t *out = NULL;

    /* The classic unsigned token. */
    char *tok = xasprintf("%s.%s.", h, p);
    CHECK_EQ_INT(crypto_jwt_verify(tok, "k", 1, &out), -EINVAL);
    free(tok);

    /* Even with a correct HS256 MAC, a header that does not say HS256 fails. */
    char *input = xasprintf("%s.%s", h, p);
    unsigned char mac[32];
    crypto_hmac_sha256("k", 1, input, strlen(input), mac);
    char *sig = crypto_b64url_encode(mac, 32);
    tok = xasprintf("%s.%s", input, sig);
    CHECK_EQ_INT(crypto_jwt_verify(tok, "k", 1, &out), -EINVAL);
    CHECK(out == NULL);
    free(tok);
    free(sig);
    free(input);
    free(h);
    free(p);
}

TEST(sig_header_roundtrip)
{
    const char *body = "{\"event\":\"task.created\"}";
    char *hdr = crypto_sig_header("whsec", 1700000000, body, strlen(body));
    CHECK(strncmp(hdr, "t=1700000000,sha256=", 20) == 0);
    CHECK_EQ_INT(strlen(hdr), 20 + 64);

    /* The MAC is HMAC-SHA256 of "<t>.<body>", as API.md documents. */
    char *signed_str = xasprintf("1700000000.%s", body);
    unsigned char mac[32];
    char hex[65];
    crypto_hmac_sha256("whsec", 5, signed_str, strlen(signed_str), mac);
    hex32(mac, hex);
    CHECK_EQ_STR(hdr + 20, hex);
    free(signed_str);

    CHECK_EQ_INT(crypto_sig_verify(hdr, "whsec", body, strlen(body), 1700000000, 300), 0);
    CHECK_EQ_INT(crypto_sig_verify(hdr, "whsec", body, strlen(body), 1700000300, 300), 0);
    CHECK_EQ_INT(crypto_sig_verify(hdr, "whsec", body, strlen(body), 1699999700, 300), 0);

    /* Upper-case hex, spaces after commas, unknown entries and a second
     * (rotated-out) signature are all tolerated. */
    char *up = xstrdup(hdr);
    for (char *c = up + 20; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    char *multi = xasprintf("t=1700000000, v0=zzz, sha256=%064d, %s", 0, up + 13);
    CHECK_EQ_INT(crypto_sig_verify(up, "whsec", body, strlen(body), 1700000000, 300), 0);
    CHECK_EQ_INT(crypto_sig_verify(multi, "whsec", body, strlen(body), 1700000000, 300), 0);
    /* every spelling names the same signed t (the replay key of /hooks) */
    int64_t t = 0;
    CHECK_EQ_INT(crypto_sig_verify_t(multi, "whsec", body, strlen(body), 1700000000, 300, &t), 0);
    CHECK_EQ_INT(t, 1700000000);
    t = 0;
    CHECK_EQ_INT(crypto_sig_verify_t(hdr, "whsec", body, strlen(body), 1700000301, 300, &t),
                 -ETIMEDOUT);
    CHECK_EQ_INT(t, 1700000000);
    free(up);
    free(multi);

    /* Empty bodies are signable. */
    char *e = crypto_sig_header("s", 5, "", 0);
    CHECK_EQ_INT(crypto_sig_verify(e, "s", NULL, 0, 5, 300), 0);
    free(e);
    free(hdr);
}

TEST(sig_wrong_secret_or_body)
{
    const char *body = "payload";
    char *hdr = crypto_sig_header("right", 100, body, 7);
    CHECK_EQ_INT(crypto_sig_verify(hdr, "wrong", body, 7, 100, 300), -EINVAL);
    CHECK_EQ_INT(crypto_sig_verify(hdr, "right", "paylaod", 7, 100, 300), -EINVAL);
    CHECK_EQ_INT(crypto_sig_verify(hdr, "right", body, 6, 100, 300), -EINVAL);
    /* The timestamp is signed: changing it breaks the signature. */
    char *moved = xasprintf("t=101%s", hdr + 5);
    CHECK_EQ_INT(crypto_sig_verify(moved, "right", body, 7, 101, 300), -EINVAL);
    free(moved);
    free(hdr);
}

TEST(sig_stale_timestamp)
{
    char *hdr = crypto_sig_header("s", 1700000000, "b", 1);
    CHECK_EQ_INT(crypto_sig_verify(hdr, "s", "b", 1, 1700000301, 300), -ETIMEDOUT);
    CHECK_EQ_INT(crypto_sig_verify(hdr, "s", "b", 1, 1699999699, 300), -ETIMEDOUT);
    free(hdr);
    /* Extreme timestamps do not overflow the comparison. */
    hdr = crypto_sig_header("s", INT64_MIN, "b", 1);
    CHECK_EQ_INT(crypto_sig_verify(hdr, "s", "b", 1, INT64_MAX, 300), -ETIMEDOUT);
    free(hdr);
}

TEST(sig_malformed)
{
    static const char *bad[] = {
        "",
        "t=1",
        "sha256=" "0000000000000000000000000000000000000000000000000000000000000000",
        "t=abc,sha256=0000000000000000000000000000000000000000000000000000000000000000",
        "t=1,sha256=00",
        "t=1,sha256=zz00000000000000000000000000000000000000000000000000000000000000",
        "t=1,t=1,sha256=0000000000000000000000000000000000000000000000000000000000000000",
        "garbage",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        CHECK_EQ_INT(crypto_sig_verify(bad[i], "s", "b", 1, 1, 300), -EINVAL);
    CHECK_EQ_INT(crypto_sig_verify(NULL, "s", "b", 1, 1, 300), -EINVAL);
}

TEST(seal_open_roundtrip)
{
    unsigned char key[32];
    random_bytes(key, sizeof(key));
    const char *secret = "sk_live_very_secret";
    size_t n = 0;
    unsigned char *blob = crypto_seal(key, secret, strlen(secret), &n);
    CHECK_EQ_INT(n, strlen(secret) + CRYPTO_SEAL_OVERHEAD);
    CHECK(memmem(blob, n, secret, strlen(secret)) == NULL);

    unsigned char *pt;
    size_t ptlen;
    CHECK_EQ_INT(crypto_open(key, blob, n, &pt, &ptlen), 0);
    CHECK_EQ_INT(ptlen, strlen(secret));
    CHECK_EQ_STR((char *)pt, secret);
    free(pt);

    /* Fresh nonces: sealing twice gives different blobs. */
    size_t n2;
    unsigned char *blob2 = crypto_seal(key, secret, strlen(secret), &n2);
    CHECK(n2 == n && memcmp(blob, blob2, n) != 0);
    free(blob2);
    free(blob);

    /* Empty and binary values. */
    blob = crypto_seal(key, "", 0, &n);
    CHECK_EQ_INT(n, CRYPTO_SEAL_OVERHEAD);
    CHECK_EQ_INT(crypto_open(key, blob, n, &pt, &ptlen), 0);
    CHECK_EQ_INT(ptlen, 0);
    free(pt);
    free(blob);
    const unsigned char bin[] = {0, 1, 2, 0, 255};
    blob = crypto_seal(key, bin, sizeof(bin), &n);
    CHECK_EQ_INT(crypto_open(key, blob, n, &pt, &ptlen), 0);
    CHECK(ptlen == sizeof(bin) && memcmp(pt, bin, sizeof(bin)) == 0);
    free(pt);
    free(blob);
}

TEST(seal_open_tamper)
{
    unsigned char key[32], other[32];
    random_bytes(key, sizeof(key));
    memcpy(other, key, sizeof(key));
    other[31] ^= 1;
    size_t n;
    unsigned char *blob = crypto_seal(key, "hello world", 11, &n);
    unsigned char *pt;
    size_t ptlen;

    /* Every single-bit flip anywhere (nonce, ciphertext, tag) is caught. */
    for (size_t i = 0; i < n; i++) {
        blob[i] ^= 0x10;
        pt = (unsigned char *)1;
        CHECK_EQ_INT(crypto_open(key, blob, n, &pt, &ptlen), -EINVAL);
        CHECK(pt == NULL);
        blob[i] ^= 0x10;
    }
    CHECK_EQ_INT(crypto_open(other, blob, n, &pt, &ptlen), -EINVAL);
    CHECK_EQ_INT(crypto_open(key, blob, n - 1, &pt, &ptlen), -EINVAL);
    CHECK_EQ_INT(crypto_open(key, blob, CRYPTO_SEAL_OVERHEAD - 1, &pt, &ptlen), -EINVAL);
    CHECK_EQ_INT(crypto_open(key, blob, 0, &pt, &ptlen), -EINVAL);
    CHECK_EQ_INT(crypto_open(key, blob, n, &pt, &ptlen), 0);
    free(pt);
    free(blob);
}

/* The hashes of recent keys are remembered per thread: keys seen again, keys
 * that differ in their last byte only, more keys than are remembered, and a
 * key too long to remember all still hash to their own SHA-256. */
TEST(api_key_hash_remembered_keys_stay_exact)
{
    char keys[7][300];
    for (int i = 0; i < 6; i++)
        snprintf(keys[i], sizeof keys[i], "qk_%064d", i);
    memset(keys[6], 'k', 299);
    keys[6][299] = 0;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 7; i++) {
            char got[65], want[65];
            crypto_api_key_hash(keys[i], got);
            crypto_sha256_hex(keys[i], strlen(keys[i]), want);
            CHECK_EQ_STR(got, want);
        }
    }
    char a[65], b[65];
    crypto_api_key_hash("qk_abc1", a);
    crypto_api_key_hash("qk_abc2", b);
    CHECK(strcmp(a, b) != 0);
    crypto_api_key_hash("qk_abc1", b);
    CHECK_EQ_STR(b, a);
}
