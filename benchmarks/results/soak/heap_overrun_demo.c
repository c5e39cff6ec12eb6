// A 16-byte overrun past a 40 MB block, then more allocations: silent when glibc serves the block
// with mmap (default: above the 128 KiB+ mmap threshold), fatal when it comes from the heap (keep).
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
  if (argc > 1) mallopt(M_MMAP_THRESHOLD, 2147483647), mallopt(M_TRIM_THRESHOLD, 2147483647);
  size_t n = (40 << 20) + 24;
  char *a = malloc(n);
  char *b = malloc(n);          // its neighbour on the heap under keep
  memset(a + n, 0x41, 16);      // the overrun: past the end of a, into b's chunk header
  free(b);
  free(a);
  void *c = malloc(1 << 20);
  printf("survived\n");
  return c == NULL;
}
