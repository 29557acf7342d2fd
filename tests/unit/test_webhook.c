/*
 * test_webhook — the pure pieces of webhook.c (address classes for the
 * request-forgery check, backoff, event filters, URL checks), policy.c's
 * parse/check, and secrets.c's key file and sealing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "t.h"

#include "policy.h"
#include "secrets.h"
#include "util.h"
#include "webhook.h"

static const char *cls(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
    } else {
        fprintf(stderr, "  bad test address %s\n", text);
        abort();
    }
    const char *c = webhook_addr_class((struct sockaddr *)&ss);
    return c ? c : "public";
}

TEST(addr_ipv4)
{
    CHECK_EQ_STR(cls("127.0.0.1"), "loopback");
    CHECK_EQ_STR(cls("127.255.1.2"), "loopback");
    CHECK_EQ_STR(cls("10.1.2.3"), "private");
    CHECK_EQ_STR(cls("172.16.0.1"), "private");
    CHECK_EQ_STR(cls("172.31.255.255"), "private");
    CHECK_EQ_STR(cls("172.32.0.1"), "public");
    CHECK_EQ_STR(cls("172.15.255.255"), "public");
    CHECK_EQ_STR(cls("192.168.1.1"), "private");
    CHECK_EQ_STR(cls("100.64.0.1"), "private");
    CHECK_EQ_STR(cls("100.128.0.1"), "public");
    CHECK_EQ_STR(cls("169.254.169.254"), "link-local");
    CHECK_EQ_STR(cls("0.0.0.0"), "unspecified");
    CHECK_EQ_STR(cls("224.0.0.1"), "multicast");
    CHECK_EQ_STR(cls("239.255.255.250"), "multicast");
    CHECK_EQ_STR(cls("255.255.255.255"), "reserved");
    CHECK_EQ_STR(cls("198.18.0.1"), "reserved");
    CHECK_EQ_STR(cls("8.8.8.8"), "public");
    CHECK_EQ_STR(cls("93.184.216.34"), "public");
    CHECK_EQ_STR(cls("192.169.0.1"), "public");
}

TEST(addr_ipv6)
{
    CHECK_EQ_STR(cls("::1"), "loopback");
    CHECK_EQ_STR(cls("::"), "unspecified");
    CHECK_EQ_STR(cls("fe80::1"), "link-local");
    CHECK_EQ_STR(cls("febf::1"), "link-local");
    CHECK_EQ_STR(cls("fc00::1"), "private");
    CHECK_EQ_STR(cls("fd12:3456::1"), "private");
    CHECK_EQ_STR(cls("fec0::1"), "private");
    CHECK_EQ_STR(cls("ff02::1"), "multicast");
    CHECK_EQ_STR(cls("2001:4860:4860::8888"), "public");
    CHECK_EQ_STR(cls("2606:4700::1111"), "public");
    /* IPv4 inside IPv6 is judged by the IPv4 address */
    CHECK_EQ_STR(cls("::ffff:127.0.0.1"), "loopback");
    CHECK_EQ_STR(cls("::ffff:10.0.0.1"), "private");
    CHECK_EQ_STR(cls("::ffff:8.8.8.8"), "public");
    CHECK_EQ_STR(cls("::127.0.0.1"), "loopback");
    CHECK_EQ_STR(cls("64:ff9b::169.254.169.254"), "link-local");
    CHECK_EQ_STR(cls("2002:c0a8:0101::1"), "private");   /* 6to4 of 192.168.1.1 */
    CHECK_EQ_STR(cls("2002:0808:0808::1"), "public");
    /* SIIT ::ffff:0:a.b.c.d is judged by its IPv4 too; local-use NAT64,
     * Teredo, documentation and discard prefixes are not the internet */
    CHECK_EQ_STR(cls("::ffff:0:127.0.0.1"), "loopback");
    CHECK_EQ_STR(cls("::ffff:0:10.1.2.3"), "private");
    CHECK_EQ_STR(cls("::ffff:0:8.8.8.8"), "public");
    CHECK_EQ_STR(cls("64:ff9b:1::a00:1"), "private");
    CHECK_EQ_STR(cls("2001:0:4136:e378:8000:63bf:3fff:fdd2"), "reserved");
    CHECK_EQ_STR(cls("2001:db8::1"), "reserved");
    CHECK_EQ_STR(cls("100::1"), "reserved");
    CHECK_EQ_STR(cls("2001:4860::1"), "public");
    CHECK_EQ_STR(cls("101::1"), "public");
}

