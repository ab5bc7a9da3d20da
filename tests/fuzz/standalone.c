/* A driver for fuzz_api.c where libFuzzer is absent (gcc builds), and for replaying inputs:
 *   fuzz_api_standalone FILE|DIR...        run each file (a corpus, a crash) once
 *   fuzz_api_standalone -seconds=N [-seed=S]  random inputs (1 to 512 bytes; half of them mutations of an
 *                                          earlier input) until N seconds have passed
 * It has no coverage feedback: it finds less than libFuzzer, but keeps the same checks. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng;

static uint64_t next(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

static void run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return;
  static uint8_t buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  LLVMFuzzerTestOneInput(buf, n);
}

static void run_path(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return;
  if (!S_ISDIR(st.st_mode)) {
    run_file(path);
    return;
  }
  DIR *d = opendir(path);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    run_file(p);
  }
  if (d) closedir(d);
}

int main(int argc, char **argv) {
  double seconds = -1;
  rng = (uint64_t)time(NULL) | 1;
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "-seconds=", 9) == 0) seconds = atof(argv[i] + 9);
    else if (strncmp(argv[i], "-seed=", 6) == 0) rng = strtoull(argv[i] + 6, NULL, 10) | 1;
    else run_path(argv[i]);
  }
  if (seconds < 0) return 0;
  fprintf(stderr, "fuzz_api_standalone: seed %llu\n", (unsigned long long)rng);
  static uint8_t buf[512], last[512];
  size_t last_n = 0;
  const time_t end = time(NULL) + (time_t)seconds;
  while (time(NULL) < end) {
    size_t n;
    if (last_n && (next() & 1)) { /* mutate the previous input a little */
      n = last_n;
      memcpy(buf, last, n);
      for (int k = 1 + (int)(next() % 4); k > 0; k--) buf[next() % n] = (uint8_t)next();
    } else {
      n = 1 + next() % sizeof buf;
      for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)next();
    }
    memcpy(last, buf, n);
    last_n = n;
    LLVMFuzzerTestOneInput(buf, n);
  }
  return 0;
}
