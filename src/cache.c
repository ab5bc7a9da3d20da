/* On-disk cache of compiled kernels. Entry layout (little-endian host order, it never leaves the host):
 *   "FACACHE2", u64 key length, u64 payload length, u64 tag, key, payload.
 * The file name is the key's hash; the stored key is compared in full, so a collision is a miss. The tag is
 * SipHash-2-4 of the payload under a key derived from the directory's secret (a 16-byte file only its owner
 * can read) and the entry's key: a cut or altered payload, or one moved under another key, cannot be given a
 * matching tag without the secret, and is a miss before any driver parses it. */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "siphash.h"

static const char magic[8] = {'F', 'A', 'C', 'A', 'C', 'H', 'E', '2'};
enum { HEADER_BYTES = 32, SECRET_BYTES = 16 };
#define MAX_PAYLOAD ((uint64_t)1 << 32)

uint64_t fa_hash64(const void *data, size_t n, uint64_t seed) {
  const unsigned char *p = data;
  uint64_t h = seed;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/* The cache directory, or 0 when caching is off or no directory can be named. */
static int cache_dir(char *out, size_t n) {
  const char *env = getenv("FLASHATTN_CACHE_DIR");
  if (env && strcmp(env, "off") == 0) return 0;
  if (env && *env) return snprintf(out, n, "%s", env) < (int)n;
  const char *xdg = getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return snprintf(out, n, "%s/flashattn", xdg) < (int)n;
  const char *home = getenv("HOME");
  if (home && *home) return snprintf(out, n, "%s/.cache/flashattn", home) < (int)n;
  return 0;
}

static int make_dirs(char *path) {
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    int r = mkdir(path, 0755);
    *p = '/';
    if (r != 0 && errno != EEXIST) return -1;
  }
  return (mkdir(path, 0755) == 0 || errno == EEXIST) ? 0 : -1;
}

/* Open a file of the cache for reading without following a link or blocking on a FIFO or device; only a
 * regular file owned by this user is kept. Returns the descriptor and its size, or -1. */
static int open_regular(const char *path, off_t *size) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    close(fd);
    return -1;
  }
  *size = st.st_size;
  return fd;
}