TEST(addr_other_family)
{
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNIX;
    CHECK(webhook_addr_class(&sa) != NULL);
}

TEST(backoff)
{
    CHECK_EQ_INT(webhook_backoff_ms(1, 1000), 1000);
    CHECK_EQ_INT(webhook_backoff_ms(2, 1000), 2000);
    CHECK_EQ_INT(webhook_backoff_ms(3, 1000), 4000);
    CHECK_EQ_INT(webhook_backoff_ms(12, 1000), 2048000);
    CHECK_EQ_INT(webhook_backoff_ms(13, 1000), 3600000);   /* capped at 1 h */
    CHECK_EQ_INT(webhook_backoff_ms(1000, 1000), 3600000);
    CHECK_EQ_INT(webhook_backoff_ms(0, 50), 50);
    CHECK_EQ_INT(webhook_backoff_ms(3, 50), 200);
}

TEST(patterns)
{
    CHECK(webhook_pattern_match("*", "task.created"));
    CHECK(webhook_pattern_match("task_run.*", "task_run.completed"));
    CHECK(!webhook_pattern_match("task_run.*", "task.created"));
    CHECK(!webhook_pattern_match("task.*", "task_run.completed"));
    CHECK(webhook_pattern_match("task.*", "task.deleted"));
    CHECK(webhook_pattern_match("task.created", "task.created"));
    CHECK(!webhook_pattern_match("task.created", "task.created2"));
    CHECK(webhook_pattern_ok("*"));
    CHECK(webhook_pattern_ok("task_run.*"));
    CHECK(webhook_pattern_ok("task.*"));
    CHECK(webhook_pattern_ok("task_run.failed"));
    CHECK(!webhook_pattern_ok("task_run.nope"));
    CHECK(!webhook_pattern_ok("run.*"));
    CHECK(!webhook_pattern_ok(""));
}

TEST(url_check)
{
    char *why = NULL;
    CHECK_EQ_INT(webhook_url_check("https://example.com/hook?x=1", &why), 0);
    CHECK_EQ_INT(webhook_url_check("http://127.0.0.1:8080/", &why), 0);
    CHECK_EQ_INT(webhook_url_check("http://[::1]:9/x", &why), 0);
    const char *bad[] = {"ftp://example.com/", "file:///etc/passwd", "example.com/x", "http://",
                         "", "gopher://x", "javascript:alert(1)"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        why = NULL;
        CHECK_EQ_INT(webhook_url_check(bad[i], &why), -EINVAL);
        CHECK(why != NULL);
        free(why);
    }
    char *longurl = xmalloc(3000);
    memset(longurl, 'a', 2999);
    memcpy(longurl, "http://x/", 9);
    longurl[2999] = 0;
    CHECK_EQ_INT(webhook_url_check(longurl, &why), -EINVAL);
    free(why);
    free(longurl);
}

TEST(delivery_doc)
{
    json_t *d = webhook_delivery_doc("p", "whk_1", "http://x/", "evt_1", "task.created",
                                     "{\"a\":1}");
    CHECK_EQ_STR(json_string_value(json_object_get(d, "status")), "pending");
    CHECK(!strncmp(json_string_value(json_object_get(d, "id")), "dlv_", 4));
    json_t *pub = webhook_delivery_public(d);
    CHECK(json_object_get(pub, "body") == NULL);
    CHECK(json_object_get(pub, "created_ms") == NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(pub, "payload"), "a")), 1);
    json_decref(pub);
    json_decref(d);
}

