/* Plugins that are wrong on purpose, for the loader's tests. One source, three libraries:
 *   MISSING_SCORE  exports everything but spargo_reward_score
 *   FUTURE_ABI     reports ABI version 2
 *   FAILING        scores by failing (non-zero return with a detail)                                   */
#include <stdio.h>
#include <stdlib.h>

#include "rewards/plugin_abi.h"

uint32_t spargo_reward_abi_version(void) {
#ifdef FUTURE_ABI
  return SPARGO_REWARD_ABI_VERSION + 1;
#else
  return SPARGO_REWARD_ABI_VERSION;
#endif
}

const char* spargo_reward_name(void) { return "broken"; }

void* spargo_reward_create(const char* config, char* error, size_t error_size) {
  (void)config;
  (void)error;
  (void)error_size;
  return malloc(1);
}

#ifndef MISSING_SCORE
int32_t spargo_reward_score(void* instance, const spargo_group* group, spargo_sample_score* out) {
  (void)instance;
  (void)group;
#ifdef FAILING
  snprintf(out[0].detail, sizeof(out[0].detail), "backend unreachable");
  return 7;
#else
  (void)out;
  return 0;
#endif
}
#endif

void spargo_reward_destroy(void* instance) { free(instance); }
