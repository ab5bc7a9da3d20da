/* The on-disk kernel cache (src/cache.c): round trip, and that a truncated, corrupted, foreign or colliding
 * entry is a miss rather than trusted; then, end to end on each backend, that a context whose cache files
 * were all damaged rebuilds its kernels and computes the same bits. */
#include <dirent.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "harness.h"
#include "siphash.h"

static char dir[256];

/* A fresh, empty cache directory for this case, set as FLASHATTN_CACHE_DIR. */
static void fresh_dir(const char *name) {
  snprintf(dir, sizeof dir, "%s/fa-cache-test-%ld-%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid(), name);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
  setenv("FLASHATTN_CACHE_DIR", dir, 1);
}

static void remove_dir(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* The path of the entry file for key (the same name src/cache.c gives it). */
static void entry_path(const char *key, char *out, size_t n) {
  snprintf(out, n, "%s/%016llx.bin", dir, (unsigned long long)fa_hash64(key, strlen(key), FA_HASH_SEED));
}

/* Apply f to every entry file of the directory; returns how many there were. */
static int for_each_entry(void (*f)(const char *path)) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strstr(e->d_name, ".bin")) continue;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (f) f(path);
    n++;
  }
  closedir(d);
  return n;
}

static void truncate_half(const char *path) {
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq(truncate(path, st.st_size / 2), 0);
}

static void flip_last_byte(const char *path) {
  FILE *f = fopen(path, "r+b");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fseek(f, -1, SEEK_END), 0);
  int c = fgetc(f);
  ck_assert_int_eq(fseek(f, -1, SEEK_END), 0);
  fputc(c ^ 0x5a, f);
  fclose(f);
}

static int loads(const char *key, const char *want, size_t want_len) {
  size_t n = 0;
  char *got = fa_cache_load(key, &n);
  int ok = got && n == want_len && memcmp(got, want, n) == 0;
  free(got);
  return got ? (ok ? 1 : -1) : 0;
}

START_TEST(t_round_trip) {
  th_case_begin("cache: store then load returns the payload; other keys miss");
  fresh_dir("rt");
  const char payload[] = "compiled kernel bytes \x01\x02\x00\x03";
  ck_assert_int_eq(fa_cache_store("key one", payload, sizeof payload), 0);
  ck_assert_int_eq(loads("key one", payload, sizeof payload), 1);
  ck_assert_int_eq(loads("key two", payload, sizeof payload), 0);
  /* Overwriting an entry replaces it whole. */
  ck_assert_int_eq(fa_cache_store("key one", "v2", 2), 0);
  ck_assert_int_eq(loads("key one", "v2", 2), 1);
  remove_dir();
  th_finish_case();
}
END_TEST

START_TEST(t_damaged_entries_miss) {
  th_case_begin("cache: truncated, corrupted, empty and colliding entries are misses");
  fresh_dir("damage");
  char payload[4096];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (char)(i * 7);
  char path[600];
  entry_path("k", path, sizeof path);

  ck_assert_int_eq(fa_cache_store("k", payload, sizeof payload), 0);
  truncate_half(path);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);

  ck_assert_int_eq(fa_cache_store("k", payload, sizeof payload), 0);
  flip_last_byte(path); /* the payload's checksum no longer matches */
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);

  ck_assert_int_eq(fa_cache_store("k", payload, sizeof payload), 0);
  ck_assert_int_eq(truncate(path, 0), 0);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);

  /* A file under k's name that holds another key's entry (a hash collision) is not k's. */
  char other[600];
  ck_assert_int_eq(fa_cache_store("another key", payload, sizeof payload), 0);
  entry_path("another key", other, sizeof other);
  ck_assert_int_eq(rename(other, path), 0);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);

  /* Extra bytes after a valid entry: not trusted either. */
  ck_assert_int_eq(fa_cache_store("k", payload, sizeof payload), 0);
  FILE *f = fopen(path, "ab");
  ck_assert_ptr_nonnull(f);
  fputs("trailing", f);
  fclose(f);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);
  remove_dir();
  th_finish_case();
}
END_TEST