static json_t *task(const char *runtime, const char *code, int timeout, int mem, bool net)
{
    json_t *t = json_pack("{s:{s:i, s:i, s:b}}", "settings", "timeout_ms", timeout,
                          "memory_limit_mb", mem, "network", net);
    if (runtime)
        json_object_set_new(t, "runtime_id", json_string(runtime));
    if (code)
        json_object_set_new(t, "code", json_string(code));
    return t;
}

TEST(policy_parse_and_check)
{
    json_t *p = NULL;
    char *param = NULL, *msg = NULL;
    json_t *body = json_pack("{s:[s], s:i, s:i, s:i, s:b}", "allowed_runtimes", "python",
                             "max_timeout_ms", 60000, "max_memory_mb", 512, "max_code_bytes", 10,
                             "network_allowed", 0);
    CHECK_EQ_INT(policy_parse(body, 3600000, 1 << 20, &p, &param, &msg), 0);
    json_decref(body);
    char *rule = NULL;
    json_t *t = task("python", "print(1)", 1000, 256, false);
    CHECK_EQ_INT(policy_check_run(p, t, 30000, &rule), 0);
    CHECK(rule == NULL);
    json_decref(t);

    t = task("sh", "true", 1000, 256, false);
    CHECK_EQ_INT(policy_check_run(p, t, 30000, &rule), -EPERM);
    CHECK(rule && !strncmp(rule, "allowed_runtimes:", 17));
    free(rule);
    json_decref(t);

    t = task(NULL, "true", 1000, 256, false);   /* no runtime_id: the default (sh) */
    CHECK_EQ_INT(policy_check_run(p, t, 30000, &rule), -EPERM);
    free(rule);
    json_decref(t);

    t = task("python", "x", 120000, 256, false);
    CHECK_EQ_INT(policy_check_run(p, t, 30000, &rule), -EPERM);
    CHECK(rule && !strncmp(rule, "max_timeout_ms:", 15));
    free(rule);
    json_decref(t);

    t = task("python", "x", 1000, 1024, false);
    CHECK_EQ_INT(policy_check_run(p, t, 30000, &rule), -EPERM);
    CHECK(rule && !strncmp(rule, "max_memory_mb:", 14));
    free(rule);
    json_decref(t);

    t = task("python", "print('a long program')", 1000, 256, false);
    CHECK_EQ_INT(policy_check_run(p, t, 30000, &rule), -EPERM);
    CHECK(rule && !strncmp(rule, "max_code_bytes:", 15));
    free(rule);
    json_decref(t);

    t = task("python", "x", 1000, 256, true);
    CHECK_EQ_INT(policy_check_run(p, t, 30000, &rule), -EPERM);
    CHECK(rule && !strncmp(rule, "network_allowed:", 16));
    free(rule);
    json_decref(t);

    /* limits left at their defaults are capped, not refused; a value set
     * over the maximum is refused even when it is the other one's default */
    json_t *p2 = json_pack("{s:i, s:i}", "max_timeout_ms", 5000, "max_memory_mb", 128);
    t = task("python", "x", 30000, 256, false);
    CHECK_EQ_INT(policy_check_run(p2, t, 30000, &rule), 0);
    json_t *caps = policy_caps(p2, t, 30000);
    CHECK(caps && json_integer_value(json_object_get(caps, "timeout_ms")) == 5000 &&
          json_integer_value(json_object_get(caps, "memory_limit_mb")) == 128);
    json_decref(caps);
    json_decref(t);
    t = task("python", "x", 30000, 256, false);
    CHECK_EQ_INT(policy_check_run(p2, t, 60000, &rule), -EPERM);   /* 30 s is not the default */
    CHECK(rule && !strncmp(rule, "max_timeout_ms:", 15));
    free(rule);
    caps = policy_caps(p2, t, 60000);
    CHECK(caps && !json_object_get(caps, "timeout_ms") && json_object_get(caps, "memory_limit_mb"));
    json_decref(caps);
    json_decref(t);
    t = task("python", "x", 1000, 64, false);   /* under both maxima: nothing capped */
    CHECK(policy_caps(p2, t, 30000) == NULL);
    json_decref(t);
    json_decref(p2);

    /* an agent task (no code, no runtime) is not judged by runtime */
    t = task(NULL, NULL, 1000, 256, false);
    CHECK_EQ_INT(policy_check_run(p, t, 30000, &rule), 0);
    json_decref(t);
    CHECK_EQ_INT(policy_check_run(NULL, t = task("sh", "x", 1, 1, true), 30000, &rule), 0);
    json_decref(t);
    json_decref(p);

    /* errors name the field */
    const char *bad[][2] = {{"{\"allowed_runtimes\": [\"cobol\"]}", "allowed_runtimes"},
                            {"{\"max_timeout_ms\": 0}", "max_timeout_ms"},
                            {"{\"max_timeout_ms\": 99999999999}", "max_timeout_ms"},
                            {"{\"require_approval\": 1}", "require_approval"},
                            {"{\"relay_webhook_url\": \"ftp://x\"}", "relay_webhook_url"},
                            {"{\"other\": true}", "other"}};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        json_t *b = json_loads(bad[i][0], 0, NULL);
        CHECK_EQ_INT(policy_parse(b, 3600000, 1 << 20, &p, &param, &msg), -EINVAL);
        CHECK_EQ_STR(param, bad[i][1]);
        CHECK(p == NULL && msg != NULL);
        free(param);
        free(msg);
        json_decref(b);
    }
    /* defaults */
    json_t *empty = json_object();
    CHECK_EQ_INT(policy_parse(empty, 3600000, 1 << 20, &p, &param, &msg), 0);
    CHECK(json_is_true(json_object_get(p, "network_allowed")));
    CHECK(!policy_requires_approval(p) && !policy_outbound_allow_private(p));
    CHECK(policy_relay_url(p) == NULL);
    json_decref(p);
    json_decref(empty);
}

