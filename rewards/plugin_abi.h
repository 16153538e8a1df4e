/* The C ABI of spargo reward plugins, version 1. A plugin is a shared library lib<name>.so in a configured folder
 * that exports the five functions below with C linkage. spargo checks spargo_reward_abi_version() first and
 * refuses a library built against another version. No C++ type and no exception crosses this boundary.
 *
 * Lifetime: spargo_reward_create(config) once per pipeline component (config is the component's `config`
 * string, free-form: JSON, key=value, ...); spargo_reward_score() for each group, never concurrently on one
 * instance (spargo serialises the calls); spargo_reward_destroy() at the end.
 * Scoring: fill out[i] for every completion i (out has num_completions entries, zeroed); return 0. A non-zero
 * return marks every sample of the group as an error (detail from out[0].detail), never as a score of 0. */
#ifndef SPARGO_REWARDS_PLUGIN_ABI_H_
#define SPARGO_REWARDS_PLUGIN_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPARGO_REWARD_ABI_VERSION 1u

/* Sample statuses. */
#define SPARGO_STATUS_OK 0
#define SPARGO_STATUS_NOT_APPLICABLE 1
#define SPARGO_STATUS_PARSE_FAILURE 2
#define SPARGO_STATUS_TIMEOUT 3
#define SPARGO_STATUS_ERROR 4

typedef struct {
  const char* text;    /* UTF-8, NUL-terminated */
  int32_t num_tokens;  /* as the sampler reports it; -1 when unknown */
  int32_t truncated;   /* 1 when generation stopped at the token limit */
} spargo_completion;

typedef struct {
  int32_t domain; /* spargo.config.Domain: 1 reasoning, 2 agent, 3 alignment */
  const char* prompt;
  const char* reference_answer;
  const char* rubric;
  const char* language;
  const char* tools_json;
  const spargo_completion* completions;
  int32_t num_completions;
} spargo_group;

typedef struct {
  double score;
  int32_t status;   /* SPARGO_STATUS_* */
  char detail[256]; /* NUL-terminated, optional */
} spargo_sample_score;

/* The functions a plugin exports. */
typedef uint32_t (*spargo_reward_abi_version_fn)(void);
typedef const char* (*spargo_reward_name_fn)(void);
typedef void* (*spargo_reward_create_fn)(const char* config, char* error, size_t error_size);
typedef int32_t (*spargo_reward_score_fn)(void* instance, const spargo_group* group, spargo_sample_score* out);
typedef void (*spargo_reward_destroy_fn)(void* instance);

#ifdef __cplusplus
}
#endif

#endif /* SPARGO_REWARDS_PLUGIN_ABI_H_ */
