/* Example reward plugin (C, ABI version 1): scores `hit` when a completion contains the keyword given as the
 * component's config string ("keyword" or "keyword;hit;miss"), `miss` otherwise. Build it as a shared library
 * named lib<name>.so and point a pipeline component at its folder:
 *   components { name: "mentions_units" plugin { name: "keyword_reward" directory: "build/rewards/plugins"
 *                                                 config: "cm;1;0" } } */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rewards/plugin_abi.h"

typedef struct {
  char keyword[128];
  double hit, miss;
} keyword_reward;

uint32_t spargo_reward_abi_version(void) { return SPARGO_REWARD_ABI_VERSION; }

const char* spargo_reward_name(void) { return "keyword_reward"; }

void* spargo_reward_create(const char* config, char* error, size_t error_size) {
  keyword_reward* r = calloc(1, sizeof(keyword_reward));
  if (r == NULL) {
    snprintf(error, error_size, "out of memory");
    return NULL;
  }
  r->hit = 1.0;
  r->miss = 0.0;
  int n = sscanf(config, "%127[^;];%lf;%lf", r->keyword, &r->hit, &r->miss);
  if (n < 1 || r->keyword[0] == '\0') {
    snprintf(error, error_size, "config '%s': expected keyword[;hit;miss]", config);
    free(r);
    return NULL;
  }
  return r;
}

int32_t spargo_reward_score(void* instance, const spargo_group* group, spargo_sample_score* out) {
  const keyword_reward* r = instance;
  for (int32_t i = 0; i < group->num_completions; ++i) {
    const char* text = group->completions[i].text;
    out[i].score = (text != NULL && strstr(text, r->keyword) != NULL) ? r->hit : r->miss;
    out[i].status = SPARGO_STATUS_OK;
  }
  return 0;
}

void spargo_reward_destroy(void* instance) { free(instance); }