START_TEST(t_off_and_unwritable) {
  th_case_begin("cache: FLASHATTN_CACHE_DIR=off stores nothing; an unwritable directory fails softly");
  setenv("FLASHATTN_CACHE_DIR", "off", 1);
  ck_assert_int_eq(fa_cache_store("k", "x", 1), -1);
  size_t n;
  ck_assert_ptr_null(fa_cache_load("k", &n));
  setenv("FLASHATTN_CACHE_DIR", "/proc/flashattn-cannot-exist/cache", 1);
  ck_assert_int_eq(fa_cache_store("k", "x", 1), -1);
  ck_assert_ptr_null(fa_cache_load("k", &n));
  th_finish_case();
}
END_TEST

/* The reference vector of the SipHash paper (appendix A): key 00..0f, message 00..0e. */
START_TEST(t_siphash_vector) {
  th_case_begin("cache: SipHash-2-4 matches the paper's test vector");
  unsigned char key[16], msg[15];
  for (int i = 0; i < 16; i++) key[i] = (unsigned char)i;
  for (int i = 0; i < 15; i++) msg[i] = (unsigned char)i;
  ck_assert_uint_eq(fa_siphash(key, msg, 15), 0xa129ca6149be45e5ull);
  ck_assert_uint_eq(fa_siphash(key, msg, 0), 0x726fdb47dd0e0e31ull);
  th_finish_case();
}
END_TEST

/* Rewrite an entry the way a forger without the secret can: the payload cut in half, the length field made
 * to match, the checksum field recomputed with FNV-1a (the integrity check before issue 14; PoCL then
 * crashed inside clCreateProgramWithBinary). Header: magic, key length, payload length, tag. */
static void forge_truncated(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  unsigned char head[32];
  ck_assert_int_eq(fread(head, 1, 32, f), 32);
  uint64_t key_len, len;
  memcpy(&key_len, head + 8, 8), memcpy(&len, head + 16, 8);
  char *rest = malloc(key_len + len);
  ck_assert_ptr_nonnull(rest);
  ck_assert_int_eq(fread(rest, 1, key_len + len, f), key_len + len);
  fclose(f);
  len /= 2;
  uint64_t hash = fa_hash64(rest + key_len, len, FA_HASH_SEED);
  memcpy(head + 16, &len, 8), memcpy(head + 24, &hash, 8);
  f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fwrite(head, 1, 32, f), 32);
  ck_assert_int_eq(fwrite(rest, 1, key_len + len, f), key_len + len);
  fclose(f);
  free(rest);
}

START_TEST(t_forged_entry_misses) {
  th_case_begin("cache: an entry cut short with its length and checksum made to match is a miss");
  fresh_dir("forged");
  char payload[4096];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (char)(i * 13);
  char path[600];
  entry_path("k", path, sizeof path);
  ck_assert_int_eq(fa_cache_store("k", payload, sizeof payload), 0);
  forge_truncated(path);
  ck_assert_int_eq(loads("k", payload, sizeof payload / 2), 0);
  /* An intact entry moved under another key's name, with that key written in, is no good either. */
  ck_assert_int_eq(fa_cache_store("j", payload, sizeof payload), 0);
  char other[600];
  entry_path("j", other, sizeof other);
  FILE *f = fopen(other, "r+b");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fseek(f, 32, SEEK_SET), 0);
  fputc('k', f);
  fclose(f);
  ck_assert_int_eq(rename(other, path), 0);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);
  remove_dir();
  th_finish_case();
}
END_TEST

/* A FIFO under an entry's name made the first load block forever in fopen; a link or a directory there must
 * not be followed or read either. SIGALRM ends the process (a failure) if a load blocks. */
START_TEST(t_special_files_miss) {
  th_case_begin("cache: a FIFO, a symbolic link or a directory under an entry's name is a miss, at once");
  fresh_dir("special");
  const char payload[] = "kernel";
  char path[600], real[700];
  entry_path("k", path, sizeof path);
  ck_assert_int_eq(fa_cache_store("k", payload, sizeof payload), 0);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 1);
  snprintf(real, sizeof real, "%s.real", path);
  ck_assert_int_eq(rename(path, real), 0);
  ck_assert_int_eq(symlink(real, path), 0);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  alarm(30);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);
  alarm(0);
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  ck_assert_int_eq(loads("k", payload, sizeof payload), 0);
  remove_dir();
  th_finish_case();
}
END_TEST

