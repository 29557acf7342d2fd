/*
 * crypto — OpenSSL-backed primitives quern needs: SHA-256, HMAC-SHA256,
 * strict base64/base64url, HS256 JWTs (run connection tokens), the
 * X-Quern-Signature header (triggers in, webhooks out), API key hashing, and
 * AES-256-GCM sealing of secrets at rest.
 *
 * Every function is stateless and thread-safe.  Lengths that come from
 * outside are bounded by the caller; decoders reject anything that is not in
 * canonical form.
 */
#ifndef QUERN_CRYPTO_H
#define QUERN_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define CRYPTO_SHA256_LEN 32
#define CRYPTO_SEAL_NONCE_LEN 12
#define CRYPTO_SEAL_TAG_LEN 16
/* Bytes crypto_seal() adds to a plaintext. */
#define CRYPTO_SEAL_OVERHEAD (CRYPTO_SEAL_NONCE_LEN + CRYPTO_SEAL_TAG_LEN)

/* SHA-256 of n bytes into out. */
void crypto_sha256(const void *data, size_t n, unsigned char out[32]);
/* Lower-case hex SHA-256 of n bytes into out (64 characters and a NUL). */
void crypto_sha256_hex(const void *data, size_t n, char out[65]);
/* HMAC-SHA256 of n bytes under a key of klen bytes (klen may be 0) into out. */
void crypto_hmac_sha256(const void *key, size_t klen, const void *data, size_t n,
                        unsigned char out[32]);

/* Standard base64 with '=' padding; returns a malloc'd string the caller frees. */
char *crypto_b64_encode(const void *data, size_t n);
/* Decodes slen characters of standard, padded base64.  Strict: no whitespace,
 * length a multiple of 4, padding only at the end, unused bits zero.  Returns 0
 * with *out malloc'd (caller frees; NUL-terminated for convenience, not counted
 * in *outlen), or -EINVAL with *out NULL. */
int crypto_b64_decode(const char *s, size_t slen, unsigned char **out, size_t *outlen);
/* base64url (RFC 4648 §5) without padding; returns a malloc'd string. */
char *crypto_b64url_encode(const void *data, size_t n);
/* Decodes unpadded base64url as strictly as crypto_b64_decode ('=' is
 * rejected).  0 with *out malloc'd, or -EINVAL. */
int crypto_b64url_decode(const char *s, size_t slen, unsigned char **out, size_t *outlen);

/* Signs a claims object as an HS256 JWT; returns the malloc'd compact token
 * ("header.payload.signature"), or NULL when claims is not an object. */
char *crypto_jwt_sign(const json_t *claims, const void *key, size_t klen);
/* Verifies an HS256 JWT: 0 and *claims (a new reference the caller decrefs);
 * -EINVAL when malformed, signed with another key, or its header's alg is not
 * exactly "HS256" (so "none" is refused); -ETIMEDOUT when it carries an "exp"
 * (seconds) that is not after now_ms()/1000.  *claims is NULL on failure. */
int crypto_jwt_verify(const char *token, const void *key, size_t klen, json_t **claims);

/* The X-Quern-Signature value for a body sent at t_secs:
 * "t=<t_secs>,sha256=<hex HMAC-SHA256 of "<t_secs>.<body>" under secret>".
 * Returns a malloc'd string the caller frees. */
char *crypto_sig_header(const char *secret, int64_t t_secs, const void *body, size_t n);
/* Checks an X-Quern-Signature value against the body: 0 when one of its
 * sha256= entries matches (compared in constant time); -EINVAL when malformed
 * or no entry matches; -ETIMEDOUT when the signature is right but
 * |now_secs - t| > tolerance_s (replay protection; API.md uses 300). */
int crypto_sig_verify(const char *header, const char *secret, const void *body, size_t n,
                      int64_t now_secs, int tolerance_s);
/* The same, and *t_out is the signed t whenever the MAC matched (also on
 * -ETIMEDOUT): the header's own spelling (spaces, entry order, "+", leading
 * zeros, extra entries) does not change it, so "<t>.<body>" names the
 * signed message for replay detection. */
int crypto_sig_verify_t(const char *header, const char *secret, const void *body, size_t n,
                        int64_t now_secs, int tolerance_s, int64_t *t_out);

/* The stored form of an API key: the lower-case hex SHA-256 of the key string
 * into out.  A fast unsalted hash is right here: keys are 32+ random bytes, so
 * there is nothing to brute-force and a slow KDF would only tax every request. */
void crypto_api_key_hash(const char *key, char out[65]);

/* Encrypts n bytes with AES-256-GCM under a 32-byte key and a fresh random
 * nonce.  Returns a malloc'd blob nonce(12) || ciphertext(n) || tag(16) with
 * *outlen set (n + CRYPTO_SEAL_OVERHEAD); NULL only when n is over INT_MAX. */
unsigned char *crypto_seal(const unsigned char key[32], const void *pt, size_t n,
                           size_t *outlen);
/* Decrypts and authenticates a crypto_seal() blob: 0 with *pt malloc'd (caller
 * frees; NUL-terminated, not counted in *ptlen), or -EINVAL when the blob is
 * short, tampered with, or sealed under another key (*pt NULL). */
int crypto_open(const unsigned char key[32], const unsigned char *blob, size_t n,
                unsigned char **pt, size_t *ptlen);

#endif