static int read_all(int fd, void *dst, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t r = read(fd, (char *)dst + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

static int write_all(int fd, const void *src, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t r = write(fd, (const char *)src + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

/* Why dir (made if missing) cannot hold a trusted cache, or NULL when it can: it must be a directory owned by
 * this user that nobody else may write (else another user could replace its secret or entries). */
static const char *dir_problem(char *dir) {
  if (make_dirs(dir) != 0) return "cannot be created";
  struct stat st;
  if (stat(dir, &st) != 0) return "cannot be read";
  if (!S_ISDIR(st.st_mode)) return "is not a directory";
  if (st.st_uid != geteuid()) return "belongs to another user";
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return "is writable by other users";
  if (access(dir, W_OK | X_OK) != 0) return "is not writable";
  return NULL;
}

/* The directory's secret: read it, or make it (owner-only, created exclusively) when absent. */
static int load_secret(const char *dir, unsigned char secret[SECRET_BYTES]) {
  char path[3200];
  snprintf(path, sizeof path, "%s/secret", dir);
  off_t size;
  int fd = open_regular(path, &size);
  if (fd >= 0) {
    struct stat st;
    int ok = size == SECRET_BYTES && fstat(fd, &st) == 0 && !(st.st_mode & 077) && read_all(fd, secret, SECRET_BYTES) == 0;
    close(fd);
    return ok ? 0 : -1;
  }
  if (getrandom(secret, SECRET_BYTES, 0) != SECRET_BYTES) return -1;
  char tmp[3300];
  static atomic_uint serial;
  snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&serial, 1u));
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  int ok = write_all(fd, secret, SECRET_BYTES) == 0;
  ok = close(fd) == 0 && ok;
  /* link() fails when another process made the secret first: then use that one. */
  ok = ok && link(tmp, path) == 0;
  unlink(tmp);
  if (ok) return 0;
  fd = open_regular(path, &size);
  if (fd < 0) return -1;
  ok = size == SECRET_BYTES && read_all(fd, secret, SECRET_BYTES) == 0;
  close(fd);
  return ok ? 0 : -1;
}

/* Everything an entry operation needs: its path and the tag key for `key`. 0 when the cache cannot be used. */
typedef struct entry {
  char dir[3072], path[3200];
  unsigned char tag_key[SECRET_BYTES];
} entry;

static int open_entry(const char *key, entry *e) {
  unsigned char secret[SECRET_BYTES];
  if (!cache_dir(e->dir, sizeof e->dir) || dir_problem(e->dir) || load_secret(e->dir, secret) != 0) return 0;
  const size_t n = strlen(key);
  /* Two halves of a per-key tag key, each SipHash of the key under the secret (one bit of the secret differs). */
  const uint64_t h0 = fa_siphash(secret, key, n);
  secret[0] ^= 1;
  const uint64_t h1 = fa_siphash(secret, key, n);
  memcpy(e->tag_key, &h0, 8);
  memcpy(e->tag_key + 8, &h1, 8);
  unsigned long long name = (unsigned long long)fa_hash64(key, n, FA_HASH_SEED);
  return snprintf(e->path, sizeof e->path, "%s/%016llx.bin", e->dir, name) < (int)sizeof e->path;
}

void *fa_cache_load(const char *key, size_t *size) {
  entry e;
  if (!open_entry(key, &e)) return NULL;
  off_t file_size;
  int fd = open_regular(e.path, &file_size);
  if (fd < 0) return NULL;
  unsigned char head[HEADER_BYTES];
  uint64_t key_len, len, tag;
  void *payload = NULL;
  char *stored_key = NULL;
  const size_t want_key = strlen(key);
  if (read_all(fd, head, sizeof head) != 0 || memcmp(head, magic, 8) != 0) goto miss;
  memcpy(&key_len, head + 8, 8), memcpy(&len, head + 16, 8), memcpy(&tag, head + 24, 8);
  if (key_len != want_key || len == 0 || len > MAX_PAYLOAD) goto miss;
  if ((uint64_t)file_size != HEADER_BYTES + key_len + len) goto miss;
  stored_key = malloc(want_key + 1);
  payload = malloc(len);
  if (!stored_key || !payload) goto miss;
  if (read_all(fd, stored_key, want_key) != 0 || memcmp(stored_key, key, want_key) != 0) goto miss;
  if (read_all(fd, payload, len) != 0) goto miss;
  if (fa_siphash(e.tag_key, payload, len) != tag) goto miss;
  free(stored_key);
  close(fd);
  *size = len;
  return payload;
miss:
  free(stored_key);
  free(payload);
  close(fd);
  return NULL;
}

/* FLASHATTN_CACHE_MAX_BYTES: a byte count, with an optional K, M or G (powers of 1024); 0 means no cap. */
static uint64_t cache_cap(void) {
  const char *env = getenv("FLASHATTN_CACHE_MAX_BYTES");
  if (!env || !*env) return FA_CACHE_DEFAULT_MAX_BYTES;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(env, &end, 10);
  int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
  if (errno || end == env || (shift ? end[1] != '\0' : *end != '\0') || v > (UINT64_MAX >> shift))
    return FA_CACHE_DEFAULT_MAX_BYTES;
  return (uint64_t)v << shift;
}

typedef struct cache_file {
  struct timespec mtime;
  uint64_t bytes;
  char name[32];
} cache_file;

static int older_first(const void *a, const void *b) {
  const struct timespec *x = &((const cache_file *)a)->mtime, *y = &((const cache_file *)b)->mtime;
  if (x->tv_sec != y->tv_sec) return x->tv_sec < y->tv_sec ? -1 : 1;
  return (x->tv_nsec > y->tv_nsec) - (x->tv_nsec < y->tv_nsec);
}

/* Remove the oldest entries (by the time they were written) until the entries of dir fit the cap, never
 * the one just written (`keep`, a file name). Only files named like entries count; temporary files, other
 * processes' too, are left alone. Best effort: an entry another process removed first is skipped. */
static void evict(const char *dir, const char *keep) {
  const uint64_t cap = cache_cap();
  DIR *d = cap ? opendir(dir) : NULL;
  if (!d) return;
  cache_file *files = NULL;
  size_t n = 0, room = 0;
  uint64_t total = 0;
  char path[4200];
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    size_t len = strlen(e->d_name);
    struct stat st;
    if (len != 20 || strcmp(e->d_name + 16, ".bin") != 0 || strspn(e->d_name, "0123456789abcdef") != 16) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (n == room) {
      cache_file *grown = realloc(files, (room = room ? 2 * room : 64) * sizeof *files);
      if (!grown) break;
      files = grown;
    }
    files[n].mtime = st.st_mtim;
    files[n].bytes = (uint64_t)st.st_size;
    memcpy(files[n].name, e->d_name, len + 1);
    total += files[n++].bytes;
  }
  closedir(d);
  qsort(files, n, sizeof *files, older_first);
  for (size_t i = 0; i < n && total > cap; i++) {
    if (strcmp(files[i].name, keep) == 0) continue;
    snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
    if (remove(path) == 0 || errno == ENOENT) total -= files[i].bytes;
  }
  free(files);
}

int fa_cache_store(const char *key, const void *data, size_t size) {
  entry e;
  if (size == 0 || size > MAX_PAYLOAD || !open_entry(key, &e)) return -1;
  char tmp[3300];
  static atomic_uint serial;
  /* pid and a per-process serial keep concurrent writers (processes or threads) off each other's files. */
  snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", e.path, (long)getpid(), atomic_fetch_add(&serial, 1u));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  unsigned char head[HEADER_BYTES];
  uint64_t key_len = strlen(key), len = size, tag = fa_siphash(e.tag_key, data, size);
  memcpy(head, magic, 8), memcpy(head + 8, &key_len, 8), memcpy(head + 16, &len, 8), memcpy(head + 24, &tag, 8);
  int ok = write_all(fd, head, sizeof head) == 0 && write_all(fd, key, key_len) == 0 && write_all(fd, data, size) == 0;
  ok = (close(fd) == 0) && ok;
  /* rename() is atomic: a reader sees the old entry, the new one, or none, never a partial file. */
  if (!ok || rename(tmp, e.path) != 0) {
    unlink(tmp);
    return -1;
  }
  evict(e.dir, strrchr(e.path, '/') + 1);
  return 0;
}

int fa_cache_describe(char *out, size_t n) {
  char dir[3072];
  if (!cache_dir(dir, sizeof dir)) {
    const char *env = getenv("FLASHATTN_CACHE_DIR");
    snprintf(out, n, env && strcmp(env, "off") == 0 ? "off (FLASHATTN_CACHE_DIR=off)"
                                                     : "off: no directory (set FLASHATTN_CACHE_DIR, XDG_CACHE_HOME or HOME)");
    return 0;
  }
  const char *why = dir_problem(dir);
  unsigned char secret[SECRET_BYTES];
  if (!why && load_secret(dir, secret) != 0) why = "has a secret file that is not this user's 16-byte, owner-only file";
  if (why) {
    snprintf(out, n, "unusable: %.400s %s; kernels are compiled on every new context", dir, why);
    return -1;
  }
  snprintf(out, n, "%.500s", dir);
  return 1;
}