/* One small forward pass on a new context of backend bi; its output bytes in *out (malloc'd). */
static void forward_once(int bi, void **out, size_t *bytes) {
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = th_backend_kind(bi);
  fa_context *ctx;
  ck_assert_msg(fa_context_create(&opt, &ctx) == FA_SUCCESS, "%s", fa_last_create_error());
  const int64_t B = 1, S = 70, H = 2, D = 32;
  size_t n = (size_t)(B * S * H * D);
  *bytes = n * sizeof(float);
  float *host = malloc(*bytes);
  fa_buffer *buf[4];
  fa_tensor t[4];
  for (int i = 0; i < 4; i++) {
    for (size_t e = 0; e < n; e++) host[e] = (float)(((e * 2654435761u + (size_t)i * 97) % 1000) / 500.0 - 1.0);
    ck_assert_int_eq(fa_buffer_create(ctx, *bytes, &buf[i]), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_write(ctx, buf[i], 0, host, *bytes), FA_SUCCESS);
    fa_tensor_packed(&t[i], buf[i], 0, FA_F32, B, S, H, D);
  }
  fa_attention_desc desc = {0};
  desc.causal = 1;
  ck_assert_msg(fa_forward(ctx, &desc, &t[0], &t[1], &t[2], &t[3], NULL) == FA_SUCCESS, "%s",
                fa_context_last_error(ctx));
  ck_assert_int_eq(fa_buffer_read(ctx, buf[3], 0, host, *bytes), FA_SUCCESS);
  for (int i = 0; i < 4; i++) fa_buffer_destroy(buf[i]);
  fa_context_destroy(ctx);
  *out = host;
}

/* FLASHATTN_CACHE_MAX_BYTES: stores evict the oldest entries (write time) down to the cap, keep the newest,
 * and leave files that are not entries alone; 0 lifts the cap. */
static void store_aged(const char *key, const char *payload, size_t len, int age_s) {
  ck_assert_int_eq(fa_cache_store(key, payload, len), 0);
  char path[600];
  entry_path(key, path, sizeof path);
  struct timespec t[2] = {{time(NULL) - age_s, 0}, {time(NULL) - age_s, 0}};
  ck_assert_int_eq(utimensat(AT_FDCWD, path, t, 0), 0);
}

START_TEST(t_size_cap) {
  th_case_begin("cache: FLASHATTN_CACHE_MAX_BYTES evicts the oldest entries");
  fresh_dir("cap");
  char payload[1000], key[32];
  memset(payload, 'x', sizeof payload);
  /* an entry is 32 header bytes + key + payload: about 1040 bytes; a 3500-byte cap holds three */
  setenv("FLASHATTN_CACHE_MAX_BYTES", "3500", 1);
  store_aged("first", payload, sizeof payload, 1000);
  char other[600];
  snprintf(other, sizeof other, "%s/notes.txt", dir);
  FILE *f = fopen(other, "w");
  ck_assert_ptr_nonnull(f);
  for (int i = 0; i < 5000; i++) fputc('n', f);
  fclose(f);
  for (int i = 0; i < 8; i++) {
    snprintf(key, sizeof key, "entry %d", i);
    store_aged(key, payload, sizeof payload, 100 - i); /* later keys are newer */
  }
  ck_assert_int_eq(loads("first", payload, sizeof payload), 0);
  for (int i = 0; i < 8; i++) {
    snprintf(key, sizeof key, "entry %d", i);
    ck_assert_msg(loads(key, payload, sizeof payload) == (i >= 5), "%s: %s", key, i >= 5 ? "evicted" : "kept");
  }
  ck_assert_int_eq(access(other, F_OK), 0);

  /* 0: no cap; the K suffix */
  setenv("FLASHATTN_CACHE_MAX_BYTES", "0", 1);
  for (int i = 0; i < 8; i++) {
    snprintf(key, sizeof key, "entry %d", i);
    store_aged(key, payload, sizeof payload, 50 - i);
  }
  for (int i = 0; i < 8; i++) {
    snprintf(key, sizeof key, "entry %d", i);
    ck_assert_msg(loads(key, payload, sizeof payload) == 1, "%s evicted without a cap", key);
  }
  setenv("FLASHATTN_CACHE_MAX_BYTES", "2K", 1);
  store_aged("last", payload, sizeof payload, 0);
  ck_assert_int_eq(loads("last", payload, sizeof payload), 1);
  ck_assert_int_eq(loads("entry 7", payload, sizeof payload), 0); /* 2048 bytes hold "last" alone */
  unsetenv("FLASHATTN_CACHE_MAX_BYTES");
  remove_dir();
  th_finish_case();
}
END_TEST

