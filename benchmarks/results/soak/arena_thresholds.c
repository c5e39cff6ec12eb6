// Threads (non-main arenas) allocate blocks around and above HEAP_MAX_SIZE (64 MiB) with glibc's
// mmap and trim thresholds at their maximum (what CNF_JAX_HOST_MALLOC=keep sets; `keep` as argv[1]), free, repeat.
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static void *work(void *arg) {
  size_t sizes[] = {1 << 20, 20 << 20, 40 << 20, 70 << 20, 130 << 20, 3 << 10};
  unsigned seed = (unsigned)(size_t)arg;
  for (int i = 0; i < 200; i++) {
    void *p[4];
    for (int k = 0; k < 4; k++) {
      size_t n = sizes[rand_r(&seed) % 6] + rand_r(&seed) % 4096;
      p[k] = malloc(n);
      if (!p[k]) { fprintf(stderr, "malloc(%zu) failed\n", n); exit(2); }
      ((char *)p[k])[0] = k; ((char *)p[k])[n - 1] = k;
    }
    for (int k = 0; k < 4; k++) free(p[k]);
  }
  return NULL;
}
int main(int argc, char **argv) {
  if (argc > 1) printf("mallopt %d %d\n", mallopt(M_MMAP_THRESHOLD, 2147483647), mallopt(M_TRIM_THRESHOLD, 2147483647));
  pthread_t t[8];
  for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, work, (void *)i);
  for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  struct mallinfo2 mi = mallinfo2();
  printf("ok arena=%zu mmapped=%zu\n", mi.arena, mi.hblkhd);
  return 0;
}
