/* On-disk cache of compiled kernels. Entry layout (little-endian host order, it never leaves the host):
 *   "FACACHE1", u64 key length, u64 payload length, u64 FNV-1a of the payload, key, payload.
 * The file name is the key's hash; the stored key is compared in full, so a collision is a miss. */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char magic[8] = {'F', 'A', 'C', 'A', 'C', 'H', 'E', '1'};

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

static int entry_path(const char *key, char *out, size_t n) {
  char dir[3072];
  if (!cache_dir(dir, sizeof dir)) return 0;
  unsigned long long h = (unsigned long long)fa_hash64(key, strlen(key), FA_HASH_SEED);
  return snprintf(out, n, "%s/%016llx.bin", dir, h) < (int)n;
}

void *fa_cache_load(const char *key, size_t *size) {
  char path[4096];
  if (!entry_path(key, path, sizeof path)) return NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char head[8];
  uint64_t key_len, len, hash;
  void *payload = NULL;
  char *stored_key = NULL;
  size_t want_key = strlen(key);
  if (fread(head, 1, 8, f) != 8 || memcmp(head, magic, 8) != 0) goto miss;
  if (fread(&key_len, 8, 1, f) != 1 || fread(&len, 8, 1, f) != 1 || fread(&hash, 8, 1, f) != 1) goto miss;
  if (key_len != want_key || len == 0 || len > ((uint64_t)1 << 32)) goto miss;
  stored_key = malloc(want_key + 1);
  payload = malloc(len);
  if (!stored_key || !payload) goto miss;
  if (fread(stored_key, 1, want_key, f) != want_key || memcmp(stored_key, key, want_key) != 0) goto miss;
  if (fread(payload, 1, len, f) != len || fgetc(f) != EOF) goto miss;
  if (fa_hash64(payload, len, FA_HASH_SEED) != hash) goto miss;
  free(stored_key);
  fclose(f);
  *size = len;
  return payload;
miss:
  free(stored_key);
  free(payload);
  fclose(f);
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
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
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
  char dir[3072], path[4096], tmp[4200];
  if (!cache_dir(dir, sizeof dir) || !entry_path(key, path, sizeof path) || make_dirs(dir) != 0) return -1;
  static atomic_uint serial;
  /* pid and a per-process serial keep concurrent writers (processes or threads) off each other's files. */
  snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&serial, 1u));
  FILE *f = fopen(tmp, "wb");
  if (!f) return -1;
  uint64_t key_len = strlen(key), len = size, hash = fa_hash64(data, size, FA_HASH_SEED);
  int ok = fwrite(magic, 1, 8, f) == 8 && fwrite(&key_len, 8, 1, f) == 1 && fwrite(&len, 8, 1, f) == 1 &&
           fwrite(&hash, 8, 1, f) == 1 && fwrite(key, 1, key_len, f) == key_len &&
           fwrite(data, 1, size, f) == size;
  ok = (fclose(f) == 0) && ok;
  /* rename() is atomic: a reader sees the old entry, the new one, or none, never a partial file. */
  if (!ok || rename(tmp, path) != 0) {
    remove(tmp);
    return -1;
  }
  evict(dir, strrchr(path, '/') + 1);
  return 0;
}