START_TEST(t_end_to_end) {
  th_case_begin("cache: kernels are stored; damaged entries are rebuilt and give the same result");
  ck_assert_int_gt(th_backend_count(), 0);
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fresh_dir(th_backend_label(bi));
    void *first, *again;
    size_t bytes;
    forward_once(bi, &first, &bytes);
    ck_assert_msg(for_each_entry(truncate_half) > 0, "%s: no kernel was stored in %s", th_backend_label(bi), dir);
    forward_once(bi, &again, &bytes);
    ck_assert_msg(memcmp(first, again, bytes) == 0, "%s: output differs after truncated entries", th_backend_label(bi));
    free(again);
    ck_assert_int_gt(for_each_entry(flip_last_byte), 0); /* the rebuilt entries, corrupted now */
    forward_once(bi, &again, &bytes);
    ck_assert_msg(memcmp(first, again, bytes) == 0, "%s: output differs after corrupted entries", th_backend_label(bi));
    free(again);
    ck_assert_int_gt(for_each_entry(forge_truncated), 0);
    forward_once(bi, &again, &bytes);
    ck_assert_msg(memcmp(first, again, bytes) == 0, "%s: output differs after forged entries", th_backend_label(bi));
    free(again);
    free(first);
    remove_dir();
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* What fa_device_info.kernel_cache says on a new context of backend bi, and that the context computes. */
static void cache_state(int bi, char *out, size_t n) {
  void *o;
  size_t bytes;
  forward_once(bi, &o, &bytes);
  free(o);
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = th_backend_kind(bi);
  fa_context *ctx;
  ck_assert_int_eq(fa_context_create(&opt, &ctx), FA_SUCCESS);
  fa_device_info info;
  fa_device_info_init(&info);
  ck_assert_int_eq(fa_context_info(ctx, &info), FA_SUCCESS);
  snprintf(out, n, "%s", info.kernel_cache);
  fa_context_destroy(ctx);
}

/* A cache that cannot be used used to turn itself off silently: the context's information says so now. */
START_TEST(t_unusable_reported) {
  th_case_begin("cache: a directory that is a file, is shared-writable or is off is reported in kernel_cache");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    char state[512];
    fresh_dir("state");
    cache_state(bi, state, sizeof state);
    ck_assert_msg(strcmp(state, dir) == 0, "usable cache: \"%s\", want \"%s\"", state, dir);
    remove_dir();
    FILE *f = fopen(dir, "w"); /* a file where the directory should be */
    ck_assert_ptr_nonnull(f);
    fclose(f);
    cache_state(bi, state, sizeof state);
    ck_assert_msg(strncmp(state, "unusable: ", 10) == 0 && strstr(state, dir) && strstr(state, "not a directory"),
                  "a file as the cache: \"%s\"", state);
    ck_assert_int_eq(unlink(dir), 0);
    ck_assert_int_eq(mkdir(dir, 0777), 0);
    ck_assert_int_eq(chmod(dir, 0777), 0);
    cache_state(bi, state, sizeof state);
    ck_assert_msg(strncmp(state, "unusable: ", 10) == 0 && strstr(state, "writable by other users"),
                  "a world-writable cache: \"%s\"", state);
    ck_assert_int_eq(for_each_entry(NULL), 0);
    remove_dir();
    setenv("FLASHATTN_CACHE_DIR", "off", 1);
    cache_state(bi, state, sizeof state);
    ck_assert_msg(strncmp(state, "off", 3) == 0, "FLASHATTN_CACHE_DIR=off: \"%s\"", state);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

int main(void) {
  Suite *s = suite_create("cache");
  TCase *tc = tcase_create("cache");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_test(tc, t_round_trip);
  tcase_add_test(tc, t_damaged_entries_miss);
  tcase_add_test(tc, t_off_and_unwritable);
  tcase_add_test(tc, t_siphash_vector);
  tcase_add_test(tc, t_forged_entry_misses);
  tcase_add_test(tc, t_special_files_miss);
  tcase_add_test(tc, t_unusable_reported);
  tcase_add_test(tc, t_size_cap);
  tcase_add_test(tc, t_end_to_end);
  suite_add_tcase(s, tc);
  /* The end-to-end case needs a backend: probe them (a machine with none skips the suite). */
  return th_main(s, 1);
}