TEST(secret_names)
{
    CHECK(secrets_name_ok("API_KEY"));
    CHECK(secrets_name_ok("_X1"));
    CHECK(secrets_name_ok("A"));
    char n64[65], n65[66];
    memset(n64, 'A', 64);
    n64[64] = 0;
    memset(n65, 'A', 65);
    n65[65] = 0;
    CHECK(secrets_name_ok(n64));
    CHECK(!secrets_name_ok(n65));
    CHECK(!secrets_name_ok(""));
    CHECK(!secrets_name_ok("1A"));
    CHECK(!secrets_name_ok("api_key"));
    CHECK(!secrets_name_ok("A-B"));
}

TEST(secret_key_file_and_sealing)
{
    char dir[] = "/tmp/quern-test-secrets-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    unsigned char k1[32], k2[32];
    char *path = xasprintf("%s/secret.key", dir);
    CHECK_EQ_INT(secrets_key(path, k1), 0);
    CHECK_EQ_INT(secrets_key(path, k2), 0);
    CHECK(!memcmp(k1, k2, 32));    /* made once, then read */
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    CHECK_EQ_INT(st.st_size, 32);

    char *sealed = secrets_seal_str(k1, "p4ss word", 9);
    CHECK(sealed && !strstr(sealed, "p4ss"));
    char *out = NULL;
    size_t n = 0;
    CHECK_EQ_INT(secrets_open_str(k1, sealed, &out, &n), 0);
    CHECK_EQ_STR(out, "p4ss word");
    CHECK_EQ_INT(n, 9);
    free(out);
    k2[0] ^= 1;
    CHECK_EQ_INT(secrets_open_str(k2, sealed, &out, &n), -EINVAL);
    CHECK(out == NULL);
    CHECK_EQ_INT(secrets_open_str(k1, "not base64!", &out, &n), -EINVAL);
    free(sealed);

    /* a truncated key file is refused, never padded */
    FILE *f = fopen(path, "w");
    fputs("short", f);
    fclose(f);
    CHECK(secrets_key(path, k2) < 0);
    unlink(path);
    rmdir(dir);
    free(path);
}
