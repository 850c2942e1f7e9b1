/*
 * server/arena.c — per-request memory pool.
 *
 * Why: a request's strings (method, target, header names and values) and its response head
 * are many small allocations that all die together.  A bump allocator over one block that
 * lives inside the request object (h2o's h2o_mem_pool_t) makes them one pointer increment
 * each and frees them all at once; typical requests never call malloc.  Larger needs spill
 * into malloc'd blocks that reset() returns.
 */
#include <stdlib.h>

#include "server_internal.h"

#define SH_ARENA_ALIGN 16
#define SH_ARENA_BLOCK (8 * 1024)

void sh_arena_init(sh_arena *a, char *first, size_t cap) {
  a->first = first;
  a->first_cap = cap;
  a->cur = first;
  a->left = cap;
  a->blocks = NULL;
}

void *sh_arena_alloc(sh_arena *a, size_t n) {
  size_t need = (n + SH_ARENA_ALIGN - 1) & ~(size_t)(SH_ARENA_ALIGN - 1);
  if (need < n) return NULL; /* overflow */
  if (need > a->left) {
    /* Start a new block big enough for this allocation; the rest of the old block is lost
     * (bounded waste: the block is small and the request short-lived). */
    size_t cap = need > SH_ARENA_BLOCK / 2 ? need : SH_ARENA_BLOCK;
    size_t hdr = (sizeof(sh_arena_block) + SH_ARENA_ALIGN - 1) & ~(size_t)(SH_ARENA_ALIGN - 1);
    if (cap > SIZE_MAX - hdr) return NULL;
    sh_arena_block *b = malloc(hdr + cap);
    if (!b) return NULL;
    b->cap = cap;
    b->next = a->blocks;
    a->blocks = b;
    a->cur = (char *)b + hdr;
    a->left = cap;
  }
  void *p = a->cur;
  a->cur += need;
  a->left -= need;
  return p;
}

void sh_arena_reset(sh_arena *a) {
  sh_arena_block *b = a->blocks;
  while (b) {
    sh_arena_block *next = b->next;
    free(b);
    b = next;
  }
  a->blocks = NULL;
  a->cur = a->first;
  a->left = a->first_cap;
}
